"""`python -m rawws.echo`: every message comes back unchanged, as one message.

The conformance target (e.g. for the Autobahn test suite): any path, any
origin, no subprotocol required, and limits that take Autobahn's largest
cases (16 MiB messages). With `--certfile` it speaks wss:// (rawws.net.tls).
"""
from __future__ import annotations

import argparse
import logging
import sys
from importlib import metadata

from . import masking
from .deflate import DeflateOptions
from .net.server import (DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_MEMORY,
                         Server, WebSocket, WebSocketApp)
from .net.tls import TLSConfigError, server_context
from .tools.trace import WireTracer

ECHO_MAX_MESSAGE_SIZE = 16 * 1024 * 1024

log = logging.getLogger("rawws.echo")


class EchoApp(WebSocketApp):
    allowed_origins = {"*"}

    def on_message(self, ws: WebSocket, message: str | bytes) -> None:
        if isinstance(message, str):
            ws.send_text(message)
        else:
            ws.send_binary(message)


def version() -> str:
    """rawws's version and the masking path in use, e.g. "rawws 0.1.0, masking in C"."""
    try:
        number = metadata.version("rawws")
    except metadata.PackageNotFoundError:   # run from a checkout that was never installed
        number = "(not installed)"
    return f"rawws {number}, masking in {masking.IMPLEMENTATION}"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rawws.echo", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=version(),
                        help="print rawws's version and its masking path (C or pure Python)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--max-message-size", type=int, default=ECHO_MAX_MESSAGE_SIZE,
                        help="largest message accepted, in bytes (default 16 MiB)")
    parser.add_argument("--ping-interval", type=float, default=20.0,
                        help="seconds between keepalive pings; 0 turns them off")
    parser.add_argument("--handshake-timeout", type=float, default=DEFAULT_HANDSHAKE_TIMEOUT,
                        help="seconds a connection has to send a complete HTTP request "
                             f"(default {DEFAULT_HANDSHAKE_TIMEOUT:g})")
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                        help=f"open connections at most; past it 503 (default {DEFAULT_MAX_CONNECTIONS})")
    parser.add_argument("--max-send-buffer", type=int, default=None,
                        help="drop a WebSocket with more than this many bytes unsent to it "
                             "(default: 64 MiB, or 4 times --max-message-size if more)")
    parser.add_argument("--max-memory", type=_positive_int, default=DEFAULT_MAX_MEMORY,
                        metavar="BYTES",
                        help="bytes held for all peers together (messages being received, "
                             "send queues); past it the biggest queues of peers that do not "
                             "read are dropped, a message that does not fit is refused (1009) "
                             "and new connections get 503 "
                             f"(default {DEFAULT_MAX_MEMORY // (1024 * 1024)} MiB)")
    parser.add_argument("--certfile", metavar="CERT", default=None,
                        help="serve wss:// with this PEM certificate chain (its key too, "
                             "unless --keyfile)")
    parser.add_argument("--keyfile", metavar="KEY", default=None,
                        help="the PEM private key of --certfile, when not in CERT")
    parser.add_argument("--no-compression", action="store_true",
                        help="do not accept permessage-deflate (RFC 7692), on by default")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--trace", action="store_true",
                        help="print every byte in and out, handshakes and annotated frames, "
                             "on stderr (rawws.tools.trace)")
    args = parser.parse_args(argv)
    if args.keyfile is not None and args.certfile is None:
        parser.error("--keyfile needs --certfile")
    ssl_context = None
    if args.certfile is not None:
        try:
            ssl_context = server_context(args.certfile, args.keyfile)
        except TLSConfigError as error:
            print(f"python -m rawws.echo: {error}", file=sys.stderr)
            raise SystemExit(1) from None
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    log.debug("%s", version())   # rawws.masking logged it at import, before logging was set up
    server = Server(EchoApp(), host=args.host, port=args.port,
                    max_message_size=args.max_message_size,
                    ping_interval=args.ping_interval or None,
                    handshake_timeout=args.handshake_timeout,
                    max_connections=args.max_connections,
                    max_write_buffer=args.max_send_buffer,
                    max_memory=args.max_memory,
                    compression=None if args.no_compression else DeflateOptions(),
                    tracer=WireTracer(sys.stderr) if args.trace else None,
                    ssl_context=ssl_context)
    # Handlers first, then the line a script waits for (it may signal at once).
    server.install_signal_handlers()
    scheme = "wss" if ssl_context is not None else "ws"
    print(f"Serving on {scheme}://{server.host}:{server.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
