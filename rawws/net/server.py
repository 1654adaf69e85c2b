"""HTTP/1.1 and WebSockets on one port, on the `rawws.net.loop` event loop.

Each accepted socket starts as an HTTP connection. A request that asks for a
WebSocket (RFC 6455 §4) is validated, offered to the application (Origin,
subprotocol) and, when accepted, the connection becomes a WebSocket handed to
the application's `on_open`; every other request is answered by the static
file server. The protocol rules live in the sans-IO modules: this module only
moves bytes between sockets and those state machines, and runs the timers.

Backpressure: a connection whose unsent output passes `read_pause_bytes`
stops being read until the peer drains it (so a peer that never reads cannot
make us buffer its echoes or pongs without bound), and a WebSocket whose
output passes `max_write_buffer` (a slow reader of broadcasts) is dropped.

Hostile clients (docs/security.md): a request head must be complete within
`handshake_timeout` seconds (slowloris), and past `max_connections` open
sockets a new one gets a fixed 503 and is closed unread.
"""
from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..close import CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_NORMAL
from ..deflate import DeflateOptions, DeflateParams, PerMessageDeflate, server_accept
from ..errors import HandshakeError, HTTPError
from ..handshake import (accept_response, is_upgrade_request, offered_subprotocols,
                        refusal_response, validate_request)
from ..http import Request, RequestParser, format_response
from ..origin import OriginPolicy
from .loop import EVENT_READ, EVENT_WRITE, EventLoop, Timer
from ..protocol import (DEFAULT_MAX_MESSAGE_SIZE, BinaryMessage, Pong, Role, State, TextMessage,
                       WebSocketConnection)
from .sendqueue import SendQueue
from .static import StaticFiles
from ..tools.trace import WireTracer

log = logging.getLogger("rawws.server")

RECV_SIZE = 256 * 1024
ACCEPT_RETRY_DELAY = 0.1
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 10_000
OVERLOAD_RETRY_AFTER = 5   # seconds, the 503's Retry-After (RFC 9110 §10.2.3)
# Sent as is, without reading the request, to a connection past max_connections.
OVERLOAD_RESPONSE = refusal_response(HTTPError(503, "server busy: too many connections",
                                               [("Retry-After", str(OVERLOAD_RETRY_AFTER))]))


class WebSocketApp:
    """What an application implements; the defaults accept any subprotocol-less client."""

    subprotocols: tuple[str, ...] = ()
    subprotocol_required: bool = False
    # Origins accepted besides the server's own (see rawws.origin.OriginPolicy);
    # None: only the server's own, or no Origin header; {"*"}: any origin.
    allowed_origins: Iterable[str] | None = None

    def check_origin(self, origin: str | None, request: Request) -> bool:
        """Accept or refuse (403) the handshake's Origin (RFC 6455 §10.2)."""
        policy = OriginPolicy(self.allowed_origins)
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


class WebSocket:
    """The application's handle on one open WebSocket connection."""

    __slots__ = ("_conn", "_ws", "request", "path", "subprotocol", "remote", "data")

    def __init__(self, conn: _Connection, ws: WebSocketConnection, request: Request,
                 subprotocol: str | None) -> None:
        self._conn = conn
        self._ws = ws
        self.request = request
        self.path = request.target
        self.subprotocol = subprotocol
        self.remote = conn.remote
        self.data: dict = {}   # for the application's own per-connection state

    @property
    def open(self) -> bool:
        return self._ws.state is State.OPEN

    @property
    def compression(self) -> DeflateParams | None:
        """The permessage-deflate parameters agreed with this peer, or None."""
        deflate = self._ws.deflate
        return deflate.params if deflate is not None else None

    @property
    def shared_deflate_bits(self) -> int | None:
        """For broadcasts: the window size when a frame from `rawws.deflate.compress_once`
        may be sent to this peer (permessage-deflate without server context
        takeover), else None: then send uncompressed frame bytes, which every
        peer accepts (RFC 7692 §6)."""
        deflate = self._ws.deflate
        return deflate.shared_window_bits if deflate is not None else None

    # Each send returns False, and does nothing, once the connection is no
    # longer open: an application never has to catch a send to a closing peer.

    def send_text(self, text: str) -> bool:
        """Queue a text message."""
        if self._ws.state is not State.OPEN:
            return False
        self._ws.send_text(text)
        self._conn.output_ready()
        return True

    def send_binary(self, data: bytes) -> bool:
        if self._ws.state is not State.OPEN:
            return False
        self._ws.send_binary(data)
        self._conn.output_ready()
        return True

    def send_frame_bytes(self, frame: bytes) -> bool:
        """Queue an already-encoded frame: a broadcast encodes once for all (hot path)."""
        ws = self._ws
        if ws.state is not State.OPEN:
            return False
        ws.send_frame_bytes(frame)
        conn = self._conn
        if not conn.dirty:   # the first frame for it this loop turn: flush it then
            conn.output_ready()
        return True

    def ping(self, payload: bytes = b"") -> bool:
        if self._ws.state is not State.OPEN:
            return False
        self._ws.send_ping(payload)
        self._conn.output_ready()
        return True

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Start the closing handshake; on_close follows when it completes."""
        self._conn.close_websocket(code, reason)


class _Connection:
    """One accepted socket: HTTP first, maybe a WebSocket after an upgrade."""

    def __init__(self, server: Server, sock: socket.socket, remote: tuple) -> None:
        self.server = server
        self.sock = sock
        self.remote = remote
        self.http: RequestParser | None = RequestParser(max_header_bytes=server.max_header_bytes)
        self.ws: WebSocketConnection | None = None
        self.handle: WebSocket | None = None
        self.out = SendQueue()   # what the socket has not taken yet
        self.events = EVENT_READ
        self.close_after_flush = False  # HTTP: answer sent, connection done
        self.draining = False           # write side shut, waiting for the peer's EOF
        self.peer_eof = False           # the peer's EOF came while our output was pending
        self.http_backlog = False       # pipelined requests wait until our output drains
        self.closed = False
        self.app_closed = False         # on_close has been called
        self.dirty = False
        # HTTP: no complete request head within handshake_timeout (slowloris,
        # or idle keep-alive) ends the connection.
        self.http_deadline = time.monotonic() + server.handshake_timeout
        self.timer: Timer | None = server.loop.call_later(server.handshake_timeout,
                                                          self.on_http_timeout)
        self.ping_timer: Timer | None = None
        self.awaiting_pong = False
        # --trace: sees every byte as it crosses the socket (rawws.tools.trace); None costs one test.
        self.tap = (server.tracer.tap(f"accepted from {remote[0]}:{remote[1]}", role="server")
                    if server.tracer is not None else None)

    # ---- reading ----------------------------------------------------------

    def on_ready(self, mask: int) -> None:
        if mask & EVENT_WRITE:
            self.write_out()
        if mask & EVENT_READ and not self.closed:
            self.read_in()

    def read_in(self) -> None:
        server = self.server
        try:
            count = self.sock.recv_into(server.read_buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            count = 0   # a reset is an end of stream like any other
        # A view on the shared read buffer, valid until the next read: the
        # parsers and the tap copy what they keep of it.
        data = server.read_view[:count]
        if self.tap is not None:
            self.tap.incoming(data)
        if self.draining:
            if not data:
                self.teardown()
            return
        if not data:
            self.on_peer_eof()
        if self.ws is not None:
            self.receive_websocket(data)
        elif data:
            self.receive_http(data)

    def on_peer_eof(self) -> None:
        """The peer has half-closed: stop reading, and give our pending output
        linger_timeout to go out (a socket at EOF stays readable, so reading
        on would spin)."""
        self.peer_eof = True
        if self.ws is None:
            self.close_after_flush = True
            if not self.out.size:
                self.teardown()
                return
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.server.loop.call_later(self.server.linger_timeout, self.teardown)
        self.update_interest()

    def receive_http(self, data: bytes) -> None:
        if self.close_after_flush:
            return   # the last answer is out: what else the peer sends is dropped, not buffered
        parser = self.http
        parser.feed(data)
        while self.ws is None and not self.close_after_flush:
            if self.out.size > self.server.read_pause_bytes:
                # Backpressure for pipelining: leave further requests in the
                # parser until write_out() has drained our answers.
                self.http_backlog = True
                return
            try:
                request = parser.next_request()
            except HTTPError as error:
                self.send_http_error(error)
                return
            if request is None:
                return
            try:
                # A HEAD is never an upgrade: it is answered like a GET, without a body.
                if request.method != "HEAD" and is_upgrade_request(request):
                    self.upgrade(request)
                else:
                    self.serve_file(request)
            except Exception:   # a bug, in rawws or the app: this client gets a 500, no one else notices
                log.exception("error answering %s %s", request.method, request.target)
                if self.ws is None:
                    self.send_http_error(HTTPError(500, "internal server error"))
                return

    def serve_file(self, request: Request) -> None:
        status, headers, body = self.server.files.respond(request)
        keep_alive = request.keep_alive and not request.has_body
        if not keep_alive:
            headers = headers + [("Connection", "close")]
            self.close_after_flush = True
        log.debug("%s %s %s -> %d", self.remote[0], request.method, request.target, status)
        self.write(format_response(status, headers, body))
        self.http_deadline = time.monotonic() + self.server.handshake_timeout

    def send_http_error(self, error: HTTPError) -> None:
        self.write(refusal_response(error, error.reason or "error"))
        self.close_after_flush = True

    def upgrade(self, request: Request) -> None:
        app = self.server.app
        body = None
        try:
            key = validate_request(request)
            origin = request.headers.get("Origin")
            if not app.check_origin(origin, request):
                raise HandshakeError(403, f"origin {origin} is not allowed")
            subprotocol = app.select_subprotocol(offered_subprotocols(request), request)
            if subprotocol is None and app.subprotocol_required:
                body = app.subprotocol_refusal()
                raise HandshakeError(400, "no supported subprotocol offered")
            agreed = None
            if self.server.compression is not None:
                # RFC 7692 §5: the first permessage-deflate offer we can honour, if any.
                agreed = server_accept(request.headers.get_all("Sec-WebSocket-Extensions"),
                                       self.server.compression)
        except HandshakeError as error:
            log.info("%s:%s handshake refused: %d %s", *self.remote[:2], error.status, error.reason)
            self.write(refusal_response(error, body))
            self.close_after_flush = True
            return
        extension_headers = []
        deflate = None
        if agreed is not None:
            params, answer = agreed
            extension_headers.append(("Sec-WebSocket-Extensions", answer))
            deflate = PerMessageDeflate(params, is_server=True, options=self.server.compression)
        self.write(accept_response(key, subprotocol, extension_headers))
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        server = self.server
        self.ws = WebSocketConnection(Role.SERVER, max_message_size=server.max_message_size,
                                      max_frame_size=server.max_frame_size, deflate=deflate)
        leftover = self.http.leftover()
        self.http = None
        self.handle = WebSocket(self, self.ws, request, subprotocol)
        log.debug("%s:%s WebSocket open on %s (subprotocol %s)", *self.remote[:2],
                 request.target, subprotocol)
        self.call_app(app.on_open, self.handle)
        self.schedule_ping()
        if leftover:
            self.receive_websocket(leftover)

    # ---- WebSocket ----------------------------------------------------------

    def receive_websocket(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        app = self.server.app
        for event in ws.events():
            kind = type(event)
            if kind is TextMessage or kind is BinaryMessage:
                # Delivered even if a Close came in the same read: it came first.
                self.call_app(app.on_message, self.handle, event.data)
            elif kind is Pong:
                self.awaiting_pong = False
        ws.events_handled()   # a bad frame after those messages fails the connection now
        if ws.failure is not None and not self.app_closed:
            log.info("%s:%s failed: %d %s", *self.remote[:2], ws.close_sent, ws.failure.reason)
        self.output_ready()
        if ws.state is State.CLOSED:
            self.finish_websocket()

    def call_app(self, callback: Callable, *args: object) -> None:
        """Run application code; its exception closes this connection (1011), nothing more."""
        try:
            callback(*args)
        except Exception:
            log.exception("application error on %s:%s", *self.remote[:2])
            self.close_websocket(CLOSE_INTERNAL_ERROR, "internal error")   # no-op once closed

    def close_websocket(self, code: int, reason: str) -> None:
        ws = self.ws
        if ws is None or ws.state is not State.OPEN:
            return
        ws.close(code, reason)
        self.output_ready()
        # §7.1.1 and §7.1.7: don't wait forever for the peer's Close.
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.server.loop.call_later(self.server.close_timeout, self.on_close_timeout)

    def finish_websocket(self) -> None:
        """The WebSocket is CLOSED: tell the application once, then close TCP."""
        if not self.app_closed:
            self.app_closed = True
            ws = self.ws
            log.debug("%s:%s WebSocket closed: code %d%s", *self.remote[:2], ws.close_code,
                     f" ({ws.close_reason})" if ws.close_reason else "")
            self.call_app(self.server.app.on_close, self.handle, ws.close_code, ws.close_reason)
        self.close_after_flush = True
        self.output_ready()

    def schedule_ping(self) -> None:
        interval = self.server.ping_interval
        if interval:
            self.ping_timer = self.server.loop.call_later(interval, self.on_ping_timer)

    def on_ping_timer(self) -> None:
        ws = self.ws
        if self.closed or ws is None or ws.state is not State.OPEN:
            return
        if self.awaiting_pong:
            log.info("%s:%s keepalive timeout", *self.remote[:2])
            self.close_websocket(CLOSE_INTERNAL_ERROR, "keepalive ping timeout")
            return
        self.awaiting_pong = True
        ws.send_ping(b"keepalive")
        self.output_ready()
        self.ping_timer = self.server.loop.call_later(self.server.ping_timeout,
                                                      self.on_pong_deadline)

    def on_pong_deadline(self) -> None:
        """No Pong by now ends the connection (1011); else ping again after the
        rest of the interval."""
        ws = self.ws
        if self.closed or ws is None or ws.state is not State.OPEN:
            return
        if self.awaiting_pong:
            self.on_ping_timer()   # closes with 1011
            return
        rest = max(0.0, self.server.ping_interval - self.server.ping_timeout)
        self.ping_timer = self.server.loop.call_later(rest, self.on_ping_timer)

    def on_close_timeout(self) -> None:
        self.timer = None
        if self.ws is not None and not self.closed:
            log.info("%s:%s close timeout", *self.remote[:2])
            self.teardown()

    def on_http_timeout(self) -> None:
        """One timer per HTTP connection: re-armed while requests keep coming."""
        self.timer = None
        if self.ws is not None or self.closed:
            return
        remaining = self.http_deadline - time.monotonic()
        if remaining > 0:
            self.timer = self.server.loop.call_later(remaining, self.on_http_timeout)
        else:
            self.teardown()

    # ---- writing ----------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.out.append(data)
        self.output_ready()

    def output_ready(self) -> None:
        """Mark for flushing after this loop iteration (batches many sends into one)."""
        if not self.dirty and not self.closed:
            self.dirty = True
            self.server.dirty.append(self)

    def flush(self) -> None:
        """Move the protocol's output to the socket, queueing what the kernel won't take."""
        self.dirty = False
        if self.closed:
            return
        pieces = self.ws.buffers_to_send() if self.ws is not None else []
        out = self.out
        if self.events & EVENT_WRITE:
            # A write is already waiting for the socket: queue behind it, and
            # check the limits now, since a peer that never reads never makes
            # the socket writable again.
            out.extend(pieces)
            self.after_write()
        elif len(pieces) == 1 and not out.size:
            # The usual case: one frame, nothing queued, so send it directly
            # and queue only the part the kernel did not take.
            sent = self.send_some(pieces)
            if sent < 0:
                return
            data = pieces[0]
            if sent < len(data):
                out.append(memoryview(data)[sent:])
            self.after_write()
        else:
            out.extend(pieces)
            self.write_out()

    def send_some(self, pieces: list[bytes | bytearray | memoryview]) -> int:
        """Send what the kernel takes of `pieces` now, in one write (vectored
        when there are several): the count, or -1 when the connection broke
        (it is torn down)."""
        try:
            sent = (self.sock.send(pieces[0]) if len(pieces) == 1
                    else self.sock.sendmsg(pieces))
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            self.teardown()
            return -1
        if self.tap is not None:
            self.tap.outgoing((pieces[0] if len(pieces) == 1 else b"".join(pieces))[:sent])
        return sent

    def write_out(self) -> None:
        """Send what is queued (the socket is writable, or may be), in one
        vectored write when there are several pieces."""
        out = self.out
        if out.size:
            sent = self.send_some(out.head())
            if sent < 0:
                return
            out.consume(sent)
            if sent and self.ws is None:
                # A file going out to a slow reader: the handshake timeout
                # counts from its last progress, not from the request.
                self.http_deadline = time.monotonic() + self.server.handshake_timeout
        self.after_write()

    def after_write(self) -> None:
        """Act on what is left queued: resume pipelined requests, drop a
        peer that reads nothing, half-close when done, set socket interest."""
        out = self.out
        if self.http_backlog and out.size <= self.server.read_pause_bytes and self.http is not None:
            self.http_backlog = False   # drained: answer the pipelined requests left waiting
            self.receive_http(b"")
            if self.closed:
                return
        # WebSockets only: an HTTP answer (a file) is bounded by max_file_size
        # and by the pipelining pause, and a peer that never reads it meets
        # the handshake timeout.
        if out.size > self.server.max_write_buffer and self.ws is not None:
            log.warning("%s:%s dropped: %d bytes unread by the peer", *self.remote[:2], out.size)
            self.teardown()
            return
        if not out.size and self.close_after_flush and not self.draining:
            self.start_draining()
        self.update_interest()

    def update_interest(self) -> None:
        if self.closed:
            return
        paused = self.out.size > self.server.read_pause_bytes and not self.draining
        # Paused implies output pending, so some event is always wanted (after
        # the peer's EOF too: with no output left, write_out has closed).
        paused = paused or self.peer_eof
        events = (0 if paused else EVENT_READ) | (EVENT_WRITE if self.out.size else 0)
        if events != self.events:
            self.events = events
            self.server.loop.modify(self.sock, events, self.on_ready)

    def start_draining(self) -> None:
        """Half-close and read until the peer's EOF, so our last bytes aren't lost to a RST."""
        if self.peer_eof:   # the peer's EOF came already: nothing left to wait for
            self.teardown()
            return
        self.draining = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.teardown()
            return
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.server.loop.call_later(self.server.linger_timeout, self.teardown)

    def teardown(self) -> None:
        """Close the socket now; a WebSocket not yet closed ends with 1006 (§7.1.5)."""
        if self.closed:
            return
        if self.ws is not None and not self.app_closed:
            self.ws.abort()
            self.finish_websocket()
        self.closed = True
        for timer in (self.timer, self.ping_timer):
            if timer is not None:
                timer.cancel()
        self.server.loop.unregister(self.sock)
        self.server.connections.discard(self)
        try:
            self.sock.close()
        except OSError:
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
                 http_timeout: float | None = None,
                 linger_timeout: float = 2.0,
                 read_pause_bytes: int = 1024 * 1024,
                 max_write_buffer: int | None = None,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 compression: DeflateOptions | None = DeflateOptions(),
                 backlog: int = 1024, tracer: WireTracer | None = None) -> None:
        self.app = app
        self.tracer = tracer   # --trace: print every byte in and out (rawws.tools.trace)
        # permessage-deflate (RFC 7692) for clients that offer it; None turns it off.
        self.compression = compression
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        self.max_header_bytes = max_header_bytes
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        # http_timeout: the option's older name, still accepted.
        self.handshake_timeout = http_timeout if http_timeout is not None else handshake_timeout
        self.max_connections = max_connections
        self.refused = 0   # connections refused past max_connections, ever
        self._refusal_logged = 0.0
        self.linger_timeout = linger_timeout
        self.read_pause_bytes = read_pause_bytes
        # Room for an echo of the largest message plus slack.
        self.max_write_buffer = max_write_buffer or max(64 * 1024 * 1024, 4 * max_message_size)
        self.files = StaticFiles(web_root) if web_root is not None else _NoFiles()
        self.loop = EventLoop()
        self.connections: set[_Connection] = set()
        self.dirty: list[_Connection] = []
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
        return [conn.handle for conn in self.connections
                if conn.handle is not None and not conn.app_closed]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

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
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock, remote)
            self.connections.add(conn)
            self.loop.register(sock, EVENT_READ, conn.on_ready)

    def _refuse(self, sock: socket.socket) -> None:
        """Past max_connections: a fixed 503, then close; costs no state or timer."""
        self.refused += 1
        try:
            sock.setblocking(False)
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
            if conn.ws is None:
                conn.teardown()
            else:
                conn.close_websocket(CLOSE_GOING_AWAY, "server shutting down")
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
