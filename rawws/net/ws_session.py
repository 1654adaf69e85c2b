"""A WebSocket on a transport, after the 101: the protocol, the app, two timers.

The sans-IO `WebSocketConnection` decides everything about frames and the
closing handshake; this session hands its events to the application,
gives its output to the transport, and runs what needs a clock: keepalive
pings (a Pong must come within `ping_timeout`) and the close timeout (the
peer's Close must come within `close_timeout` of ours, §7.1.1). It closes
the transport when the protocol's one rule, `should_close_transport`, says so.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..close import CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_NORMAL
from ..deflate import DeflateParams
from ..frames import OP_BINARY, OP_TEXT
from ..http import Request
from ..protocol import CLOSED, OPEN, BinaryMessage, Pong, TextMessage, WebSocketConnection
from .loop import Timer

if TYPE_CHECKING:
    from .transport import Transport

log = logging.getLogger("rawws.server")

KEEPALIVE_PAYLOAD = b"keepalive"


class WebSocket:
    """The application's handle on one open WebSocket connection."""

    __slots__ = ("_session", "_transport", "_ws", "request", "path", "subprotocol", "remote",
                 "shared_deflate_bits", "data")

    def __init__(self, session: WebSocketSession, request: Request,
                 subprotocol: str | None) -> None:
        self._session = session
        self._transport = session.transport
        self._ws = session.protocol
        self.request = request
        self.path = request.target
        self.subprotocol = subprotocol
        self.remote = session.transport.remote
        # For broadcasts (rawws.net.broadcast): the window size when a frame
        # compressed once for many may be sent to this peer (permessage-deflate
        # without server context takeover), else None: then it gets the plain
        # frame, which every peer accepts (RFC 7692 §6). Fixed by the handshake.
        deflate = self._ws.deflate
        self.shared_deflate_bits: int | None = (deflate.shared_window_bits
                                                if deflate is not None else None)
        self.data: dict = {}   # for the application's own per-connection state

    @property
    def open(self) -> bool:
        return self._ws.state is OPEN

    @property
    def compression(self) -> DeflateParams | None:
        """The permessage-deflate parameters agreed with this peer, or None."""
        deflate = self._ws.deflate
        return deflate.params if deflate is not None else None

    # Each send returns False, and does nothing, once the connection is no
    # longer open: an application never has to catch a send to a closing peer.

    def send_text(self, text: str) -> bool:
        """Queue a text message."""
        ws = self._ws
        if ws.state is not OPEN:
            return False
        ws.send_message(OP_TEXT, text.encode("utf-8"))   # as ws.send_text does (hot path)
        transport = self._transport
        if not transport.dirty:   # else it is flushed already this turn, or at the read's end
            transport.output_ready()
        return True

    def send_binary(self, data: bytes) -> bool:
        ws = self._ws
        if ws.state is not OPEN:
            return False
        ws.send_message(OP_BINARY, bytes(data))   # as ws.send_binary does (hot path)
        transport = self._transport
        if not transport.dirty:
            transport.output_ready()
        return True

    def send_frame_bytes(self, frame: bytes) -> bool:
        """Queue an already-encoded frame: a broadcast encodes once for all (hot path)."""
        ws = self._ws
        if ws.state is not OPEN:
            return False
        ws.send_frame_bytes(frame)
        transport = self._transport
        if not transport.dirty:   # the first frame for it this loop turn: flush it then
            transport.output_ready()
        return True

    def ping(self, payload: bytes = b"") -> bool:
        if self._ws.state is not OPEN:
            return False
        self._ws.send_ping(payload)
        self._transport.output_ready()
        return True

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Start the closing handshake; on_close follows when it completes."""
        self._session.close(code, reason)


class WebSocketSession:
    """One open WebSocket: protocol events to the app, its output to the transport."""

    def __init__(self, transport: Transport, protocol: WebSocketConnection, request: Request,
                 subprotocol: str | None) -> None:
        self.transport = transport
        self.server = server = transport.server
        self.app = server.app
        self.protocol = protocol
        # What it holds of messages being received counts in the server's budget.
        protocol.budget = server.budget
        self.max_queued = server.max_write_buffer   # a slow reader of broadcasts is dropped
        self.app_closed = False                     # on_close has been called
        self.close_timer: Timer | None = None
        self.ping_timer: Timer | None = None
        self.awaiting_pong = False
        self.handle = WebSocket(self, request, subprotocol)
        # What the transport flushes: the protocol's output, with no call in between (hot path).
        self.output = protocol.buffers_to_send

    def start(self) -> None:
        self.call_app(self.app.on_open, self.handle)
        self.schedule_ping()

    # ---- what the transport asks -------------------------------------------

    def receive(self, data: memoryview) -> None:
        protocol = self.protocol
        protocol.receive_data(data)
        transport = self.transport
        # The answers to a read's messages go out as soon as the read is
        # handled, in one write, not at the end of the loop's turn: a peer
        # waiting for its echo waits for nothing else, and this turn's other
        # work is done while the reply travels. Until then the transport
        # counts as listed for a flush, so a send does not list it.
        transport.dirty = True
        try:
            # One event at a time: the app's answer to a message is queued
            # before the next frame is parsed (rawws.protocol).
            for event in protocol.events():
                kind = type(event)
                if kind is TextMessage or kind is BinaryMessage:
                    try:   # as call_app does, without a call per message (hot path)
                        self.app.on_message(self.handle, event.data)
                    except Exception:
                        log.exception("application error on %s:%s", *transport.remote[:2])
                        self.close(CLOSE_INTERNAL_ERROR, "internal error")
                elif kind is Pong:
                    self.awaiting_pong = False
                # (A Ping's Pong and a Close's answer the protocol queued itself.)
        finally:
            if protocol.state is CLOSED:   # a Close came or went, or a failure
                if protocol.failure is not None and not self.app_closed:
                    log.info("%s:%s failed: %d %s", *transport.remote[:2], protocol.close_sent,
                             protocol.failure.reason)
                if protocol.should_close_transport:
                    self.finish()
            # The read's answers in one write. After a Close, the Close and
            # then TCP's FIN (finish() asked for it): the peer wakes once for both.
            transport.flush()

    after_write = None   # nothing to do when output moves: the transport's cap is enough

    def closed(self) -> None:
        """The socket is gone: a WebSocket not yet closed ends with 1006 (§7.1.5)."""
        if not self.app_closed:
            self.protocol.abort()
            self.finish()
        for timer in (self.close_timer, self.ping_timer):
            if timer is not None:
                timer.cancel()

    def go_away(self) -> None:
        self.close(CLOSE_GOING_AWAY, "server shutting down")

    # ---- the application and the closing handshake ---------------------------

    def call_app(self, callback: Callable, *args: object) -> None:
        """Run application code; its exception closes this connection (1011), nothing more."""
        try:
            callback(*args)
        except Exception:
            log.exception("application error on %s:%s", *self.transport.remote[:2])
            self.close(CLOSE_INTERNAL_ERROR, "internal error")   # no-op once closed

    def close(self, code: int, reason: str) -> None:
        protocol = self.protocol
        if protocol.state is not OPEN:
            return
        protocol.close(code, reason)
        self.transport.output_ready()
        # §7.1.1 and §7.1.7: don't wait forever for the peer's Close.
        self.close_timer = self.server.loop.call_later(self.server.close_timeout,
                                                       self.on_close_timeout)

    def finish(self) -> None:
        """The WebSocket is over: tell the application once, then close TCP."""
        if not self.app_closed:
            self.app_closed = True
            protocol = self.protocol
            log.debug("%s:%s WebSocket closed: code %d%s", *self.transport.remote[:2],
                      protocol.close_code,
                      f" ({protocol.close_reason})" if protocol.close_reason else "")
            self.call_app(self.app.on_close, self.handle, protocol.close_code,
                          protocol.close_reason)
        self.transport.close_when_flushed()

    def on_close_timeout(self) -> None:
        self.close_timer = None
        if not self.transport.closed:
            log.info("%s:%s close timeout", *self.transport.remote[:2])
            self.transport.teardown()

    # ---- keepalive -----------------------------------------------------------

    def schedule_ping(self) -> None:
        interval = self.server.ping_interval
        if interval:
            self.ping_timer = self.server.loop.call_later(interval, self.on_ping_timer)

    def on_ping_timer(self) -> None:
        if self.transport.closed or self.protocol.state is not OPEN:
            return
        if self.awaiting_pong:
            log.info("%s:%s keepalive timeout", *self.transport.remote[:2])
            self.close(CLOSE_INTERNAL_ERROR, "keepalive ping timeout")
            return
        self.awaiting_pong = True
        self.protocol.send_ping(KEEPALIVE_PAYLOAD)
        self.transport.output_ready()
        self.ping_timer = self.server.loop.call_later(self.server.ping_timeout,
                                                      self.on_pong_deadline)

    def on_pong_deadline(self) -> None:
        """No Pong by now ends the connection (1011); else ping again after the
        rest of the interval."""
        if self.transport.closed or self.protocol.state is not OPEN:
            return
        if self.awaiting_pong:
            self.on_ping_timer()   # closes with 1011
            return
        rest = max(0.0, self.server.ping_interval - self.server.ping_timeout)
        self.ping_timer = self.server.loop.call_later(rest, self.on_ping_timer)
