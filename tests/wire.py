"""What a connection put on the wire, read back as frames: shared by the byte-level tests."""
from __future__ import annotations

from rawws.frames import OP_CLOSE, Frame, FrameParser
from rawws.protocol import Role, State, WebSocketConnection


def sent_frames(connection: WebSocketConnection) -> list[Frame]:
    """Every frame the connection queued, parsed as its peer would parse them."""
    peer = FrameParser(require_mask=connection.role is Role.CLIENT)
    peer.feed(connection.data_to_send())
    frames = []
    while (frame := peer.next_frame()) is not None:
        frames.append(frame)
    assert peer.buffered == 0
    return frames


def failed_with(connection: WebSocketConnection) -> int:
    """The code of the single Close frame a failed connection queued (§7.1.7),
    once the events before the failure are read, as a driver reads them."""
    list(connection.events())
    (frame,) = sent_frames(connection)
    assert frame.opcode == OP_CLOSE
    assert connection.state is State.CLOSED
    assert connection.should_close_transport
    return int.from_bytes(frame.payload[:2], "big")
