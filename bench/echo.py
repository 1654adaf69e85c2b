"""Echo round trips over real sockets: `python -m rawws.echo` in a subprocess, rawws.client here.

Both ends are Python, each on its own core (the machine has two), so these
figures are the cost of a whole round trip through rawws: client encode and
mask, loopback TCP, server parse, unmask, UTF-8 check, app callback, encode,
flush, and the client's parse.
"""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator

from rawws.client import ClientConnection, connect

from .core import (KiB, MiB, Config, Result, ServerProcess, cpu_note, format_size, percentile,
                   python_module)

SMALL_MESSAGE = "m" * 32
RECV_TIMEOUT = 30.0


def echo_server() -> ServerProcess:
    return ServerProcess(python_module("rawws.echo", "--port", "0", "--ping-interval", "0"))


def round_trip_latencies(ws: ClientConnection, count: int, budget: float) -> list[float]:
    """Seconds per round trip of a 32-byte text message, at most `count` or `budget` seconds."""
    latencies = []
    clock = time.perf_counter
    stop = clock() + budget
    for _ in range(count):
        started = clock()
        ws.send_text(SMALL_MESSAGE)
        reply = ws.recv(RECV_TIMEOUT)
        latencies.append(clock() - started)
        if reply != SMALL_MESSAGE:
            raise RuntimeError("the echo differs from the message sent")
        if clock() >= stop:
            break
    return latencies


def pipelined(ws: ClientConnection, message: str | bytes, window: int, max_messages: int,
              budget: float) -> tuple[int, float]:
    """Send `window` messages, then read their `window` echoes; repeat. (messages, seconds)

    The window stays under the server's read-pause threshold (1 MiB of unsent
    output), since this blocking client does not read while it sends.
    """
    clock = time.perf_counter
    started = clock()
    stop = started + budget
    done = 0
    while done < max_messages and clock() < stop:
        for _ in range(window):
            ws.send(message)
        for _ in range(window):
            if len(ws.recv(RECV_TIMEOUT)) != len(message):
                raise RuntimeError("the echo differs from the message sent")
        done += window
    return done, clock() - started


def large_round_trips(ws: ClientConnection, size: int, count: int, budget: float) -> list[float]:
    message = os.urandom(size)
    seconds = []
    clock = time.perf_counter
    stop = clock() + budget
    for _ in range(count):
        started = clock()
        ws.send_binary(message)
        reply = ws.recv(RECV_TIMEOUT)
        seconds.append(clock() - started)
        if reply != message:
            raise RuntimeError("the echo differs from the message sent")
        if clock() >= stop:
            break
    return seconds


def echo_results(url: str, config: Config, label: str,
                 server: ServerProcess | None = None) -> Iterator[Result]:
    """The echo figures against the server at `url`; `label` names the server in each row."""
    with connect(url, max_message_size=32 * MiB) as ws:
        round_trip_latencies(ws, config.pick(200, 20), 2.0)   # warm up both ends

        count = config.pick(5_000, 300)
        latencies = sorted(round_trip_latencies(ws, count, config.pick(10.0, 1.0)))
        note = f"{len(latencies):,} round trips of 32 B text"
        yield Result(f"{label}: latency median", statistics.median(latencies) * 1e6, "µs", note)
        yield Result(f"{label}: latency p99", percentile(latencies, 0.99) * 1e6, "µs", note)

        cpu_before = server_cpu(server)
        messages, seconds = pipelined(ws, SMALL_MESSAGE, 100, config.pick(100_000, 2_000),
                                      config.pick(6.0, 0.5))
        used = server_cpu(server) - cpu_before
        yield Result(f"{label}: pipelined 32 B", messages / seconds, "msgs/s",
                     f"windows of 100; {cpu_note(used, messages, 'msg')}")

        size = 64 * KiB
        cpu_before = server_cpu(server)
        messages, seconds = pipelined(ws, os.urandom(size), 8, config.pick(20_000, 200),
                                      config.pick(6.0, 0.5))
        yield Result(f"{label}: pipelined 64 KiB", messages / seconds, "msgs/s",
                     f"windows of 8; {messages * size / seconds / 1e6:.0f} MB/s each way; "
                     f"{cpu_note(server_cpu(server) - cpu_before, messages, 'msg')}")

        for size, count, budget in ((MiB, config.pick(30, 3), config.pick(6.0, 1.0)),
                                    (16 * MiB, config.pick(5, 1), config.pick(12.0, 4.0))):
            cpu_before = server_cpu(server)
            seconds = large_round_trips(ws, size, count, budget)
            used = server_cpu(server) - cpu_before
            median = statistics.median(seconds)
            yield Result(f"{label}: {format_size(size)} binary round trip", size / median / 1e6,
                         "MB/s", f"message size / round trip; median of {len(seconds)}, "
                         f"{median * 1e3:.1f} ms; {cpu_note(used, len(seconds), 'msg')}")


def server_cpu(server: ServerProcess | None) -> float:
    return server.cpu_seconds() if server is not None else 0.0


def bench_echo(config: Config) -> Iterator[Result]:
    with echo_server() as server:
        yield from echo_results(server.url, config, "echo", server)
