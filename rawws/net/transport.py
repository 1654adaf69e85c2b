"""One accepted socket: the bytes in and out, whatever protocol it carries.

A `Transport` owns the socket, the queue of output the kernel has not taken,
the selector interest and the end of the connection. What the bytes mean is
its `session`'s business: an `HTTPSession` first, swapped for a
`WebSocketSession` by a 101 (rawws.net.http_session, rawws.net.ws_session).
A session reads what the transport gives it and leaves output for
`flush()`; it never touches the socket. `TLSTransport` (rawws.net.tls) is
this over an SSL socket: the handshake first, then the same sessions.

The end of a connection, every state change as one line of `TRANSITIONS`
(tests/test_transport.py checks the diagram against the table):

    OPEN        --peer_eof-->  PEER_ENDED   the peer half-closed: stop reading, finish writing
    OPEN        --finish-->    DRAINING     the session is done and its output is out:
                                            shut our write side, read until the peer's EOF
    PEER_ENDED  --finish-->    CLOSED
    DRAINING    --peer_eof-->  CLOSED
    OPEN        --teardown-->  CLOSED       an error, a timeout, a peer that reads nothing
    PEER_ENDED  --teardown-->  CLOSED
    DRAINING    --teardown-->  CLOSED

PEER_ENDED and DRAINING last at most `linger_timeout` seconds (RFC 9112
§9.6: half-close, then read, so our last bytes are not lost to a reset).

Backpressure: while more than `read_pause_bytes` wait to be sent, the
socket is not read, so a peer that never reads cannot make us queue
answers without bound; a session may set a hard cap (`max_queued`) past
which the peer is dropped.

The server's memory budget (rawws.budget): whenever the queue's size
changes, the change is charged to `server.budget` (`charged` is what this
transport counts there now), and given back when the socket is closed.
Past the budget the server sheds the biggest queues first (`Server.shed`).
"""
from __future__ import annotations

import socket
import time
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from ..tools.trace import ConnectionTap
from .loop import EVENT_READ, EVENT_WRITE, Timer
from .sendqueue import SendQueue

if TYPE_CHECKING:
    from .server import Server


class TransportState(Enum):
    OPEN = "open"
    PEER_ENDED = "peer_ended"   # the peer's EOF came; our output may still be going out
    DRAINING = "draining"       # our write side is shut; waiting for the peer's EOF
    CLOSED = "closed"


# The states by their own names for the per-read and per-write paths (on
# Python 3.11 an enum member looked up on its class costs ~60 ns; see
# rawws.protocol.OPEN).
OPEN = TransportState.OPEN
PEER_ENDED = TransportState.PEER_ENDED
DRAINING = TransportState.DRAINING
CLOSED = TransportState.CLOSED


class Cause(Enum):
    PEER_EOF = "peer_eof"
    FINISH = "finish"
    TEARDOWN = "teardown"


TRANSITIONS: dict[tuple[TransportState, Cause], TransportState] = {
    (TransportState.OPEN, Cause.PEER_EOF): TransportState.PEER_ENDED,
    (TransportState.OPEN, Cause.FINISH): TransportState.DRAINING,
    (TransportState.PEER_ENDED, Cause.FINISH): TransportState.CLOSED,
    (TransportState.DRAINING, Cause.PEER_EOF): TransportState.CLOSED,
    (TransportState.OPEN, Cause.TEARDOWN): TransportState.CLOSED,
    (TransportState.PEER_ENDED, Cause.TEARDOWN): TransportState.CLOSED,
    (TransportState.DRAINING, Cause.TEARDOWN): TransportState.CLOSED,
}


class Session(Protocol):
    """What a transport asks of the protocol it carries."""

    max_queued: int | None   # unsent bytes past which the peer is dropped; None: no cap

    def receive(self, data: memoryview) -> None:
        """Bytes from the peer, valid until the next read; b"" is its EOF."""

    def output(self, join: bool = True) -> list:
        """Pieces the session has queued for the peer since the last call;
        join=False: as they were made, not joined into one (they will wait in
        the send queue, where a broadcast's shared frame had better stay shared)."""

    # Called when output moved on, with the bytes still waiting; None: not needed.
    after_write: Callable[[int], None] | None

    def closed(self) -> None:
        """The socket is closed: stop the session's timers, tell the application."""


class Transport:
    """One socket: reads into its session, writes what the session queued."""

    def __init__(self, server: Server, sock: socket.socket, remote: tuple) -> None:
        self.server = server
        self.loop = server.loop
        self.sock = sock
        self.remote = remote
        self.state = OPEN
        self.out = SendQueue()   # what the socket has not taken yet
        self.charged = 0         # out.size as last charged to server.budget
        # When the peer last took queued bytes, or the queue formed: a peer
        # whose queue has not shrunk for long is one that does not read (Server.shed).
        self.read_at = 0.0
        self.events = EVENT_READ
        self.finishing = False   # the session is done: close once the output is out
        # Listed in server.dirty, to be flushed after this loop turn (or in a
        # read its session handles, which flushes when it is done).
        self.dirty = False
        self.linger_timer: Timer | None = None
        # --trace: sees every byte as it crosses the socket (rawws.tools.trace); None costs one test.
        self.tap: ConnectionTap | None = (
            server.tracer.tap(f"accepted from {remote[0]}:{remote[1]}", role="server")
            if server.tracer is not None else None)
        self.session: Session = server.new_session(self)

    @property
    def closed(self) -> bool:
        return self.state is CLOSED

    def _move(self, cause: Cause) -> TransportState:
        self.state = TRANSITIONS.get((self.state, cause), self.state)
        return self.state

    # ---- reading ----------------------------------------------------------

    def on_ready(self, mask: int) -> None:
        """The socket is ready: write what waits, then read what came."""
        if mask & EVENT_WRITE:
            self.write_out()
            if self.state is CLOSED:
                return
        if mask & EVENT_READ:
            server = self.server
            try:
                count = self.sock.recv_into(server.read_buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                count = 0   # a reset is an end of stream like any other
            # A view on the shared read buffer, valid until the next read: the
            # parsers and the tap copy what they keep of it.
            if count and self.state is OPEN and self.tap is None:
                self.session.receive(server.read_view[:count])   # as received() would (hot path)
            else:
                self.received(server.read_view[:count])

    def received(self, data: memoryview) -> None:
        """Bytes read from the peer (b"" at its end), to the session or, while
        draining, nowhere."""
        count = len(data)
        if self.tap is not None:
            self.tap.incoming(data)
        if self.state is DRAINING:
            if not count:
                self._move(Cause.PEER_EOF)
                self._release()
            return
        if not count:
            self.on_peer_eof()
        self.session.receive(data)

    def on_peer_eof(self) -> None:
        """The peer has half-closed: stop reading (a socket at EOF stays readable,
        so reading on would spin) and give our output linger_timeout to go out."""
        self._move(Cause.PEER_EOF)
        self._start_linger()
        self.update_interest()

    # ---- writing ----------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue bytes the session made itself (an HTTP answer) and flush them soon."""
        self.out.append(data)
        self.output_ready()

    def output_ready(self) -> None:
        """Mark for flushing after this loop iteration (batches many sends into one)."""
        if not self.dirty and self.state is not CLOSED:
            self.dirty = True
            self.server.dirty.append(self)

    def flush(self) -> None:
        """Move the session's output to the socket, queueing what the kernel won't take."""
        self.dirty = False
        if self.state is CLOSED:
            return
        out = self.out
        if self.events & EVENT_WRITE:
            # A write is already waiting for the socket: queue behind it, and
            # check the limits now, since a peer that never reads never makes
            # the socket writable again. The pieces are queued as they were
            # made: a broadcast's frame stays one object shared by every queue.
            out.extend(self.session.output(False))
            self.after_write()
            return
        pieces = self.session.output()
        if not pieces and not out.size and not self.finishing:
            return   # nothing to do (flushed already, at the end of a read)
        if len(pieces) == 1 and not out.size:
            # The usual case: one frame, nothing queued, so send it directly
            # and queue only the part the kernel did not take.
            data = pieces[0]
            try:   # as send_some does, without a call (hot path)
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.teardown()
                return
            if self.tap is not None:
                self.tap.outgoing(data[:sent])
            if sent < len(data):
                out.append(memoryview(data)[sent:])
            elif (self.events == EVENT_READ and not self.charged and not self.finishing
                  and self.session.after_write is None and self.state is OPEN):
                return   # all sent, nothing queued, nothing to change (hot path)
            self.after_write()
        else:
            out.extend(pieces)
            self.write_out()

    def send_some(self, pieces: list[bytes | bytearray | memoryview]) -> int:
        """Send what the kernel takes of `pieces` now, in one write (vectored
        when there are several): the count, or -1 when the connection broke
        (it is torn down)."""
        single = len(pieces) == 1
        try:
            sent = self.sock.send(pieces[0]) if single else self.sock.sendmsg(pieces)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            self.teardown()
            return -1
        if self.tap is not None:
            self.tap.outgoing((pieces[0] if single else b"".join(pieces))[:sent])
        return sent

    def write_out(self) -> None:
        """Send what is queued (the socket is writable, or may be)."""
        out = self.out
        if out.size:
            sent = self.send_some(out.head())
            if sent < 0:
                return
            out.consume(sent)
        self.after_write()

    def after_write(self) -> None:
        """Let the session act on what is left queued, drop a peer that reads
        nothing, close once finished, set socket interest."""
        out = self.out
        session = self.session
        if session.after_write is not None:
            session.after_write(out.size)
            if self.state is CLOSED:
                return
        size = out.size
        if size != self.charged:
            # The queue grew or shrank: the budget hears the change (one
            # test when nothing is queued, the usual case).
            self.charge_queue(size)
            if self.state is CLOSED:   # shed, for the budget
                return
        limit = session.max_queued
        if limit is not None and size > limit:
            self.server.log.warning("%s:%s dropped: %d bytes unread by the peer",
                                    *self.remote[:2], size)
            self.teardown()
            return
        if not size and self.finishing:
            self._finish()
            if self.state is CLOSED:
                return
        self.update_interest()

    def charge_queue(self, size: int) -> None:
        """Charge the change of the queue's size to the server's budget; past
        its limit, the server sheds (this connection too, if it is the one)."""
        server = self.server
        budget = server.budget
        charged = self.charged
        if size < charged or not charged:   # the peer took some, or the queue forms now
            self.read_at = time.monotonic()
        budget.used += size - charged
        self.charged = size
        if budget.used > server.shed_at:
            server.over_budget()

    def update_interest(self) -> None:
        state = self.state
        if state is CLOSED:
            return
        size = self.out.size
        if state is OPEN:
            reading = size <= self.server.read_pause_bytes
        else:
            # PEER_ENDED: nothing more to read. DRAINING: read until the EOF.
            reading = state is DRAINING
        events = (EVENT_READ if reading else 0) | (EVENT_WRITE if size else 0)
        if events != self.events:
            self.events = events
            self.loop.modify(self.sock, events, self.on_ready)

    # ---- the end ------------------------------------------------------------

    def close_when_flushed(self) -> None:
        """The session is done: once its output is out, half-close and drain (or close)."""
        self.finishing = True
        self.output_ready()

    def _finish(self) -> None:
        if self._move(Cause.FINISH) is CLOSED:   # the peer's EOF came already
            self._release()
            return
        try:
            self.shut_write()
        except OSError:
            self.teardown()
            return
        self._start_linger()

    def shut_write(self) -> None:
        """Our side is done: send TCP's FIN (TLS sends its close_notify first)."""
        self.sock.shutdown(socket.SHUT_WR)

    def _start_linger(self) -> None:
        if self.linger_timer is None:
            self.linger_timer = self.loop.call_later(self.server.linger_timeout, self.teardown)

    def teardown(self) -> None:
        """Close the socket now and tell the session."""
        if self.state is not CLOSED:
            self._move(Cause.TEARDOWN)
            self._release()

    def _release(self) -> None:
        """The connection is CLOSED: tell the session, free the socket and the timer."""
        self.session.closed()
        if self.linger_timer is not None:
            self.linger_timer.cancel()
        self.loop.unregister(self.sock)
        self.server.connections.discard(self)
        # What it queued will never be sent: let it go, and out of the budget.
        if self.charged:
            self.server.budget.used -= self.charged
            self.charged = 0
        self.out = SendQueue()
        try:
            self.sock.close()
        except OSError:
            pass
