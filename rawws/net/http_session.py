"""HTTP/1.1 on a transport: file requests, keep-alive, and the WebSocket upgrade.

Every accepted connection starts here. Requests are parsed by the sans-IO
`rawws.http.RequestParser` and answered in order: an upgrade request (RFC
6455 §4) is decided by the sans-IO handshake and, when accepted, the 101
swaps this session for a `WebSocketSession`; every other request is
answered by the static file server.

The handshake timeout (slowloris, idle keep-alive) is this session's own
timer: a request head must be complete within `handshake_timeout` seconds
of the connection, or of the last answer, or of the last progress of a
download to a slow reader.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ..errors import HTTPError
from ..handshake import Refusal, is_upgrade_request, refusal_response, server_handshake
from ..http import Request, RequestParser, format_response
from ..protocol import WebSocketConnection
from .loop import Timer
from .ws_session import WebSocketSession

if TYPE_CHECKING:
    from .transport import Transport

log = logging.getLogger("rawws.server")


class HTTPSession:
    """Requests and their answers, until an accepted upgrade hands the transport on."""

    max_queued = None   # an answer is bounded by max_file_size and by the pipelining pause

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.server = server = transport.server
        self.parser = RequestParser(max_header_bytes=server.max_header_bytes,
                                    scheme="https" if server.ssl_context is not None else "http")
        self.done = False      # the last answer is queued: what else comes is dropped
        self.backlog = False   # pipelined requests wait until our answers drain
        self.queued = 0        # unsent bytes at the last write: less now is progress
        self.charged = 0       # bytes of request heads counted in server.budget
        self.deadline = time.monotonic() + server.handshake_timeout
        self.timer: Timer | None = server.loop.call_later(server.handshake_timeout,
                                                          self.on_timeout)

    # ---- what the transport asks -------------------------------------------

    def receive(self, data: memoryview) -> None:
        if not data:   # the peer's EOF: finish what is queued, then close
            self.finish()
            return
        if self.done:
            return     # the last answer is out: what else the peer sends is dropped, not buffered
        self.parser.feed(data)
        self.answer_requests()
        if self.transport.session is self and not self.transport.closed:
            self.charge_head()

    def charge_head(self) -> None:
        """Count what the request parser holds in the server's budget (charged,
        never refused: a head is at most max_header_bytes)."""
        held = 0 if self.done else self.parser.buffered
        if held != self.charged:
            self.server.budget.charge(held - self.charged)
            self.charged = held

    def output(self, join: bool = True) -> list:
        return []      # answers are queued whole with transport.write()

    def after_write(self, queued: int) -> None:
        if queued < self.queued:
            # A file going out to a slow reader: the handshake timeout
            # counts from its last progress, not from the request.
            self.deadline = time.monotonic() + self.server.handshake_timeout
        self.queued = queued
        if self.backlog and queued <= self.server.read_pause_bytes:
            self.backlog = False   # drained: answer the pipelined requests left waiting
            self.answer_requests()

    def closed(self) -> None:
        self.cancel_timer()
        self.release_head()

    def release_head(self) -> None:
        if self.charged:
            self.server.budget.release(self.charged)
            self.charged = 0

    def go_away(self) -> None:
        """The server is shutting down: no answer is owed, close now."""
        self.transport.teardown()

    # ---- requests ----------------------------------------------------------

    def answer_requests(self) -> None:
        transport = self.transport
        while transport.session is self and not self.done:
            if transport.out.size > self.server.read_pause_bytes:
                # Backpressure for pipelining: leave further requests in the
                # parser until our answers have drained.
                self.backlog = True
                return
            try:
                request = self.parser.next_request()
            except HTTPError as error:
                self.send_error(error)
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
                if transport.session is self:
                    self.send_error(HTTPError(500, "internal server error"))
                return

    def serve_file(self, request: Request) -> None:
        status, headers, body = self.server.files.respond(request)
        keep_alive = request.keep_alive and not request.has_body
        if not keep_alive:
            headers = headers + [("Connection", "close")]
        log.debug("%s %s %s -> %d", self.transport.remote[0], request.method, request.target,
                  status)
        self.transport.write(format_response(status, headers, body))
        if not keep_alive:
            self.finish()
        self.deadline = time.monotonic() + self.server.handshake_timeout

    def send_error(self, error: HTTPError) -> None:
        self.transport.write(refusal_response(error, error.reason or "error"))
        self.finish()

    def finish(self) -> None:
        """The last answer is queued: close once it is out."""
        self.done = True
        self.transport.close_when_flushed()

    # ---- the upgrade -------------------------------------------------------

    def upgrade(self, request: Request) -> None:
        """Answer an upgrade request as the sans-IO handshake decides (rawws.handshake)."""
        transport = self.transport
        outcome = server_handshake(request, self.server.policy)
        transport.write(outcome.response)
        if isinstance(outcome, Refusal):
            log.info("%s:%s handshake refused: %d %s", *transport.remote[:2], outcome.status,
                     outcome.error.reason)
            self.finish()
            return
        self.switch(outcome.connection, request, outcome.subprotocol)

    def switch(self, protocol: WebSocketConnection, request: Request,
               subprotocol: str | None) -> None:
        """The 101 is queued: hand the transport to a WebSocket session, with any
        bytes that came after the request."""
        self.cancel_timer()
        self.release_head()
        leftover = self.parser.leftover()
        session = WebSocketSession(self.transport, protocol, request, subprotocol)
        self.transport.session = session
        log.debug("%s:%s WebSocket open on %s (subprotocol %s)", *self.transport.remote[:2],
                  request.target, subprotocol)
        session.start()
        if leftover:
            session.receive(memoryview(leftover))

    # ---- the timer ---------------------------------------------------------

    def on_timeout(self) -> None:
        """One timer per HTTP connection: re-armed while requests keep coming."""
        self.timer = None
        if self.transport.session is not self or self.transport.closed:
            return
        remaining = self.deadline - time.monotonic()
        if remaining > 0:
            self.timer = self.server.loop.call_later(remaining, self.on_timeout)
        else:
            self.transport.teardown()

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
