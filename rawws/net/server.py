"""HTTP/1.1 and WebSockets on one port, on the `rawws.net.loop` event loop.

`Server` listens and accepts; each accepted socket becomes a `Transport`
(rawws.net.transport) that starts with an `HTTPSession`: files are served
and an upgrade request is decided by the sans-IO handshake; a 101 swaps in
a `WebSocketSession` (rawws.net.ws_session) that hands the protocol's
events to the application's `WebSocketApp`. The protocol rules live in the
sans-IO modules; this package only moves bytes and runs the timers.

Hostile clients (docs/security.md): a request head must be complete within
`handshake_timeout` seconds (slowloris), past `max_connections` open
sockets a new one gets a fixed 503 and is closed unread, and a WebSocket
whose unsent output passes `max_write_buffer` (a slow reader) is dropped.

With an `ssl_context` every accepted socket is a `TLSTransport`
(rawws.net.tls): `https://` and `wss://` on the one port, the sessions
unchanged above it.
"""
from __future__ import annotations

import errno
import logging
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..deflate import DeflateOptions
from ..handshake import ServerPolicy
from ..http import Request, format_response
from ..origin import OriginPolicy
from ..protocol import DEFAULT_MAX_MESSAGE_SIZE
from ..tools.trace import WireTracer
from .http_session import HTTPSession
from .loop import EVENT_READ, EventLoop, Timer
from .static import StaticFiles
from .tls import TLSTransport
from .transport import Transport
from .ws_session import WebSocket, WebSocketSession

log = logging.getLogger("rawws.server")

RECV_SIZE = 256 * 1024
ACCEPT_RETRY_DELAY = 0.1
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 10_000
OVERLOAD_RETRY_AFTER = 5   # seconds, the 503's Retry-After (RFC 9110 §10.2.3)
# Sent as is, without reading the request, to a connection past max_connections.
OVERLOAD_RESPONSE = format_response(503, [("Retry-After", str(OVERLOAD_RETRY_AFTER)),
                                          ("Content-Type", "text/plain; charset=utf-8"),
                                          ("Connection", "close")],
                                    b"server busy: too many connections\n")


class WebSocketApp:
    """What an application implements; the defaults accept any subprotocol-less client."""

    subprotocols: tuple[str, ...] = ()
    subprotocol_required: bool = False
    # Origins accepted besides the server's own (see rawws.origin.OriginPolicy);
    # None: only the server's own, or no Origin header; {"*"}: any origin.
    allowed_origins: Iterable[str] | None = None

    def check_origin(self, origin: str | None, request: Request) -> bool:
        """Accept or refuse (403) the handshake's Origin (RFC 6455 §10.2): over
        TLS the server's own origin is https://, as the page's is."""
        policy = OriginPolicy(self.allowed_origins, scheme=request.scheme)
        return policy.allows(origin, request.headers.get("Host"))

    def select_subprotocol(self, offered: list[str], request: Request) -> str | None:
        """Pick one of the client's subprotocols: ours in our order of preference."""
        for protocol in self.subprotocols:
            if protocol in offered:
                return protocol
        return None

    def subprotocol_refusal(self) -> str:
        """The plain-text body of the 400 sent when no offered subprotocol fits."""
        return "No supported WebSocket subprotocol offered. Supported: " + ", ".join(self.subprotocols)

    def on_open(self, ws: WebSocket) -> None:
        pass

    def on_message(self, ws: WebSocket, message: str | bytes) -> None:
        pass

    def on_close(self, ws: WebSocket, code: int, reason: str) -> None:
        pass


class Server:
    """Listens on host:port and runs `app` for every WebSocket, files for the rest."""

    def __init__(self, app: WebSocketApp, *, host: str = "127.0.0.1", port: int = 0,
                 web_root: str | Path | None = None,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 max_frame_size: int | None = None,
                 max_header_bytes: int = 16 * 1024,
                 ping_interval: float | None = 20.0, ping_timeout: float = 20.0,
                 close_timeout: float = 5.0,
                 handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                 linger_timeout: float = 2.0,
                 read_pause_bytes: int = 1024 * 1024,
                 max_write_buffer: int | None = None,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 compression: DeflateOptions | None = DeflateOptions(),
                 backlog: int = 1024, tracer: WireTracer | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.app = app
        # TLS on every connection (rawws.net.tls.server_context makes the default one).
        self.ssl_context = ssl_context
        self.transport_class = TLSTransport if ssl_context is not None else Transport
        self.tracer = tracer   # --trace: print every byte in and out (rawws.tools.trace)
        # permessage-deflate (RFC 7692) for clients that offer it; None turns it off.
        self.compression = compression
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        # What the sans-IO handshake decides with: the app's hooks, compression, limits.
        self.policy = ServerPolicy(app, compression=compression,
                                   max_message_size=max_message_size,
                                   max_frame_size=max_frame_size)
        self.max_header_bytes = max_header_bytes
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        self.refused = 0   # connections refused past max_connections, ever
        self._refusal_logged = 0.0
        self.linger_timeout = linger_timeout
        self.read_pause_bytes = read_pause_bytes
        # Room for an echo of the largest message plus slack.
        self.max_write_buffer = max_write_buffer or max(64 * 1024 * 1024, 4 * max_message_size)
        self.files = StaticFiles(web_root) if web_root is not None else _NoFiles()
        self.loop = EventLoop()
        self.connections: set[Transport] = set()
        self.dirty: list[Transport] = []
        self.log = log
        # Every read lands here, one buffer for all connections (one thread
        # reads them in turn); what a reader keeps of it, it copies. A fresh
        # bytes object per recv() of RECV_SIZE costs, past glibc's 128 KiB
        # mmap threshold, an mmap and page faults each time: measured 22 µs
        # per recv() against 2.4 µs (docs/performance.md).
        self.read_buffer = bytearray(RECV_SIZE)
        self.read_view = memoryview(self.read_buffer)
        self.shutting_down = False
        raise_fd_limit()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, port), family=family, backlog=backlog)
        self.listener.setblocking(False)
        self.host, self.port = self.listener.getsockname()[:2]
        self.loop.register(self.listener, EVENT_READ, self._accept)
        self.loop.after_iteration(self._flush_dirty)

    @property
    def websockets(self) -> list[WebSocket]:
        """The handles of the WebSockets open now (on_open called, on_close not yet)."""
        return [conn.session.handle for conn in self.connections
                if type(conn.session) is WebSocketSession and not conn.session.app_closed]

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/"

    def new_session(self, transport: Transport) -> HTTPSession:
        """Every accepted connection starts as HTTP."""
        return HTTPSession(transport)

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        return self.loop.call_later(delay, callback)

    def _accept(self, _mask: int) -> None:
        for _ in range(64):   # accept a burst, then let others run
            try:
                sock, remote = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors or memory: the listener stays readable,
                    # so stop watching it for a moment instead of spinning.
                    log.warning("accept failed, pausing accepts for %.1f s: %s",
                                ACCEPT_RETRY_DELAY, error)
                    self.loop.unregister(self.listener)
                    self.loop.call_later(ACCEPT_RETRY_DELAY, self._resume_accepting)
                    return
                log.warning("accept failed: %s", error)
                return
            if len(self.connections) >= self.max_connections:
                self._refuse(sock)
                continue
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn = self.transport_class(self, sock, remote)
            except OSError as error:   # gone already (wrapping for TLS asks the peer's address)
                log.debug("%s:%s lost at accept: %s", *remote[:2], error)
                sock.close()
                continue
            self.connections.add(conn)
            self.loop.register(conn.sock, EVENT_READ, conn.on_ready)

    def _refuse(self, sock: socket.socket) -> None:
        """Past max_connections: a fixed 503, then close; costs no state or timer."""
        self.refused += 1
        try:
            sock.setblocking(False)
            if self.ssl_context is None:   # a TLS client could not read it: just close
                sock.send(OVERLOAD_RESPONSE)   # a new socket's buffer takes it whole
            # Read what came already (a request head): closing with unread
            # bytes would send a RST, which may overtake the 503.
            sock.recv(64 * 1024)
        except OSError:
            pass
        sock.close()
        now = time.monotonic()
        if now - self._refusal_logged >= 1.0:   # one line a second at most, whatever the flood
            self._refusal_logged = now
            log.warning("%d connections open, the limit: refusing new ones with 503 (%d so far)",
                        len(self.connections), self.refused)

    def _resume_accepting(self) -> None:
        if not self.shutting_down:
            self.loop.register(self.listener, EVENT_READ, self._accept)

    def _flush_dirty(self) -> None:
        while self.dirty:
            batch, self.dirty = self.dirty, []
            for conn in batch:
                conn.flush()

    def install_signal_handlers(self) -> None:
        """Make SIGINT/SIGTERM shut down gracefully (main thread only).

        Call it before printing the "Serving on" line: a script that reads the
        line may signal at once.
        """
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self.loop.call_soon_threadsafe(self._begin_shutdown))

    def serve_forever(self, *, handle_signals: bool = False) -> None:
        """Run until `shutdown()`; with handle_signals, SIGINT/SIGTERM shut down gracefully."""
        if handle_signals:
            self.install_signal_handlers()
        try:
            self.loop.run_forever()
        finally:
            self._close_everything()

    def shutdown(self) -> None:
        """Stop gracefully: Close 1001 to every WebSocket, then stop the loop. Thread-safe."""
        self.loop.call_soon_threadsafe(self._begin_shutdown)

    def _begin_shutdown(self) -> None:
        if self.shutting_down:
            return
        self.shutting_down = True
        log.info("shutting down: closing %d WebSocket(s)", len(self.websockets))
        self.loop.unregister(self.listener)
        self.listener.close()
        for conn in list(self.connections):
            conn.session.go_away()
        self._flush_dirty()
        self.loop.call_later(self.close_timeout, self.loop.stop)
        self._stop_when_idle()

    def _stop_when_idle(self) -> None:
        if not self.connections:
            self.loop.stop()
        else:
            self.loop.call_later(0.02, self._stop_when_idle)

    def _close_everything(self) -> None:
        for conn in list(self.connections):
            conn.teardown()
        try:
            self.listener.close()
        except OSError:
            pass
        self.loop.close()


class _NoFiles:
    """The file server of a server with no web root: 404 for everything."""

    def respond(self, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        body = b"Not Found\n"
        return 404, [("Content-Type", "text/plain; charset=utf-8"),
                     ("Content-Length", str(len(body)))], body if request.method != "HEAD" else b""


def raise_fd_limit() -> None:
    """Lift the soft open-files limit to the hard one: 1,000 clients need 1,000 descriptors."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY
                                                        else 65536, hard))
    except (ImportError, ValueError, OSError):
        pass


def run_in_thread(server: Server) -> threading.Thread:
    """Start `server.serve_forever()` in a daemon thread (for tests and embedding)."""
    thread = threading.Thread(target=server.serve_forever, name="rawws-server", daemon=True)
    thread.start()
    return thread
