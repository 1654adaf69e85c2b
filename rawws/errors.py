"""One exception hierarchy for rawws; each error knows its answer on the wire.

Every error rawws raises for a peer's bytes or a closed connection is one of:

    WebSocketError              the base class
    ├── ProtocolError           the peer broke RFC 6455: fail the connection, 1002
    │   ├── InvalidPayload      text that is not UTF-8 (§8.1): 1007
    │   └── MessageTooBig       a frame or message over a limit (§10.4): 1009
    ├── HTTPError               an HTTP exchange fails: answer with its status
    │   └── HandshakeError      a refused or malformed opening handshake (§4)
    └── ConnectionClosed        a connection used after it closed, with the code seen

A WebSocket protocol error carries the close code to send (RFC 6455 §7.4.1)
as `close_code`; an HTTP error carries the status and headers to answer with.
Outside the tree: ValueError for a wrong argument (an invalid close code to
send, a header value with CR or LF), and `rawws.extensions.ExtensionHeaderError`
(a ValueError), which `rawws.deflate` turns into a HandshakeError (400).

The Redis client (`rawws.resp`, `rawws.net.redis`) has a small tree of its
own, apart from the WebSocket one, at the end of this file:

    RedisError                  the base class of the Redis client's errors
    ├── RespProtocolError       the server's bytes are not RESP, or break a limit
    ├── ReplyError              an error reply (-ERR ...): that command failed
    └── RedisConnectionError    connect refused or timed out, connection lost
"""
from __future__ import annotations

from .close import CLOSE_INVALID_PAYLOAD, CLOSE_MESSAGE_TOO_BIG, CLOSE_PROTOCOL_ERROR


class WebSocketError(Exception):
    """Base class of every exception rawws raises."""


class ProtocolError(WebSocketError):
    """The peer broke RFC 6455; the connection is failed with `close_code`."""

    close_code = CLOSE_PROTOCOL_ERROR

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidPayload(ProtocolError):
    """Text that is not UTF-8 (RFC 6455 §8.1)."""

    close_code = CLOSE_INVALID_PAYLOAD


class MessageTooBig(ProtocolError):
    """A frame or message over the configured limit."""

    close_code = CLOSE_MESSAGE_TOO_BIG


class HTTPError(WebSocketError):
    """An HTTP exchange that fails with `status` (request parsing, file serving)."""

    def __init__(self, status: int, reason: str = "",
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(f"{status} {reason}".strip())
        self.status = status
        self.reason = reason
        self.headers = list(headers or [])


class HandshakeError(HTTPError):
    """A refused or malformed opening handshake (RFC 6455 §4).

    On the server it becomes the HTTP response; on the client it explains why
    the server's answer was not a valid 101.
    """


class ConnectionClosed(WebSocketError):
    """Raised when using a connection that is closed, with the close code seen."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".strip())
        self.code = code
        self.reason = reason


# ---- the Redis client ----------------------------------------------------------

class RedisError(Exception):
    """Base class of the Redis client's errors (not a WebSocketError)."""


class RespProtocolError(RedisError):
    """The server sent bytes that are not RESP, or a reply over a parser limit.

    The stream cannot be resynchronised after it: the connection is dropped.
    """


class ReplyError(RedisError):
    """An error reply, such as ``-WRONGTYPE Operation against a key ...``.

    The parser returns it as a value (it is one reply among others in a
    pipeline); the client fails that command's future with it, and the
    connection carries on. `code` is the first word (``ERR``, ``WRONGTYPE``).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = message.split(" ", 1)[0]


class RedisConnectionError(RedisError):
    """No connection: refused, timed out while connecting, or lost.

    Every command still waiting for its reply fails with it.
    """
