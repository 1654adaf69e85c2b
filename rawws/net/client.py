"""A blocking WebSocket client for scripts and tests.

    with connect("ws://127.0.0.1:9001/", subprotocols=["chat"]) as ws:
        ws.send_text("hello")
        print(ws.recv(timeout=5))

It runs the same sans-IO `WebSocketConnection` as the server, in the client
role (frames masked, §5.3), over one blocking socket. Pings from the server
are answered while `recv()` waits.
"""
from __future__ import annotations

import socket
import time
from collections import deque
from urllib.parse import urlsplit

from ..close import CLOSE_NORMAL
from ..deflate import DeflateOptions, PerMessageDeflate, client_check, client_offer
from ..errors import ConnectionClosed, HandshakeError
from ..handshake import build_request, check_response, make_key
from ..http import find_head_end, parse_response_head, Response
from ..origin import DEFAULT_PORTS
from ..protocol import (BinaryMessage, Event, Pong, Role, State, TextMessage,
                       WebSocketConnection)
from .sendqueue import SendQueue
from ..tools.trace import ConnectionTap, WireTracer

# Each recv() makes a fresh bytes object of this size: kept under glibc's
# 128 KiB mmap threshold, it comes from the heap, where a bigger one would
# cost an mmap and page faults on every read (docs/performance.md).
RECV_SIZE = 64 * 1024
MAX_RESPONSE_HEAD = 64 * 1024


class ClientConnection:
    """An open client connection; made by `connect()`."""

    def __init__(self, sock: socket.socket, protocol: WebSocketConnection,
                 response: Response, subprotocol: str | None, leftover: bytes,
                 tap: ConnectionTap | None = None) -> None:
        self.sock = sock
        self.tap = tap   # --trace (rawws.tools.trace): sees every byte sent and received
        self.protocol = protocol
        self.response = response
        self.subprotocol = subprotocol
        # The permessage-deflate parameters agreed, or None.
        self.compression = protocol.deflate.params if protocol.deflate is not None else None
        self._events: deque[Event] = deque()
        self._eof = False
        if leftover:
            self._receive(leftover)

    # ---- receiving ---------------------------------------------------

    def _receive(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        self._events.extend(self.protocol.events())
        self._flush()
        if not data:
            self._eof = True

    def recv_event(self, timeout: float | None = None) -> Event:
        """The next event of any kind (messages, Ping, Pong, CloseReceived).

        Raises TimeoutError if none comes within `timeout` seconds, and
        ConnectionClosed once the connection is closed and no events remain.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._events:
            # Every event handed out: a protocol error that came after them
            # fails the connection now, after the caller's replies to them.
            self.protocol.events_handled()
            self._flush()
            if self._eof or self.protocol.state is State.CLOSED:
                # §7.1.1: both Close frames have crossed, so the client may
                # close TCP now; waiting for the server's FIN gains nothing.
                self._close_transport()
                raise ConnectionClosed(self.protocol.close_code, self.protocol.close_reason)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("no WebSocket event before the timeout")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(RECV_SIZE)
            except socket.timeout:
                raise TimeoutError("no WebSocket event before the timeout") from None
            except OSError:
                data = b""
            if self.tap is not None:
                self.tap.incoming(data)
            self._receive(data)
        return self._events.popleft()

    def recv(self, timeout: float | None = None) -> str | bytes:
        """The next text (str) or binary (bytes) message; control frames are handled here."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            event = self.recv_event(remaining)
            if isinstance(event, (TextMessage, BinaryMessage)):
                return event.data

    # ---- sending -----------------------------------------------------

    def _flush(self) -> None:
        pieces = self.protocol.buffers_to_send()
        if not pieces:
            return
        try:
            self.sock.settimeout(None)
            # A big frame's header and payload go in vectored writes, not joined.
            queue = SendQueue()
            queue.extend(pieces)
            while queue.size:
                queue.consume(self.sock.sendmsg(queue.head()))
        except OSError:
            self.protocol.abort()
            return
        if self.tap is not None:
            self.tap.outgoing(b"".join(pieces))

    def send_text(self, text: str) -> None:
        self.protocol.send_text(text)
        self._flush()

    def send_binary(self, data: bytes) -> None:
        self.protocol.send_binary(data)
        self._flush()

    def send(self, message: str | bytes) -> None:
        """Send a text message for str, a binary one for bytes."""
        if isinstance(message, str):
            self.send_text(message)
        else:
            self.send_binary(message)

    def send_fragment(self, data: str | bytes, *, fin: bool) -> None:
        """Stream a message in pieces; see `WebSocketConnection.send_fragment`."""
        self.protocol.send_fragment(data, fin=fin)
        self._flush()

    def ping(self, payload: bytes = b"", timeout: float | None = None) -> float | None:
        """Send a Ping; with a timeout, wait for its Pong and return the round trip in seconds.

        Messages that arrive while waiting are kept for `recv()`.
        """
        self.protocol.send_ping(payload)
        self._flush()
        if timeout is None:
            return None
        started = time.monotonic()
        deadline = started + timeout
        kept: list[Event] = []
        try:
            while True:
                event = self.recv_event(max(0.0, deadline - time.monotonic()))
                if isinstance(event, Pong) and event.payload == payload:
                    return time.monotonic() - started
                kept.append(event)
        finally:
            self._events.extendleft(reversed(kept))

    # ---- closing -----------------------------------------------------

    @property
    def close_code(self) -> int | None:
        return self.protocol.close_received

    @property
    def close_reason(self) -> str:
        return self.protocol.close_reason

    def close(self, code: int = CLOSE_NORMAL, reason: str = "", timeout: float = 5.0) -> None:
        """The closing handshake (§7.1.2): send Close, wait for the server's, then its EOF."""
        if self.protocol.state is State.OPEN:
            self.protocol.close(code, reason)
            self._flush()
        deadline = time.monotonic() + timeout
        try:
            while self.protocol.state is not State.CLOSED:
                try:
                    self.recv_event(max(0.0, deadline - time.monotonic()))
                except (ConnectionClosed, TimeoutError):
                    break
            # §7.1.1: the server closes TCP first; give it until the deadline.
            self._wait_eof(deadline)
        finally:
            self._close_transport()

    def _wait_eof(self, deadline: float) -> None:
        while not self._eof and self.sock.fileno() != -1:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(RECV_SIZE)
            except OSError:
                return
            if self.tap is not None:
                self.tap.incoming(data)
            if not data:
                self._eof = True

    def _close_transport(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> ClientConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(url: str, *, subprotocols: list[str] | tuple[str, ...] = (),
            origin: str | None = None, headers: list[tuple[str, str]] | None = None,
            timeout: float = 10.0, max_message_size: int = 16 * 1024 * 1024,
            compression: DeflateOptions | bool = False,
            trace: WireTracer | None = None) -> ClientConnection:
    """Open a WebSocket to a `ws://host[:port]/path` URL and perform the handshake.

    `compression`: True (or DeflateOptions) offers permessage-deflate (RFC
    7692); whether the server took it is in `.compression` afterwards.
    Raises HandshakeError (with the server's status) when the server refuses,
    or when its answer breaks what the client offered. `trace` prints every
    byte of the connection as it is sent and received (`rawws.tools.trace`).
    """
    options = DeflateOptions() if compression is True else (compression or None)
    parts = urlsplit(url)
    if parts.scheme != "ws":
        raise ValueError(f"only ws:// URLs are supported, not {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rsplit("@", 1)[-1]
    key = make_key()
    sock = socket.create_connection((parts.hostname, port), timeout=timeout)
    tap = None
    if trace is not None:
        here, there = sock.getsockname(), sock.getpeername()
        tap = trace.tap(f"connected to {there[0]}:{there[1]} from {here[0]}:{here[1]}",
                        role="client")
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = build_request(host_header, path, key, subprotocols=subprotocols,
                                origin=origin, extra_headers=headers or (),
                                extensions=client_offer(options) if options else None)
        sock.sendall(request)
        if tap is not None:
            tap.outgoing(request)
        buffer = bytearray()
        while (end := find_head_end(buffer)) == -1:
            if len(buffer) > MAX_RESPONSE_HEAD:
                raise HandshakeError(502, "response head too large")
            chunk = sock.recv(RECV_SIZE)
            if tap is not None:
                tap.incoming(chunk)
            if not chunk:
                raise HandshakeError(502, "connection closed during the handshake")
            buffer += chunk
        response = parse_response_head(bytes(buffer[:end]))
        subprotocol = check_response(response, key, subprotocols,
                                     extensions_offered=options is not None)
        deflate = None
        if options is not None:
            params = client_check(response.headers.get_all("Sec-WebSocket-Extensions"), options)
            if params is not None:
                deflate = PerMessageDeflate(params, is_server=False, options=options)
    except BaseException:
        sock.close()
        raise
    protocol = WebSocketConnection(Role.CLIENT, max_message_size=max_message_size,
                                   deflate=deflate)
    return ClientConnection(sock, protocol, response, subprotocol, bytes(buffer[end:]), tap)
