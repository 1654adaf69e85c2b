"""One message to many WebSockets, encoded once (the chat's hot path).

A server's frames are not masked (RFC 6455 §5.1), so one message's frame is
the same bytes for every peer: it is encoded once and the very same bytes
object is queued to each connection. With permessage-deflate, a peer that
agreed to server_no_context_takeover can take a frame compressed once from
a fresh window (RFC 7692 §7.1.1.1); any other peer gets the plain frame,
which every peer accepts (RFC 7692 §6). So a broadcast costs one encoding
per wire form, not one per recipient.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from ..protocol import encode_shared_frame
from .ws_session import WebSocket

log = logging.getLogger("rawws.server")


def broadcast(connections: Iterable[WebSocket], message: str | bytes, *,
              on_error: Callable[[WebSocket, Exception], object] | None = None) -> int:
    """Queue `message` (str: text, bytes: binary) to every open connection; the count queued.

    A connection that is closing is skipped. One whose send raises (a bug in
    a handle) is reported to `on_error` (by default, logged) and the others
    still get the message.
    """
    plain: bytes | None = None
    compressed: dict[int, bytes] = {}
    queued = 0
    for ws in connections:
        bits = ws.shared_deflate_bits
        if bits is None:
            if plain is None:
                plain = encode_shared_frame(message)
            frame = plain
        else:
            frame = compressed.get(bits)
            if frame is None:
                frame = compressed[bits] = encode_shared_frame(message, bits)
        try:   # costs nothing in Python 3.11 unless it catches
            queued += ws.send_frame_bytes(frame)   # False (0) when the connection is closing
        except Exception as error:
            if on_error is None:
                log.exception("broadcast: send to %r failed", ws)
            else:
                on_error(ws, error)
    return queued
