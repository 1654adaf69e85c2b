"""Bytes waiting for a socket that would not take them all: the pieces as
they were queued, written with one vectored `sendmsg`, never copied.

A connection's output is frames, often the very bytes object a broadcast
queues to every recipient, and a big payload after its header
(`WebSocketConnection.buffers_to_send`). Keeping references, where one
bytearray would copy each of them in and shift what is left after a partial
send, costs no copy per recipient and no copy of a 16 MiB payload.
"""
from __future__ import annotations

import os

# The most pieces one sendmsg takes (POSIX IOV_MAX; 1024 on Linux).
try:
    MAX_PIECES = min(os.sysconf("SC_IOV_MAX"), 1024)
except (AttributeError, ValueError, OSError):
    MAX_PIECES = 16   # POSIX's minimum


class SendQueue:
    """A FIFO of byte strings with their total length, for a non-blocking socket."""

    __slots__ = ("_pieces", "size")

    def __init__(self) -> None:
        self._pieces: list[bytes | bytearray | memoryview] = []
        # Bytes queued. An attribute, read on every flush of every
        # connection: a __len__ call there costs ~70 ns more each time.
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Queue `data` as it is: the caller does not change it afterwards."""
        size = len(data)
        if size:
            self._pieces.append(data)
            self.size += size

    def extend(self, pieces: list[bytes]) -> None:
        for data in pieces:
            self.append(data)

    def head(self) -> list[bytes | bytearray | memoryview]:
        """The first pieces, as many as one sendmsg takes."""
        pieces = self._pieces
        return pieces if len(pieces) <= MAX_PIECES else pieces[:MAX_PIECES]

    def consume(self, count: int) -> None:
        """Drop the first `count` bytes, which the socket took."""
        if count <= 0:
            return
        pieces = self._pieces
        self.size -= count
        done = 0
        for data in pieces:
            if not count:
                break
            size = len(data)
            if count < size:
                # Partly sent: the rest stays a view on it, not a copy.
                pieces[done] = memoryview(data)[count:]
                break
            count -= size
            done += 1
        del pieces[:done]
