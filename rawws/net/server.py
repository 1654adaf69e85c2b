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

One memory budget, `max_memory` bytes (rawws.budget), bounds what all the
connections together hold for their peers: messages being received, send
queues, request heads. Past it the biggest send queues of peers that do not
read are dropped first (`shed`), a message that would not fit is refused
with 1009, and new connections get a fixed 503 while it is exceeded.

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

from ..budget import DEFAULT_MAX_MEMORY, MemoryBudget
from ..deflate import DeflateOptions
from ..errors import HTTPError
from ..handshake import ServerPolicy, refusal_response
from ..http import Request
from ..origin import OriginPolicy
from ..protocol import DEFAULT_MAX_MESSAGE_SIZE
from ..tools.trace import WireTracer
from .http_session import HTTPSession
from .loop import EVENT_READ, EventLoop, Timer
from .static import StaticFiles
from .tls import TLSTransport
from .transport import Transport
from .ws_session import WebSocket, WebSocketSession

__all__ = ["DEFAULT_MAX_MEMORY", "DeflateOptions", "Server", "WebSocket", "WebSocketApp",
           "run_in_thread"]

log = logging.getLogger("rawws.server")

RECV_SIZE = 256 * 1024
ACCEPT_RETRY_DELAY = 0.1
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 10_000
OVERLOAD_RETRY_AFTER = 5   # seconds, the 503's Retry-After (RFC 9110 §10.2.3)
# Sent as is, without reading the request, to a connection past max_connections.
OVERLOAD_RESPONSE = refusal_response(HTTPError(503, "server busy: too many connections",
                                               [("Retry-After", str(OVERLOAD_RETRY_AFTER))]))
# The same, while the memory budget is exceeded.
OVER_BUDGET_RESPONSE = refusal_response(HTTPError(503, "server busy: out of memory for new connections",
                                                  [("Retry-After", str(OVERLOAD_RETRY_AFTER))]))
# Shedding: a send queue this long means the peer is not keeping up (the
# kernel's buffer is full as well); shorter ones are never dropped for the budget.
SHED_MIN_QUEUE = 64 * 1024
# A queue that has not shrunk for this long belongs to a peer that does not
# read: those are shed first, the biggest first; then the longest unread.
STALL_SECONDS = 1.0
# At most this many are dropped in one loop turn: an application's goodbyes
# to each (the chat broadcasts a leave to everyone) must not stall the rest.
SHED_BATCH = 16
# `kernel_unsent`: what the kernel may hold unsent for one socket
# (TCP_NOTSENT_LOWAT, Linux); past it the output waits in our send queue,
# where the budget counts it. Without it a peer that reads nothing parks the
# whole autotuned send buffer (~3-4 MiB) in the kernel, unseen by the budget:
# 500 such peers put a test machine's TCP stack under memory pressure. Off by
# default: it costs big messages throughput (measured ~15% on 1 MiB echoes,
# more wakeups to refill the socket); the chat, whose messages are small,
# turns it on (chat/__main__.py).
_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", None)
# A message being received this long or shorter is ordinary: when it does not
# fit, the connections holding the most are dropped to make room for it.
ORDINARY_MESSAGE = 64 * 1024


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
                 max_memory: int = DEFAULT_MAX_MEMORY,
                 kernel_unsent: int | None = None,
                 compression: DeflateOptions | None = DeflateOptions(),
                 backlog: int = 1024, tracer: WireTracer | None = None,
                 reuse_port: bool = False,
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
        self.refused = 0   # connections refused past max_connections or the budget, ever
        # Bytes held for peers, all connections together (rawws.budget).
        self.budget = MemoryBudget(max_memory, make_room=self._make_room)
        # Queues are shed when the budget's use passes this: its limit, or a
        # little more after a shed that found nothing to drop (no rescans per byte).
        self.shed_at = max_memory
        self._shed_retry: Timer | None = None
        self.shed_quota = SHED_BATCH   # connections this loop turn may still shed
        self.shed_count = 0        # connections dropped for the budget, ever
        # TCP_NOTSENT_LOWAT for accepted sockets; None leaves the kernel's default.
        self.kernel_unsent = kernel_unsent if _NOTSENT_LOWAT is not None else None
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
        # reuse_port: several processes listen on one port (SO_REUSEPORT), the
        # kernel spreading new connections among them (`python -m chat --workers`).
        self.listener = socket.create_server((host, port), family=family, backlog=backlog,
                                             reuse_port=reuse_port)
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
            budget = self.budget
            if budget.used > budget.limit:
                self._refuse(sock, OVER_BUDGET_RESPONSE)
                continue
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.kernel_unsent is not None:
                    try:
                        sock.setsockopt(socket.IPPROTO_TCP, _NOTSENT_LOWAT, self.kernel_unsent)
                    except OSError:
                        pass
                conn = self.transport_class(self, sock, remote)
            except OSError as error:   # gone already (wrapping for TLS asks the peer's address)
                log.debug("%s:%s lost at accept: %s", *remote[:2], error)
                sock.close()
                continue
            self.connections.add(conn)
            self.loop.register(conn.sock, EVENT_READ, conn.on_ready)

    def _refuse(self, sock: socket.socket, response: bytes = OVERLOAD_RESPONSE) -> None:
        """Past max_connections or the budget: a fixed 503, then close; costs no
        state or timer."""
        self.refused += 1
        try:
            sock.setblocking(False)
            if self.ssl_context is None:   # a TLS client could not read it: just close
                sock.send(response)   # a new socket's buffer takes it whole
            # Read what came already (a request head): closing with unread
            # bytes would send a RST, which may overtake the 503.
            sock.recv(64 * 1024)
        except OSError:
            pass
        sock.close()
        now = time.monotonic()
        if now - self._refusal_logged >= 1.0:   # one line a second at most, whatever the flood
            self._refusal_logged = now
            if response is OVERLOAD_RESPONSE:
                log.warning("%d connections open, the limit: refusing new ones with 503 "
                            "(%d so far)", len(self.connections), self.refused)
            else:
                log.warning("memory budget exceeded (%d of %d bytes): refusing new connections "
                            "with 503 (%d so far)", self.budget.used, self.budget.limit,
                            self.refused)

    def _resume_accepting(self) -> None:
        if not self.shutting_down:
            self.loop.register(self.listener, EVENT_READ, self._accept)

    def _flush_dirty(self) -> None:
        while self.dirty:
            batch, self.dirty = self.dirty, []
            for conn in batch:
                conn.flush()
        self.shed_quota = SHED_BATCH   # for the next loop turn

    # ---- the memory budget -------------------------------------------------

    def over_budget(self) -> None:
        """A send queue took the budget past `shed_at`: shed the queues of peers
        that do not read, down to a little under the limit (so that the next
        bytes queued do not start a scan again)."""
        budget = self.budget
        slack = max(budget.output_reserve // 4, 1)
        if budget.used > budget.limit + budget.output_reserve:
            # Far over (the output grows faster than a batch a turn sheds):
            # the bound comes first, whatever it costs the turn.
            self.shed_quota -= self.shed(budget.limit - slack)
        elif self.shed_quota > 0:
            self.shed_quota -= self.shed(budget.limit - slack, most=self.shed_quota)
        if budget.used <= budget.limit:
            self.shed_at = budget.limit
            return
        # Not there yet. Scan again once it has grown, and next loop turn if
        # this one's quota is spent (an application's goodbyes to each one
        # dropped, and the other connections, are served in between), else
        # once the queues that formed lately have stalled long enough.
        self.shed_at = budget.used + slack
        retry = self._shed_retry
        if self.shed_quota <= 0:
            if retry is not None:
                retry.cancel()
            self._shed_retry = self.loop.call_later(0.0, self._retry_shed)
        elif retry is None:
            self._shed_retry = self.loop.call_later(STALL_SECONDS, self._retry_shed)

    def _retry_shed(self) -> None:
        """A timer: shed on if still over (the loop turn's flush follows)."""
        self._shed_retry = None
        self.shed_at = self.budget.limit
        if self.budget.used > self.budget.limit:
            self.over_budget()

    def shed(self, target: int, need: int = 0, owner: object = None, *,
             readers: bool = True, receivers: bool = False, most: int | None = None) -> int:
        """Drop connections until `need` more bytes fit under `target`, in this
        order: send queues (of SHED_MIN_QUEUE or more) that have not shrunk for
        STALL_SECONDS, the biggest first: peers that do not read; with
        `readers`, the other queues, the longest unread first; with
        `receivers`, messages being received bigger than `need`, the biggest
        first. Never the connection whose protocol is `owner`; at most `most`
        of them. Returns how many were dropped."""
        budget = self.budget
        if budget.used + need <= target:
            return 0
        dropped = 0
        stalled_before = time.monotonic() - STALL_SECONDS
        stalled, reading = [], []
        for conn in self.connections:
            if conn.out.size >= SHED_MIN_QUEUE and (
                    owner is None or getattr(conn.session, "protocol", None) is not owner):
                (stalled if conn.read_at <= stalled_before else reading).append(conn)
        stalled.sort(key=lambda conn: conn.out.size, reverse=True)
        order = stalled
        if readers:
            reading.sort(key=lambda conn: conn.read_at)
            order += reading
        victims = []
        freed = 0
        now = time.monotonic()
        for conn in order:
            if budget.used - freed + need <= target or len(victims) == most:
                break
            victims.append((conn, f"{conn.out.size} bytes queued, "
                                  f"none read for {now - conn.read_at:.1f} s"))
            freed += conn.charged
        self._drop(victims)
        dropped = len(victims)
        if not receivers or budget.used + need <= target or dropped == most:
            return dropped
        holders = sorted((conn for conn in self.connections
                          if type(conn.session) is WebSocketSession
                          and conn.session.protocol.held_bytes > need
                          and conn.session.protocol is not owner),
                         key=lambda conn: conn.session.protocol.held_bytes, reverse=True)
        for conn in holders:
            if conn.closed:
                continue
            self._shed_one(conn, f"{conn.session.protocol.held_bytes} bytes of a message "
                                 "being received")
            dropped += 1
            if budget.used + need <= target or dropped == most:
                return dropped
        return dropped

    def _drop(self, victims: list[tuple[Transport, str]]) -> None:
        """Drop these together: every one's WebSocket ends first, so that the
        application's goodbyes for each (the chat broadcasts a leave) skip the
        others at the cost of a test, then each socket is closed."""
        for conn, _ in victims:
            if type(conn.session) is WebSocketSession:
                conn.session.protocol.abort()
        for conn, why in victims:
            if not conn.closed:
                self._shed_one(conn, why)

    def _shed_one(self, conn: Transport, why: str) -> None:
        self.shed_count += 1
        log.warning("%s:%s dropped for the memory budget (%d of %d bytes used): %s",
                    *conn.remote[:2], self.budget.used, self.budget.limit, why)
        conn.teardown()

    def _make_room(self, size: int, owner: object) -> None:
        """A message being received does not fit. An ordinary one gets room from
        the biggest holders; a big one is refused (1009) and sheds no one."""
        if size <= ORDINARY_MESSAGE:
            self.shed(self.budget.receive_limit, size, owner, readers=False, receivers=True)

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
