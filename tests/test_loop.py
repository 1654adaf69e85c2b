"""rawws.net.loop: timers and wake-ups, without sockets of our own."""
from __future__ import annotations

import threading

from rawws.net.loop import EventLoop


def test_timers_run_in_deadline_order():
    loop = EventLoop()
    ran = []
    loop.call_later(0.02, lambda: ran.append("late"))
    loop.call_later(0.0, lambda: ran.append("soon"))
    loop.call_later(0.03, loop.stop)
    loop.run_forever()
    loop.close()
    assert ran == ["soon", "late"]


def test_a_cancelled_timer_never_runs_and_lets_go_of_its_callback():
    loop = EventLoop()
    ran = []
    timer = loop.call_later(0.0, lambda: ran.append("no"))
    timer.cancel()
    assert timer.callback is None
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    loop.close()
    assert ran == []


def test_call_soon_threadsafe_wakes_a_loop_blocked_in_select():
    loop = EventLoop()
    ran = threading.Event()

    def from_elsewhere():
        loop.call_soon_threadsafe(lambda: (ran.set(), loop.stop()))

    threading.Timer(0.05, from_elsewhere).start()
    guard = loop.call_later(5.0, loop.stop)   # bounded: never waits past 5 s
    loop.run_forever()
    guard.cancel()
    loop.close()
    assert ran.is_set()


def test_an_exception_in_a_callback_does_not_stop_the_loop():
    loop = EventLoop()
    ran = []
    loop.call_later(0.0, lambda: 1 / 0)
    loop.call_later(0.01, lambda: ran.append("after"))
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    loop.close()
    assert ran == ["after"]
