"""The client under test for Autobahn's fuzzingserver: `rawws.net.client` echoing every case.

The suite's usual client loop: ask /getCaseCount, then for each case open
/runCase?case=N&agent=AGENT and send every message back unchanged (text as
text, binary as binary) until the suite closes the connection, then open
/updateReports?agent=AGENT so the suite writes its reports.

    python tools/autobahn/client_driver.py ws://127.0.0.1:PORT [--agent rawws]
    python tools/autobahn/client_driver.py wss://127.0.0.1:PORT --cafile ca.pem
"""
from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT))

from rawws.net.client import ClientConnection, connect  # noqa: E402
from rawws.errors import ConnectionClosed, HandshakeError  # noqa: E402
from rawws.net.tls import client_context  # noqa: E402

DEFAULT_AGENT = "rawws"
CONNECT_TIMEOUT = 10.0
# A case is over when the suite closes; this only bounds a case that hangs.
IDLE_TIMEOUT = 60.0
CLOSE_TIMEOUT = 2.0


def deflate_options(connect_function: Callable[..., Any]) -> dict[str, Any]:
    """The keyword that makes `connect` offer permessage-deflate, if it has one.

    Checked at run time so the driver works before and after the client
    learns RFC 7692: with no such keyword, the suite's 12.*/13.* cases report
    UNIMPLEMENTED.
    """
    parameters = inspect.signature(connect_function).parameters
    if "compression" in parameters:
        return {"compression": True}   # rawws.net.client: True offers the default DeflateOptions
    return {}


def open_connection(url: str, options: dict[str, Any]) -> ClientConnection | None:
    """Connect, or say why not on stderr and return None."""
    try:
        return connect(url, timeout=CONNECT_TIMEOUT, **options)
    except (OSError, HandshakeError) as error:
        print(f"client driver: {url}: {error!r}", file=sys.stderr)
        return None


def echo_until_closed(ws: ClientConnection, idle_timeout: float = IDLE_TIMEOUT) -> list[str | bytes]:
    """Echo every message until the peer closes; return the messages, for the caller."""
    received: list[str | bytes] = []
    try:
        while True:
            message = ws.recv(timeout=idle_timeout)
            received.append(message)
            ws.send(message)
    except ConnectionClosed:
        pass
    except TimeoutError:
        ws.close(timeout=CLOSE_TIMEOUT)
    except OSError:
        ws.close(timeout=0)
    return received


def case_count(base: str, agent: str, tls: dict[str, Any] | None = None) -> int:
    """How many cases the suite will run (/getCaseCount)."""
    ws = open_connection(f"{base}/getCaseCount?agent={agent}", tls or {})
    if ws is None:
        raise SystemExit("client driver: the fuzzing server did not answer /getCaseCount")
    messages = echo_until_closed(ws)
    if not messages:
        raise SystemExit("client driver: /getCaseCount sent no count")
    return int(messages[0])


def run_all(base: str, agent: str, tls: dict[str, Any] | None = None) -> int:
    """Run every case, then have the suite write its reports; return the case count.

    `tls`: connect()'s keywords for wss:// (an ssl_context trusting the suite's CA)."""
    tls = tls or {}
    options = {**deflate_options(connect), **tls}
    count = case_count(base, agent, tls)
    for case in range(1, count + 1):
        ws = open_connection(f"{base}/runCase?case={case}&agent={agent}", options)
        if ws is not None:
            echo_until_closed(ws)
    ws = open_connection(f"{base}/updateReports?agent={agent}", tls)
    if ws is None:
        raise SystemExit("client driver: /updateReports failed; no report written")
    echo_until_closed(ws)
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="client_driver.py", description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the fuzzing server, e.g. ws://127.0.0.1:9001")
    parser.add_argument("--agent", default=DEFAULT_AGENT)
    parser.add_argument("--cafile", default=None,
                        help="for wss://: trust the CA in this PEM file (the suite's certificate)")
    args = parser.parse_args(argv)
    tls = {"ssl_context": client_context(args.cafile)} if args.cafile else {}
    count = run_all(args.url.rstrip("/"), args.agent, tls)
    options = deflate_options(connect)
    print(f"client driver: ran {count} cases as {args.agent!r}"
          f" (connect options: {options or 'none'})", flush=True)


if __name__ == "__main__":
    main()
