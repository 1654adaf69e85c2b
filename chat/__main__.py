"""`python -m chat`: the chat server, web page and WebSocket endpoint on one port.

    python -m chat [--host H] [--port P] [--root DIR] [--allowed-origin ORIGIN ...]
                   [--certfile CERT [--keyfile KEY]]
                   [--backplane redis://HOST:PORT/DB [--room NAME] [--workers N]]

Prints `Serving on http://HOST:PORT/` once listening (with the real port, so
`--port 0` can be read by a script), or `Serving on https://HOST:PORT/` with
`--certfile`: then the page is served over https:// and the chat over
wss:// on the same port (rawws.net.tls). SIGINT and SIGTERM close every
WebSocket with 1001 and exit 0. With `--backplane`, every server started
with the same Redis URL and room serves one room (chat/backplane.py); with
`--workers N`, N such servers share the port (chat/workers.py).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rawws.net.server import (DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
                              DEFAULT_MAX_MEMORY, DeflateOptions, Server)
from rawws.net.tls import TLSConfigError, server_context
from rawws.tools.trace import WireTracer

from rawws.net.redis import parse_url

from .app import ChatApp
from .backplane import DEFAULT_CONNECT_TIMEOUT, DEFAULT_ROOM, DEFAULT_TTL, RedisBackplane
from .health import HealthCheck
from .room import Limits, Room

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "www"
DEFAULT_PORT = 3490   # Beej's port
MIN_WS_MESSAGE_SIZE = 128 * 1024
# A connection that falls this far behind in reading what it is sent is
# dropped: 1,000 connections that never read then hold at most ~1 GiB, and
# a reader this far behind (dozens of the longest messages, thousands of
# ordinary ones) has lost the conversation anyway.
DEFAULT_MAX_SEND_BUFFER = 1024 * 1024
# permessage-deflate (RFC 7692) as the chat asks for it: both sides start
# every message from an empty window. So a broadcast is compressed once for
# every recipient (`rawws.net.broadcast`), and a connection keeps no
# zlib state between messages: an idle one costs no compression memory.
CHAT_COMPRESSION = DeflateOptions(server_no_context_takeover=True,
                                  client_no_context_takeover=True)
# What the kernel may hold unsent to one connection (TCP_NOTSENT_LOWAT):
# beyond it, output waits in the server's queue, where the memory budget
# (--max-memory) sees it and sheds a peer that does not read. Without it each
# such peer parks ~3-4 MiB in the kernel's send buffer. Chat messages are
# small, so this costs the chat nothing (docs/security.md).
CHAT_KERNEL_UNSENT = 64 * 1024
# Request headers: CONTRACT.md promises 8 KiB; we take twice that by default.
DEFAULT_MAX_HEADER_BYTES = 16 * 1024


def default_ws_message_size(max_message_length: int) -> int:
    """Room for a chat message of the longest allowed length in any JSON
    spelling: a character written as an escaped surrogate pair
    (`\\ud83d\\ude00`) takes 12 bytes, plus the envelope and a name."""
    return max(MIN_WS_MESSAGE_SIZE, 12 * max_message_length + 4096)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text}")
    return value


def non_negative(kind):
    def parse(text: str):
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    defaults = Limits()
    p = argparse.ArgumentParser(prog="python -m chat", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port to listen on; 0 picks a free one (default {DEFAULT_PORT})")
    p.add_argument("--root", type=Path, metavar="DIR", default=DEFAULT_ROOT,
                   help="folder of the web page to serve (default: www/ beside the chat package)")
    p.add_argument("--allowed-origin", action="extend", nargs="+", default=[], metavar="ORIGIN",
                   help="also accept WebSocket handshakes from this origin "
                        "(scheme://host[:port]); '*' accepts any. Repeatable")
    p.add_argument("--certfile", metavar="CERT", default=None,
                   help="serve https:// and wss:// with this PEM certificate chain "
                        "(its key too, unless --keyfile)")
    p.add_argument("--keyfile", metavar="KEY", default=None,
                   help="the PEM private key of --certfile, when not in CERT")
    p.add_argument("--no-compression", action="store_true",
                   help="do not accept permessage-deflate (RFC 7692), on by default")
    p.add_argument("--trace", action="store_true",
                   help="print every byte in and out, HTTP heads and annotated WebSocket "
                        "frames, on stderr (rawws.tools.trace; docs/walkthrough.md)")
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
    limits = p.add_argument_group("limits")
    limits.add_argument("--max-message-length", metavar="N", type=positive_int,
                        default=defaults.max_message_length,
                        help=f"longest chat message, in characters (default "
                             f"{defaults.max_message_length})")
    limits.add_argument("--max-username-length", metavar="N", type=positive_int,
                        default=defaults.max_username_length,
                        help=f"longest name, in characters "
                             f"(default {defaults.max_username_length})")
    limits.add_argument("--rate", metavar="R", type=non_negative(float), default=defaults.rate,
                        help=f"messages a second one connection may send, sustained; 0: no limit "
                             f"(default {defaults.rate:g})")
    limits.add_argument("--burst", metavar="N", type=positive_int, default=defaults.burst,
                        help=f"messages one connection may send at once (default {defaults.burst})")
    limits.add_argument("--flood-kick", metavar="N", type=non_negative(int),
                        default=defaults.flood_kick,
                        help="close (1008) a connection after this many rate-limited messages "
                             f"in a row; 0: never (default {defaults.flood_kick})")
    limits.add_argument("--history", metavar="N", type=non_negative(int),
                        default=defaults.history_size,
                        help=f"messages kept for joiners (default {defaults.history_size})")
    limits.add_argument("--history-bytes", type=non_negative(int), default=defaults.history_bytes,
                        metavar="BYTES",
                        help="...and at most this much of their JSON "
                             f"(default {defaults.history_bytes // 1024} KiB)")
    limits.add_argument("--max-send-buffer", type=positive_int, default=DEFAULT_MAX_SEND_BUFFER,
                        metavar="BYTES",
                        help="drop a connection with more than this much unsent to it "
                             f"(default {DEFAULT_MAX_SEND_BUFFER // (1024 * 1024)} MiB)")
    limits.add_argument("--max-ws-message-size", type=positive_int, default=None, metavar="BYTES",
                        help="largest WebSocket message, in bytes; over it the connection is "
                             "closed with 1009 (default: 128 KiB, or enough for "
                             "--max-message-length if that is more)")
    limits.add_argument("--max-header-bytes", type=positive_int, default=DEFAULT_MAX_HEADER_BYTES,
                        metavar="BYTES",
                        help="largest HTTP request header block; over it the answer is 431 "
                             f"(default {DEFAULT_MAX_HEADER_BYTES // 1024} KiB)")
    limits.add_argument("--ping-interval", metavar="S", type=non_negative(float), default=20.0,
                        help="seconds between keepalive pings; 0: none (default 20)")
    limits.add_argument("--ping-timeout", metavar="S", type=positive_float, default=20.0,
                        help="seconds to wait for a keepalive ping's pong before closing "
                             "with 1011 (default 20)")
    limits.add_argument("--close-timeout", metavar="S", type=positive_float, default=5.0,
                        help="seconds to wait for the peer's Close before dropping it (default 5)")
    limits.add_argument("--handshake-timeout", dest="handshake_timeout",
                        metavar="S", type=positive_float, default=DEFAULT_HANDSHAKE_TIMEOUT,
                        help="seconds a connection has to send a complete HTTP request "
                             "(slowloris), also after a keep-alive answer "
                             f"(default {DEFAULT_HANDSHAKE_TIMEOUT:g})")
    limits.add_argument("--max-connections", metavar="N", type=positive_int,
                        default=DEFAULT_MAX_CONNECTIONS,
                        help="open connections at most; past it a new one gets 503 "
                             f"(default {DEFAULT_MAX_CONNECTIONS})")
    limits.add_argument("--max-memory", metavar="BYTES", type=positive_int,
                        default=DEFAULT_MAX_MEMORY,
                        help="bytes held for all peers together (messages being received, "
                             "send queues); past it the biggest queues of peers that do not "
                             "read are dropped, a message that does not fit is refused (1009) "
                             "and new connections get 503 "
                             f"(default {DEFAULT_MAX_MEMORY // (1024 * 1024)} MiB)")
    scale = p.add_argument_group("more than one process (docs/scaling.md)")
    scale.add_argument("--backplane", metavar="URL",
                       help="redis://HOST[:PORT][/DB]: share the room with every chat server "
                            "started with the same Redis and --room")
    scale.add_argument("--room", default=DEFAULT_ROOM, metavar="NAME",
                       help=f"the room's name in Redis, for several rooms on one Redis "
                            f"(default {DEFAULT_ROOM!r})")
    scale.add_argument("--backplane-ttl", metavar="S", type=positive_float, default=DEFAULT_TTL,
                       help="seconds a server's heartbeat in Redis lives: the users of a server "
                            "that dies leave within about 4/3 of this "
                            f"(default {DEFAULT_TTL:g})")
    scale.add_argument("--backplane-timeout", metavar="S", type=positive_float,
                       default=DEFAULT_CONNECT_TIMEOUT,
                       help="seconds to reach Redis at start before giving up "
                            f"(default {DEFAULT_CONNECT_TIMEOUT:g})")
    scale.add_argument("--healthz-fail-when-down", action="store_true",
                       help="answer GET /healthz with 503 while the backplane is down "
                            "(default: 200, saying \"down\")")
    scale.add_argument("--workers", metavar="N", type=positive_int, default=1,
                       help="run N processes sharing the port (SO_REUSEPORT); needs "
                            "--backplane above 1 (default 1)")
    scale.add_argument("--reuse-port", action="store_true",
                       help="listen with SO_REUSEPORT, beside other processes on the port")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers > 1 and not args.backplane:
        parser.error("--workers above 1 needs --backplane redis://...: without it each worker "
                     "would be a room of its own, and users would not see each other")
    if args.backplane:
        try:
            args.backplane_address = parse_url(args.backplane)
        except ValueError as error:
            parser.error(f"--backplane: {error}")
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limits = Limits(max_message_length=args.max_message_length,
                    max_username_length=args.max_username_length,
                    rate=args.rate, burst=args.burst, flood_kick=args.flood_kick,
                    history_size=args.history, history_bytes=args.history_bytes)
    ws_size = args.max_ws_message_size or default_ws_message_size(args.max_message_length)
    root = args.root.resolve()
    if not root.is_dir():
        print(f"python -m chat: the web root {root} is not a folder", file=sys.stderr)
        return 1
    if args.keyfile is not None and args.certfile is None:
        print("python -m chat: --keyfile needs --certfile", file=sys.stderr)
        return 2
    ssl_context = None
    if args.certfile is not None:
        try:
            ssl_context = server_context(args.certfile, args.keyfile)
        except TLSConfigError as error:
            print(f"python -m chat: {error}", file=sys.stderr)
            return 1
    if args.workers > 1:
        from . import workers
        return workers.run(args, argv)
    app = ChatApp(limits=limits, allowed_origins=args.allowed_origin)
    try:
        server = Server(app, host=args.host, port=args.port, web_root=root,
                        max_message_size=ws_size, max_write_buffer=args.max_send_buffer,
                        max_header_bytes=args.max_header_bytes,
                        ping_interval=args.ping_interval or None,
                        ping_timeout=args.ping_timeout, close_timeout=args.close_timeout,
                        handshake_timeout=args.handshake_timeout,
                        max_connections=args.max_connections,
                        max_memory=args.max_memory, kernel_unsent=CHAT_KERNEL_UNSENT,
                        compression=None if args.no_compression else CHAT_COMPRESSION,
                        tracer=WireTracer(sys.stderr) if args.trace else None,
                        reuse_port=args.reuse_port, ssl_context=ssl_context)
    except OSError as error:   # port in use, address not ours...
        print(f"python -m chat: cannot listen on {args.host}:{args.port}: {error.strerror or error}",
              file=sys.stderr)
        return 1
    server.files = HealthCheck(server.files, app, fail_when_down=args.healthz_fail_when_down)
    backplane = None
    if args.backplane:
        backplane = RedisBackplane(server.loop, args.backplane, args.room, ttl=args.backplane_ttl,
                                   connect_timeout=args.backplane_timeout)
        app.room = Room(limits, backplane=backplane)
        error = _start_backplane(server, backplane)
        if error is not None:
            print(f"python -m chat: cannot reach the backplane at {backplane.address}: {error}",
                  file=sys.stderr)
            backplane.close()
            server.listener.close()
            return 1
    host = f"[{server.host}]" if ":" in server.host else server.host
    server.install_signal_handlers()   # before the line a script may answer with a signal
    scheme = "https" if ssl_context is not None else "http"
    print(f"Serving on {scheme}://{host}:{server.port}/", flush=True)
    try:
        server.serve_forever()
    finally:
        if backplane is not None:
            backplane.close()
    return 0


def _start_backplane(server: Server, backplane: RedisBackplane) -> Exception | None:
    """Run the loop until the backplane has read the room and said hello, or failed."""
    outcome: list[Exception | None] = []

    def ready(error: Exception | None) -> None:
        outcome.append(error)
        server.loop.stop()

    backplane.start(ready)
    server.loop.run_forever()
    return outcome[0] if outcome else RuntimeError("interrupted")


if __name__ == "__main__":
    sys.exit(main())
