"""A blocking WebSocket client for scripts and tests.

    with connect("ws://127.0.0.1:9001/", subprotocols=["chat"]) as ws:
        ws.send_text("hello")
        print(ws.recv(timeout=5))

It runs the same sans-IO `WebSocketConnection` as the server, in the client
role (frames masked, §5.3), over one blocking socket. Pings from the server
are answered while `recv()` waits.

`wss://` URLs go over TLS (RFC 6455 §3, §4.1 step 5): the server's
certificate and host name are verified by default
(`ssl.create_default_context()`); `ssl_context=` gives another context, such
as `rawws.net.tls.client_context(cafile=...)` to trust a private CA.
"""
from __future__ import annotations

import socket
import ssl
import time
from collections import deque
from collections.abc import Iterator
from urllib.parse import urlsplit

from ..close import CLOSE_NORMAL
from ..deflate import DeflateOptions
from ..errors import ConnectionClosed, HandshakeError
from ..handshake import ClientHandshake
from ..http import find_head_end, parse_response_head, Response
from ..origin import DEFAULT_PORTS
from ..protocol import CLOSED, OPEN, BinaryMessage, Event, Pong, TextMessage, WebSocketConnection
from .sendqueue import SendQueue
from .tls import client_context
from ..tools.trace import ConnectionTap, WireTracer

# Each recv() makes a fresh bytes object of this size: kept under glibc's
# 128 KiB mmap threshold, it comes from the heap, where a bigger one would
# cost an mmap and page faults on every read (docs/performance.md).
RECV_SIZE = 64 * 1024
MAX_RESPONSE_HEAD = 64 * 1024
DEFAULT_CLOSE_TIMEOUT = 5.0   # seconds to wait for the server's TCP close (§7.1.1)
TLS_RECORD_SIZE = 16 * 1024   # the largest plaintext of one TLS record (RFC 8446 §5.1)


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
        self._kept: deque[Event] = deque()   # events read ahead by ping(), handed out first
        self._incoming: Iterator[Event] = iter(())
        self.close_timeout = DEFAULT_CLOSE_TIMEOUT
        if leftover:
            self._receive(leftover)

    # ---- receiving ---------------------------------------------------

    def _receive(self, data: bytes) -> None:
        """Feed what the socket gave (b"" at its end) and parse it as events are asked for."""
        self.protocol.receive_data(data)
        self._incoming = self.protocol.events()

    def recv_event(self, timeout: float | None = None) -> Event:
        """The next event of any kind (messages, Ping, Pong, CloseReceived).

        Raises TimeoutError if none comes within `timeout` seconds, and
        ConnectionClosed once the connection is closed and no events remain.
        Once both Close frames have crossed, it waits up to `close_timeout`
        for the server to close TCP (§7.1.1), then closes it itself.
        """
        if self._kept:
            return self._kept.popleft()
        protocol = self.protocol
        deadline = None if timeout is None else time.monotonic() + timeout
        closed_at = None
        while True:
            # One event at a time: a Close or a bad frame after this event is
            # answered only once the caller has replied to this one.
            event = next(self._incoming, None)
            self._flush()   # what the protocol answered by itself: a Pong, a Close
            if event is not None:
                return event
            if protocol.should_close_transport:
                self._close_transport()
                raise ConnectionClosed(protocol.close_code, protocol.close_reason)
            wait = None if deadline is None else deadline - time.monotonic()
            if protocol.state is CLOSED:
                # §7.1.1: the server closes TCP first; wait for it, but not forever.
                closed_at = closed_at or time.monotonic()
                left = closed_at + self.close_timeout - time.monotonic()
                if left <= 0:
                    protocol.abort()
                    continue
                wait = left if wait is None else min(wait, left)
            if wait is not None and wait <= 0 and not self._buffered():
                raise TimeoutError("no WebSocket event before the timeout")
            self.sock.settimeout(wait if wait is None or wait > 0 else 0.0)
            try:
                data = self.sock.recv(RECV_SIZE)
            except (socket.timeout, BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                if protocol.state is CLOSED:
                    continue    # the close timeout, checked above
                raise TimeoutError("no WebSocket event before the timeout") from None
            except OSError:
                data = b""
            if self.tap is not None:
                self.tap.incoming(data)
            self._receive(data)

    def _buffered(self) -> bool:
        """Bytes already read from the network that the socket will not report
        as readable: a TLS record decrypted but not yet taken."""
        sock = self.sock
        return isinstance(sock, ssl.SSLSocket) and sock.fileno() != -1 and sock.pending() > 0

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
            if isinstance(self.sock, ssl.SSLSocket):
                # No sendmsg over TLS: small frames joined into one record,
                # a big payload written as it is, after its header.
                if len(pieces) > 1 and sum(map(len, pieces)) <= TLS_RECORD_SIZE:
                    pieces = [b"".join(pieces)]
                for data in pieces:
                    self.sock.sendall(data)
            else:
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
            self._kept.extendleft(reversed(kept))

    # ---- closing -----------------------------------------------------

    @property
    def close_code(self) -> int | None:
        return self.protocol.close_received

    @property
    def close_reason(self) -> str:
        return self.protocol.close_reason

    def close(self, code: int = CLOSE_NORMAL, reason: str = "", timeout: float = 5.0) -> None:
        """The closing handshake (§7.1.2): send Close, read until the server's
        Close and its TCP close (`recv_event`), within `timeout` seconds."""
        if self.protocol.state is OPEN:
            self.protocol.close(code, reason)
            self._flush()
        deadline = time.monotonic() + timeout
        try:
            while self.sock.fileno() != -1:
                self.recv_event(max(0.0, deadline - time.monotonic()))
        except (ConnectionClosed, TimeoutError):
            pass
        finally:
            self._close_transport()

    def _close_transport(self) -> None:
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and sock.fileno() != -1:
            try:   # close_notify, best effort: not waiting for the server's
                sock.settimeout(0)
                sock.unwrap()
            except (OSError, ValueError):
                pass
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
            trace: WireTracer | None = None,
            ssl_context: ssl.SSLContext | None = None) -> ClientConnection:
    """Open a WebSocket to a `ws://` or `wss://host[:port]/path` URL and perform the handshake.

    For wss://, TLS first, verified with `ssl_context` (default:
    `ssl.create_default_context()`, which checks the certificate chain and
    that it names the URL's host); ssl.SSLCertVerificationError when it fails.

    `compression`: True (or DeflateOptions) offers permessage-deflate (RFC
    7692); whether the server took it is in `.compression` afterwards.
    Raises HandshakeError (with the server's status) when the server refuses,
    or when its answer breaks what the client offered. `trace` prints every
    byte of the connection as it is sent and received (`rawws.tools.trace`).
    """
    options = DeflateOptions() if compression is True else (compression or None)
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):   # §3: the two WebSocket schemes
        raise ValueError(f"only ws:// and wss:// URLs are supported, not {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rsplit("@", 1)[-1]
    # The handshake's rules are rawws.handshake's: here, only the bytes move.
    handshake = ClientHandshake(host_header, path, subprotocols=subprotocols, origin=origin,
                                headers=headers or (), compression=options,
                                max_message_size=max_message_size)
    sock = socket.create_connection((parts.hostname, port), timeout=timeout)
    if parts.scheme == "wss":
        if ssl_context is None:
            ssl_context = client_context()   # ssl.create_default_context(), ALPN http/1.1
        try:   # the handshake, under the connect timeout
            sock = ssl_context.wrap_socket(sock, server_hostname=parts.hostname)
        except BaseException:
            sock.close()
            raise
    tap = None
    if trace is not None:
        here, there = sock.getsockname(), sock.getpeername()
        tap = trace.tap(f"connected to {there[0]}:{there[1]} from {here[0]}:{here[1]}",
                        role="client")
        if isinstance(sock, ssl.SSLSocket):
            cipher = sock.cipher()
            trace.write(f"[{tap.name} ==]", [
                f"TLS handshake done: {sock.version()}, cipher {cipher[0] if cipher else '?'}; "
                "decrypted bytes from here on"])
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(handshake.request)
        if tap is not None:
            tap.outgoing(handshake.request)
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
        established = handshake.receive_response(response)
    except BaseException:
        sock.close()
        raise
    return ClientConnection(sock, established.connection, response, established.subprotocol,
                            bytes(buffer[end:]), tap)
