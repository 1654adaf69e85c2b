"""`ChatApp`: the chat room behind a `rawws.net.server.Server`.

The app is the glue between real WebSocket connections and the pure-logic
`Room`: it chooses which connections may open (Origin, subprotocol), tells
the room which protocol version each one speaks, and hands it every message
and every close. It never sees a frame.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from rawws.close import CLOSE_POLICY_VIOLATION
from rawws.net.server import WebSocketApp

from .messages import PROTOCOL_V1, PROTOCOL_V2, SUBPROTOCOLS, VERSION_OF
from .room import Limits, Room

log = logging.getLogger("chat")

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

    def __init__(self, room: Room | None = None, *, limits: Limits | None = None,
                 allowed_origins: Iterable[str] | None = None) -> None:
        super().__init__()
        self.room = room if room is not None else Room(limits)
        # None keeps the documented default: same origin, or no Origin at all.
        self.allowed_origins = list(allowed_origins or ()) or None

    def subprotocol_refusal(self) -> str:
        """The 400 body when no offered subprotocol fits (the WebSocketApp hook)."""
        return REFUSAL_BODY

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
