"""A small `selectors` event loop: ready sockets, a timer heap, no threads.

Each registered socket has one callback, called with the ready event mask.
Timers are (deadline, sequence, Timer) entries in a heap; a cancelled timer
stays in the heap, marked, until its deadline pops it (cheaper than removal).
`call_soon_threadsafe` (also safe from a signal handler) wakes a blocked
`select()` through a socket pair.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE

log = logging.getLogger("rawws.loop")


class Timer:
    """A callback due at `deadline` (monotonic seconds); `cancel()` stops it."""

    __slots__ = ("deadline", "callback", "cancelled")

    def __init__(self, deadline: float, callback: Callable[[], object]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = None   # let go of what it refers to (a dropped connection's buffers)


class EventLoop:
    """Runs socket callbacks and timers until `stop()`."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self._ready: deque[Callable[[], object]] = deque()
        self._after_iteration: list[Callable[[], object]] = []
        self._running = False
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self.selector.register(self._wake_reader, EVENT_READ, self._drain_wakeups)

    # ---- registration ---------------------------------------------------

    def register(self, sock: socket.socket, events: int, callback: Callable[[int], object]) -> None:
        self.selector.register(sock, events, callback)

    def modify(self, sock: socket.socket, events: int, callback: Callable[[int], object]) -> None:
        self.selector.modify(sock, events, callback)

    def unregister(self, sock: socket.socket) -> None:
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def after_iteration(self, callback: Callable[[], object]) -> None:
        """Run `callback` after every batch of events (the server flushes output there)."""
        self._after_iteration.append(callback)

    # ---- scheduling -----------------------------------------------------

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        timer = Timer(time.monotonic() + delay, callback)
        heapq.heappush(self._timers, (timer.deadline, next(self._sequence), timer))
        return timer

    def call_soon_threadsafe(self, callback: Callable[[], object]) -> None:
        """Run `callback` on the loop's thread soon; safe from other threads and signal handlers."""
        self._ready.append(callback)
        try:
            self._wake_writer.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full, so the loop is already due to wake

    def _drain_wakeups(self, _mask: int) -> None:
        try:
            while self._wake_reader.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    # ---- running --------------------------------------------------------

    def stop(self) -> None:
        self._running = False

    def run_forever(self) -> None:
        self._running = True
        timers = self._timers
        while self._running:
            timeout = None
            if self._ready:
                timeout = 0
            elif timers:
                timeout = max(0.0, timers[0][0] - time.monotonic())
            for key, mask in self.selector.select(timeout):
                try:   # as _run does, without a call per ready socket (hot path)
                    key.data(mask)
                except Exception:
                    log.exception("unhandled error in event loop callback %r", key.data)
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                timer = heapq.heappop(timers)[2]
                if not timer.cancelled:
                    self._run(timer.callback)
            while self._ready:
                self._run(self._ready.popleft())
            for callback in self._after_iteration:
                self._run(callback)

    @staticmethod
    def _run(callback: Callable, *args: object) -> None:
        """Call a callback; an exception is logged, never allowed to stop the loop."""
        try:
            callback(*args)
        except Exception:
            log.exception("unhandled error in event loop callback %r", callback)

    def close(self) -> None:
        self.selector.close()
        self._wake_reader.close()
        self._wake_writer.close()
