"""The opening handshake (RFC 6455 §4): an HTTP/1.1 Upgrade, both sides, sans-IO.

The whole exchange, decided without I/O; the caller only moves bytes:

- Server: `server_handshake(request, policy)` takes a parsed request and a
  `ServerPolicy` (the application's hooks for Origin and subprotocol,
  permessage-deflate, limits) and returns either a `Refusal` (the HTTP
  error to send before closing) or an `Acceptance` (the 101 to send and
  the ready `WebSocketConnection`).
- Client: a `ClientHandshake` holds the `request` bytes to send (§4.1);
  `receive_response()` checks the server's answer and returns the ready
  connection and the subprotocol (`Established`), or raises HandshakeError.

The pieces they are made of, each one rule of the RFC: server side,
`is_upgrade_request()` tells a WebSocket attempt from a plain HTTP request,
`validate_request()` checks it (§4.2.1) and returns the key,
`accept_response()` builds the 101 (§4.2.2); client side, `make_key()`,
`build_request()` (§4.1) and `check_response()` (§4.1, the client's checks).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .deflate import DeflateOptions, PerMessageDeflate, client_check, client_offer, server_accept
from .errors import HandshakeError, HTTPError
from .http import Request, Response, format_response
from .protocol import DEFAULT_MAX_MESSAGE_SIZE, Role, WebSocketConnection

# §1.3: the GUID the server appends to the client's key before hashing.
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WEBSOCKET_VERSION = "13"
KEY_BYTES = 16


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + GUID)), §4.2.2."""
    digest = hashlib.sha1((key + WEBSOCKET_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def split_header_list(values: Iterable[str]) -> list[str]:
    """The elements of comma-separated header values, stripped, case kept (RFC 9110 §5.6.1).

    For subprotocol names and versions, which are compared exactly as sent;
    Upgrade and Connection hold case-insensitive tokens, read with
    `Headers.get_tokens` (lower-cased).
    """
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


# ---- server side ------------------------------------------------------

def is_upgrade_request(request: Request) -> bool:
    """True when the request asks for a WebSocket (its Upgrade lists `websocket`).

    Such a request is the WebSocket layer's: if it is malformed it gets a 4xx
    from `validate_request`, not a file from the file server.
    """
    return "websocket" in request.headers.get_tokens("Upgrade")


def validate_request(request: Request) -> str:
    """Check an upgrade request against §4.2.1 and return its Sec-WebSocket-Key.

    Raises HandshakeError with the status to answer: 400 in general, 405 for a
    method other than GET, 426 (with Sec-WebSocket-Version: 13) for a missing
    or unsupported version.
    """
    if request.method != "GET":
        # §4.1: "The method of the request MUST be GET".
        raise HandshakeError(405, "a WebSocket handshake uses GET", [("Allow", "GET")])
    if request.version != "HTTP/1.1":
        # §4.1: "the HTTP version MUST be at least 1.1".
        raise HandshakeError(400, "a WebSocket handshake needs HTTP/1.1")
    if len(request.headers.get_all("Host")) != 1:
        # §4.1 item 4 (and RFC 9112 §3.2: exactly one Host).
        raise HandshakeError(400, "missing or repeated Host header")
    if "websocket" not in request.headers.get_tokens("Upgrade"):
        # §4.2.1 item 3.
        raise HandshakeError(400, "Upgrade header does not name websocket")
    if "upgrade" not in request.headers.get_tokens("Connection"):
        # §4.2.1 item 4: Connection includes the token "Upgrade", case-insensitively.
        raise HandshakeError(400, "Connection header does not include upgrade")
    versions = split_header_list(request.headers.get_all("Sec-WebSocket-Version"))
    if versions != [WEBSOCKET_VERSION]:
        # §4.2.2 item 4: answer an unsupported version with 426 and the versions we speak.
        raise HandshakeError(426, "unsupported or missing Sec-WebSocket-Version; this server speaks 13",
                             [("Sec-WebSocket-Version", WEBSOCKET_VERSION)])
    keys = request.headers.get_all("Sec-WebSocket-Key")
    if len(keys) != 1:
        raise HandshakeError(400, "missing or repeated Sec-WebSocket-Key header")
    key = keys[0].strip()
    try:
        raw_key = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw_key = b""
    if len(raw_key) != KEY_BYTES:
        # §4.2.1 item 5: the key base64-decodes to 16 bytes.
        raise HandshakeError(400, "Sec-WebSocket-Key is not 16 bytes in base64")
    return key


def offered_subprotocols(request: Request) -> list[str]:
    """The subprotocols the client offers, in its order of preference (§4.1 item 10)."""
    return split_header_list(request.headers.get_all("Sec-WebSocket-Protocol"))


def accept_response(key: str, subprotocol: str | None = None,
                    extra_headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """The 101 Switching Protocols answer (§4.2.2 item 5).

    Extensions go in `extra_headers` (Sec-WebSocket-Extensions, as
    `rawws.deflate.server_accept` wrote it); leaving an offer out of the
    answer is how a server declines it (§9.1).
    """
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
               ("Sec-WebSocket-Accept", accept_key(key))]
    if subprotocol is not None:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    headers.extend(extra_headers)
    return format_response(101, headers)


def refusal_response(error: HTTPError, body: str | None = None) -> bytes:
    """An HTTP error answer (a refused handshake, a bad request), with a plain-text body; closes."""
    text = (body if body is not None else error.reason or "WebSocket handshake refused") + "\n"
    headers = list(error.headers) + [("Content-Type", "text/plain; charset=utf-8"),
                                     ("Connection", "close")]
    return format_response(error.status, headers, text.encode("utf-8"))


# ---- client side ------------------------------------------------------

def make_key() -> str:
    """A fresh Sec-WebSocket-Key: 16 random bytes in base64 (§4.1 item 7)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def build_request(host: str, path: str, key: str, *, subprotocols: Iterable[str] = (),
                  origin: str | None = None, extensions: str | None = None,
                  extra_headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """The client's opening handshake request (§4.1)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
             f"Sec-WebSocket-Version: {WEBSOCKET_VERSION}"]
    protocols = list(subprotocols)
    if protocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
    if origin is not None:
        lines.append(f"Origin: {origin}")
    if extensions is not None:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    for name, value in extra_headers:
        if "\r" in name + value or "\n" in name + value:
            raise ValueError("header names and values may not hold CR or LF")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def check_response(response: Response, key: str, offered: Iterable[str] = (), *,
                   extensions_offered: bool = False) -> str | None:
    """Validate the server's answer (§4.1, the client's checks); return the subprotocol.

    Raises HandshakeError carrying the server's status when it is not a valid 101.
    When the client offered extensions, their answer is the extension's to
    check (`rawws.deflate.client_check`); else any answer fails.
    """
    if response.status != 101:
        raise HandshakeError(response.status, f"server answered {response.status} {response.reason}")
    if "websocket" not in response.headers.get_tokens("Upgrade"):
        raise HandshakeError(response.status, "101 without Upgrade: websocket")
    if "upgrade" not in response.headers.get_tokens("Connection"):
        raise HandshakeError(response.status, "101 without Connection: Upgrade")
    if response.headers.get_all("Sec-WebSocket-Accept") != [accept_key(key)]:
        raise HandshakeError(response.status, "wrong Sec-WebSocket-Accept")
    if not extensions_offered and response.headers.get_all("Sec-WebSocket-Extensions"):
        # §4.1: an extension the client did not ask for fails the connection.
        raise HandshakeError(response.status, "server chose an extension that was not offered")
    chosen = split_header_list(response.headers.get_all("Sec-WebSocket-Protocol"))
    if not chosen:
        return None
    if len(chosen) != 1 or chosen[0] not in list(offered):
        # §4.1: a subprotocol the client did not offer fails the connection.
        raise HandshakeError(response.status, f"server chose a subprotocol that was not offered: {chosen}")
    return chosen[0]


# ---- server side: the decision --------------------------------------------

class HandshakeHooks(Protocol):
    """The application's say in a handshake (`rawws.net.server.WebSocketApp` has all four)."""

    subprotocol_required: bool

    def check_origin(self, origin: str | None, request: Request) -> bool:
        """Accept the request's Origin (None when it has none), or refuse it with 403."""

    def select_subprotocol(self, offered: list[str], request: Request) -> str | None:
        """One of `offered` (the client's order), or None for no subprotocol."""

    def subprotocol_refusal(self) -> str:
        """The plain-text body of the 400 when a subprotocol is required and none fits."""


@dataclass(frozen=True, slots=True)
class ServerPolicy:
    """What a server accepts in an opening handshake.

    `app` decides Origin and subprotocol through its hooks; `compression` is
    the permessage-deflate the server agrees to (RFC 7692; None: never); the
    limits (§10.4) go to the connection of every accepted handshake. Made
    once per server, used for every upgrade request.
    """

    app: HandshakeHooks
    compression: DeflateOptions | None = DeflateOptions()
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_frame_size: int | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused handshake: send `response`, then close the connection.

    `error` says why: its status, its headers, and a reason for the log.
    """

    error: HandshakeError
    response: bytes

    @property
    def status(self) -> int:
        return self.error.status


@dataclass(frozen=True, slots=True)
class Acceptance:
    """An accepted handshake: send `response` (the 101), then speak WebSocket.

    `connection` is the server's side of it, with the limits and the
    permessage-deflate agreed; bytes the client sent after its request head
    are its first frames, for `connection.receive_data()` (when there are
    any: b"" there means the peer's EOF).
    """

    response: bytes
    subprotocol: str | None
    connection: WebSocketConnection


def server_handshake(request: Request, policy: ServerPolicy) -> Acceptance | Refusal:
    """Answer an upgrade request (§4.2.2): accept it, or refuse it with an HTTP error.

    The checks, in order; the first that fails is the refusal:

    1. The request itself (§4.2.1, `validate_request`): 400 in general, 405
       with `Allow: GET` for another method, 426 with
       `Sec-WebSocket-Version: 13` for a missing or other version.
    2. The Origin (§10.2), by `app.check_origin`: 403.
    3. The subprotocol, by `app.select_subprotocol` among the offered ones
       (§4.2.2 item 5, /subprotocol/): when it picks none and
       `app.subprotocol_required`, 400 with `app.subprotocol_refusal()` as
       the body.
    4. Sec-WebSocket-Extensions, when compression is on: a header that
       breaks the §9.1 grammar is a 400; an offer the server cannot honour is
       only declined, and the connection goes uncompressed (RFC 7692 §5).

    A hook may also refuse by raising HandshakeError (its status is sent);
    any other exception from a hook is the application's bug and propagates.
    """
    app = policy.app
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
        if policy.compression is not None:
            # RFC 7692 §5: the first permessage-deflate offer we can honour, if any.
            agreed = server_accept(request.headers.get_all("Sec-WebSocket-Extensions"),
                                   policy.compression)
    except HandshakeError as error:
        return Refusal(error, refusal_response(error, body))
    extension_headers = []
    deflate = None
    if agreed is not None:
        params, answer = agreed
        extension_headers.append(("Sec-WebSocket-Extensions", answer))
        deflate = PerMessageDeflate(params, is_server=True, options=policy.compression)
    connection = WebSocketConnection(Role.SERVER, max_message_size=policy.max_message_size,
                                     max_frame_size=policy.max_frame_size, deflate=deflate)
    return Acceptance(accept_response(key, subprotocol, extension_headers), subprotocol, connection)


# ---- client side: the exchange --------------------------------------------

@dataclass(frozen=True, slots=True)
class Established:
    """§4.1: "_The WebSocket Connection is Established_": the client's side of
    it, and the subprotocol the server chose (None for none)."""

    connection: WebSocketConnection
    subprotocol: str | None


class ClientHandshake:
    """One client's opening handshake (§4.1), without I/O.

    Send `request`; read the server's response head, parse it
    (`rawws.http.parse_response_head`) and hand it to `receive_response()`.
    `compression` (DeflateOptions) offers permessage-deflate (RFC 7692);
    the limits go to the connection. `key` is fresh by default (§4.1 item 7);
    pass one only to reproduce a handshake (the RFC's example, a test).
    """

    def __init__(self, host: str, path: str = "/", *, subprotocols: Iterable[str] = (),
                 origin: str | None = None, headers: Iterable[tuple[str, str]] = (),
                 compression: DeflateOptions | None = None,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 max_frame_size: int | None = None, key: str | None = None) -> None:
        self.key = key if key is not None else make_key()
        self.subprotocols = tuple(subprotocols)
        self.compression = compression
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        offer = client_offer(compression) if compression is not None else None
        # ValueError here for a header holding CR or LF, before any connection.
        self.request = build_request(host, path, self.key, subprotocols=self.subprotocols,
                                     origin=origin, extensions=offer, extra_headers=headers)

    def receive_response(self, response: Response) -> Established:
        """Check the server's answer (§4.1) and return the established connection.

        Raises HandshakeError, carrying the server's status, when the answer
        is not a 101 or breaks what the request offered: the Accept key, a
        subprotocol or an extension not offered, a permessage-deflate answer
        the offer did not allow (RFC 7692 §7.1). The client then fails the
        connection (closes TCP).
        """
        subprotocol = check_response(response, self.key, self.subprotocols,
                                     extensions_offered=self.compression is not None)
        deflate = None
        if self.compression is not None:
            params = client_check(response.headers.get_all("Sec-WebSocket-Extensions"),
                                  self.compression)
            if params is not None:
                deflate = PerMessageDeflate(params, is_server=False, options=self.compression)
        connection = WebSocketConnection(Role.CLIENT, max_message_size=self.max_message_size,
                                         max_frame_size=self.max_frame_size, deflate=deflate)
        return Established(connection, subprotocol)
