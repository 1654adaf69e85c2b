"""One memory budget for a whole server: the bytes held for peers, counted.

Every limit of a connection bounds that connection only; a full house of
hostile ones would hold their sum (docs/security.md). A `MemoryBudget` is
shared by every connection of a process and counts what they hold for
their peers:

- messages being received: a frame whose payload has not all arrived (its
  announced length, from its header), and a fragmented message's pieces so
  far (`WebSocketConnection.held_bytes`, settled once per read);
- send queues: output the kernel has not taken (the transport charges the
  change whenever its queue's size changes);
- HTTP request heads still arriving.

Two ways in. `reserve()` asks, and may be told no: a message that would take
the total past what receiving may use is refused (the connection is failed
with 1009, "try again later"). `charge()` tells: output already made by the
application, and heads, are counted unrefused; past the limit the I/O layer
sheds (drops the biggest send queues of peers that do not read), and new
connections get 503 while `exceeded`.

Receiving may use the budget only up to `limit - output_reserve`: the rest
stays for output, so big messages being received can never leave the chat
of ordinary users without room for its send queues.

Nothing here touches a socket: tests drive it byte by byte (tests/test_budget.py).
"""
from __future__ import annotations

from collections.abc import Callable

MiB = 1024 * 1024

# The default of `--max-memory` (chat, echo) and of `Server(max_memory=)`:
# fits a machine of 512 MiB beside the interpreter and the per-connection
# baseline of a full house, and takes the echo server's 16 MiB messages
# (Autobahn's largest) several at a time. docs/security.md.
DEFAULT_MAX_MEMORY = 128 * MiB

# The smallest budget the commands accept: room for a few ordinary messages.
MIN_MAX_MEMORY = 1 * MiB


class MemoryBudget:
    """Bytes held for peers, process-wide, against one limit.

    `used` is a plain int attribute: the I/O layer adds a change to it where
    a method call would cost more than the addition (the send queue's path).
    """

    __slots__ = ("limit", "output_reserve", "used", "refused", "make_room")

    def __init__(self, limit: int, *, output_reserve: int | None = None,
                 make_room: Callable[[int, object], object] | None = None) -> None:
        if limit < 1:
            raise ValueError(f"a memory budget is at least 1 byte, not {limit}")
        self.limit = limit
        # What receiving may not take: by default an eighth of the budget.
        self.output_reserve = limit // 8 if output_reserve is None else output_reserve
        if not 0 <= self.output_reserve < limit:
            raise ValueError("output_reserve must be at least 0 and less than the limit")
        self.used = 0      # bytes counted now, reserved and charged
        self.refused = 0   # reservations refused, ever
        # Called as make_room(size, owner) when a reservation does not fit:
        # the I/O layer may free some (shed) before the budget says no.
        self.make_room = make_room

    @property
    def receive_limit(self) -> int:
        """The most that reservations (messages being received) may bring `used` to."""
        return self.limit - self.output_reserve

    @property
    def exceeded(self) -> bool:
        """More is held than the limit: new connections are refused (503)."""
        return self.used > self.limit

    @property
    def available(self) -> int:
        """What one more reservation could take now (0 when none)."""
        return max(0, self.receive_limit - self.used)

    def reserve(self, size: int, owner: object = None) -> bool:
        """Count `size` more bytes if they fit under `receive_limit`; False (nothing
        counted) if they do not, even after `make_room(size, owner)`."""
        if self.used + size > self.limit - self.output_reserve:
            if self.make_room is not None:
                self.make_room(size, owner)
            if self.used + size > self.limit - self.output_reserve:
                self.refused += 1
                return False
        self.used += size
        return True

    def charge(self, size: int) -> None:
        """Count `size` bytes (negative: fewer) whatever the total: output and heads."""
        self.used += size

    def release(self, size: int) -> None:
        """Give back `size` bytes reserved or charged before."""
        self.used -= size

    def __repr__(self) -> str:
        return f"<MemoryBudget {self.used:,} of {self.limit:,} bytes used>"
