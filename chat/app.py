"""`ChatApp`: the chat room behind a `rawws.server.Server`.

The app is the glue between real WebSocket connections and the pure-logic
`Room`: it chooses which connections may open (Origin, subprotocol), tells
the room which protocol version each one speaks, and hands it every message
and every close. It never sees a frame.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from rawws.server import WebSocketApp

from .messages import PROTOCOL_V1, PROTOCOL_V2, SUBPROTOCOLS, VERSION_OF
from .room import CLOSE_POLICY_VIOLATION, Limits, Room

log = logging.getLogger("chat")

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalize_origin(origin: str, default_scheme: str | None = None
                     ) -> tuple[str, str, int | None] | None:
    """`scheme://host[:port]` as (scheme, host, port), lower-cased, with the
    scheme's default port filled in; None when it is not of that form.

    Origins compare as these triples (RFC 6454 §5), so `http://LocalHost`
    and `http://localhost:80` are one origin. `default_scheme` reads a bare
    `host[:port]`, such as a Host header."""
    text = origin.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        if default_scheme is None:
            return None
        scheme, rest = default_scheme, text
    scheme = scheme.lower()
    if rest.endswith("/"):          # tolerate `--allowed-origin http://host/`
        rest = rest[:-1]
    if not scheme or not rest or any(c in rest for c in "/?#@ \t"):
        return None
    if rest.startswith("["):        # IPv6 literal: [::1]:3490
        host, bracket, tail = rest.partition("]")
        if not bracket:
            return None
        host += "]"
        if tail and not tail.startswith(":"):
            return None
        port_text = tail[1:] if tail else ""
    else:
        host, colon, port_text = rest.partition(":")
        if colon and not port_text:
            return None
    if not host:
        return None
    if port_text:
        if not port_text.isdigit() or not port_text.isascii() or int(port_text) > 65535:
            return None
        port: int | None = int(port_text)
    else:
        port = DEFAULT_PORTS.get(scheme)
    return scheme, host.lower(), port


# The body of the 400 answer to a handshake that offers no chat subprotocol
# (the server adds the final newline).
REFUSAL_BODY = (
    "This is the chat's WebSocket endpoint. Offer one of the subprotocols "
    f"{PROTOCOL_V2} or {PROTOCOL_V1} in Sec-WebSocket-Protocol."
)


class ChatApp(WebSocketApp):
    """The chat as a WebSocket application: both protocol versions, one room."""

    subprotocols = SUBPROTOCOLS              # v2 first: preferred when both are offered
    subprotocol_required = True
    refusal_body = REFUSAL_BODY              # the 400 body when no offered subprotocol fits
    scheme = "http"                          # how browsers reach this server: its own origin

    def __init__(self, room: Room | None = None, *, limits: Limits | None = None,
                 allowed_origins: Iterable[str] | None = None) -> None:
        super().__init__()
        self.room = room if room is not None else Room(limits)
        extra = {o.strip() for o in allowed_origins or () if o.strip()}
        # None keeps the documented default: same origin, or no Origin at all.
        self.allowed_origins = extra or None
        self._any_origin = "*" in extra
        self._origins = {normalize_origin(o) for o in extra} - {None}
        self._raw_origins = {o.lower() for o in extra}   # for forms like `null`

    # --- the handshake ------------------------------------------------------------

    def check_origin(self, origin: str | None, request: Any) -> bool:
        if origin is None:            # not a browser: Origin guards browsers only
            return True
        if self._any_origin or origin.strip().lower() in self._raw_origins:
            return True
        wanted = normalize_origin(origin)
        if wanted is None:
            return False
        if wanted in self._origins:
            return True
        host = request.headers.get("Host")
        return host is not None and wanted == normalize_origin(host, self.scheme)

    def subprotocol_refusal(self) -> str:
        return self.refusal_body

    def select_subprotocol(self, offered: list[str], request: Any) -> str | None:
        # Our preference order, not the client's: v2 wins whenever it is offered.
        for name in self.subprotocols:
            if name in offered:
                return name
        return None

    # --- connections ------------------------------------------------------------------

    def on_open(self, ws: Any) -> None:
        label = _label(ws)
        version = VERSION_OF.get(ws.subprotocol)
        if version is None:   # the server enforces subprotocol_required; be sure anyway
            log.warning("accepted %s without a chat subprotocol; closing", label)
            ws.close(CLOSE_POLICY_VIOLATION, "no chat subprotocol")
            return
        log.info("accepted %s path=%s protocol=%s", label, ws.path, ws.subprotocol)
        self.room.connect(ws, version, label)

    def on_message(self, ws: Any, message: str | bytes) -> None:
        if isinstance(message, str):
            self.room.receive(ws, message)
        else:
            self.room.receive_binary(ws, message)

    def on_close(self, ws: Any, code: int, reason: str) -> None:
        log.info("closed %s code=%s%s", _label(ws), code, f" reason={reason!r}" if reason else "")
        self.room.disconnect(ws)


def _label(ws: Any) -> str:
    remote = getattr(ws, "remote", None)
    if isinstance(remote, tuple) and len(remote) >= 2:
        host, port = remote[0], remote[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(remote)
