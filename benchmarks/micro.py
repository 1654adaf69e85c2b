"""rawws alone, in-process: frame parsing and encoding (the sans-IO hot paths, no sockets).

Not one of issue 8's scenarios, and no peer is measured: these rows show where
rawws's per-frame time goes, for the optimisation work. Run by the harness as
`python -m benchmarks.micro [--quick]`, pinned to the server's core; prints
JSON rows [name, figure, unit, note]. CPU time, best of a few rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator

from rawws.frames import OP_BINARY, OP_TEXT, FrameParser, encode_frame
from rawws.protocol import Role, WebSocketConnection

KiB = 1024
MiB = 1024 * KiB
KEY = b"\x37\xfa\x21\x3d"
Row = tuple[str, float, str, str]


def format_size(size: int) -> str:
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


# ---- timing (CPU time, best of rounds) -------------------------------------

def best_rate(call: Callable[[], object], work_per_call: float, *, rounds: int = 3,
              round_time: float = 0.2, max_calls: int = 1_000_000) -> float:
    """Units of work per CPU second: the best of `rounds` rounds.

    Each round calls `call` until it has used `round_time` seconds of CPU, or
    made `max_calls` calls, or taken four times `round_time` on the wall
    clock, whichever comes first. The machine is shared, so the clock is this
    process's CPU time (`time.process_time`): time spent descheduled while
    other processes run is not counted, and the best round is the one least
    disturbed by them (through the caches they share). Fast calls are made in
    batches of about a millisecond between clock readings, since reading the
    CPU clock is a system call that costs about as much as a small call.
    """
    cpu = time.process_time
    wall = time.monotonic
    started = cpu()
    call()
    single = cpu() - started
    batch = max(1, min(10_000, max_calls, int(1e-3 / max(single, 1e-7))))
    best = 0.0
    for _ in range(rounds):
        calls = 0
        started = cpu()
        wall_stop = wall() + 4 * round_time
        while calls < max_calls:
            for _ in range(batch):
                call()
            calls += batch
            if cpu() - started >= round_time or wall() >= wall_stop:
                break
        elapsed = cpu() - started
        best = max(best, calls * work_per_call / max(elapsed, 1e-9))
    return best


def best_time(call: Callable[[], object], *, rounds: int = 3, budget: float = 2.0) -> float:
    """CPU seconds taken by the fastest of up to `rounds` calls; no new call after `budget` s."""
    best = float("inf")
    cpu = time.process_time
    stop = time.monotonic() + budget
    for _ in range(rounds):
        started = cpu()
        call()
        best = min(best, max(cpu() - started, 1e-9))
        if time.monotonic() >= stop:
            break
    return best


# ---- 2. frame parsing ---------------------------------------------------

def small_frame_stream(count: int, seed: int = 6455) -> bytes:
    """`count` masked text frames of 20-100 ASCII bytes, as a client sends them."""
    rng = random.Random(seed)
    letters = b"abcdefghijklmnopqrstuvwxyz0123456789 "
    frames = []
    for _ in range(count):
        payload = bytes(rng.choices(letters, k=rng.randint(20, 100)))
        frames.append(encode_frame(OP_TEXT, payload, mask_key=rng.randbytes(4)))
    return b"".join(frames)


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[start:start + size] for start in range(0, len(data), size)]


def feed_connection(chunks: list[bytes], expected: int, max_message_size: int = MiB) -> None:
    """Feed a server connection every chunk, collecting events as an I/O layer would."""
    connection = WebSocketConnection(Role.SERVER, max_message_size=max_message_size)
    received = 0
    for chunk in chunks:
        connection.receive_data(chunk)
        received += len(list(connection.events()))
    if received != expected:
        raise RuntimeError(f"parsed {received} messages, expected {expected}")


def feed_parser(stream: bytes, expected: int) -> None:
    """The FrameParser alone, without the connection's message layer."""
    parser = FrameParser(require_mask=True)
    parser.feed(stream)
    frames = 0
    while parser.next_frame() is not None:
        frames += 1
    if frames != expected:
        raise RuntimeError(f"parsed {frames} frames, expected {expected}")


def bench_parse(quick: bool) -> Iterator[Row]:
    rounds = (1 if quick else 3)
    count = (5_000 if quick else 100_000)
    stream = small_frame_stream(count)
    size_mb = len(stream) / 1e6
    note = f"{count:,} masked text frames of 20-100 B"

    seconds = best_time(lambda: feed_connection([stream], count), rounds=rounds)
    yield ("parse small frames, one buffer", count / seconds, "frames/s",
                 f"{note}, WebSocketConnection(SERVER)")
    yield ("parse small frames, one buffer", size_mb / seconds, "MB/s", "same run")

    chunks = chunked(stream, 4 * KiB)
    seconds = best_time(lambda: feed_connection(chunks, count), rounds=rounds)
    yield ("parse small frames, 4 KiB chunks", count / seconds, "frames/s", note)
    yield ("parse small frames, 4 KiB chunks", size_mb / seconds, "MB/s", "same run")

    seconds = best_time(lambda: feed_parser(stream, count), rounds=rounds)
    yield ("FrameParser alone, small frames", count / seconds, "frames/s",
                 "no messages/events: the framing cost")

    # Large frames: 1 MiB payloads, fed whole and in the server's 256 KiB reads.
    frame_count = (2 if quick else 16)
    payload = os.urandom(MiB)
    binary = b"".join(encode_frame(OP_BINARY, payload, mask_key=os.urandom(4))
                      for _ in range(frame_count))
    text_payload = bytes(random.Random(1).choices(b"abcdefghij ", k=MiB))
    text = b"".join(encode_frame(OP_TEXT, text_payload, mask_key=os.urandom(4))
                    for _ in range(frame_count))
    total_mb = frame_count * MiB / 1e6
    for label, stream_, chunk_size in (("binary, one buffer", binary, None),
                                       ("binary, 256 KiB chunks", binary, 256 * KiB),
                                       ("text, 256 KiB chunks", text, 256 * KiB)):
        parts = [stream_] if chunk_size is None else chunked(stream_, chunk_size)
        seconds = best_time(lambda: feed_connection(parts, frame_count), rounds=rounds)
        yield (f"parse 1 MiB frames, {label}", total_mb / seconds, "MB/s",
                     f"{frame_count} frames" + (", UTF-8 checked" if "text" in label else ""))

    # One byte per receive_data() call: the cost per byte must not grow with the stream.
    for kind in ("small frames", "one frame"):
        for size in (10_000, 100_000):
            if kind == "small frames":
                data = small_frame_stream(size // 40 + 10, seed=size)[:size]
                cut = data
                expected = _whole_frames(cut)
            else:
                payload = b"x" * (size - 8)
                cut = encode_frame(OP_BINARY, payload, mask_key=KEY)
                expected = 1
            if quick and size > 10_000:
                continue
            single_bytes = [cut[index:index + 1] for index in range(len(cut))]
            seconds = best_time(lambda: feed_connection(single_bytes, expected), rounds=rounds,
                                budget=5.0)
            yield (f"parse 1 byte at a time, {kind}, {len(cut) // 1000} KB",
                         seconds / len(cut) * 1e9, "ns/byte",
                         f"{expected:,} frame(s); flat ns/byte = linear")


def _whole_frames(stream: bytes) -> int:
    """How many whole frames a (possibly cut) stream holds."""
    parser = FrameParser(require_mask=True)
    parser.feed(stream)
    frames = 0
    while parser.next_frame() is not None:
        frames += 1
    return frames


# ---- 3. encoding --------------------------------------------------------

def bench_encode(quick: bool) -> Iterator[Row]:
    rounds = (1 if quick else 3)
    round_time = (0.05 if quick else 0.25)
    max_calls = (50_000 if quick else 1_000_000)
    for size in (32, 1 * KiB, 64 * KiB, 1 * MiB):
        payload = os.urandom(size)
        for role, key in (("server, unmasked", None), ("client, masked", KEY)):
            rate = best_rate(lambda: encode_frame(OP_BINARY, payload, mask_key=key), 1,
                             rounds=rounds, round_time=round_time, max_calls=max_calls)
            if size < 64 * KiB:
                yield (f"encode_frame {format_size(size)}, {role}", rate, "frames/s",
                             f"{1e6 / rate:.2f} µs/frame")
            else:
                yield (f"encode_frame {format_size(size)}, {role}", rate * size / 1e6,
                             "MB/s", f"{rate:,.0f} frames/s")
    # The whole send path of one message: send_text() + data_to_send().
    for role in (Role.SERVER, Role.CLIENT):
        connection = WebSocketConnection(role)
        text = "x" * 32

        def send_one() -> None:
            connection.send_text(text)
            connection.data_to_send()

        rate = best_rate(send_one, 1, rounds=rounds, round_time=round_time, max_calls=max_calls)
        yield (f"send_text 32 B + data_to_send, {role.value}", rate, "msgs/s",
                     f"{1e6 / rate:.2f} µs/message")


# ---- 4. the server's whole per-message path, no socket ---------------------

class _LoopbackSocket:
    """Stands in for an accepted socket: every read is the same frame, every write is taken."""

    def __init__(self, first_read: bytes) -> None:
        import socket
        self._pair = socket.socketpair()   # a real descriptor, for the selector
        self.next_read = first_read
        self.writes = 0

    def fileno(self) -> int:
        return self._pair[0].fileno()

    def recv_into(self, buffer: bytearray) -> int:
        count = len(self.next_read)
        buffer[:count] = self.next_read
        return count

    def send(self, data: bytes) -> int:
        self.writes += 1
        return len(data)

    def sendmsg(self, pieces: list[bytes]) -> int:
        self.writes += 1
        return sum(len(piece) for piece in pieces)

    def setsockopt(self, *args: object) -> None:
        pass

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        for sock in self._pair:
            sock.close()


def bench_server_path(quick: bool) -> Iterator[Row]:
    """The echo server's Python work for one 32 B message: the read's callback
    (Transport.on_ready), the session, the protocol's event, the app's reply
    and its write (Transport.flush), with the syscalls taken out. What the
    interpreter spends per message beyond them (issue 17)."""
    from rawws.echo import EchoApp
    from rawws.net.loop import EVENT_READ
    from rawws.net.server import Server
    from rawws.net.transport import Transport

    request = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\n\r\n")
    server = Server(EchoApp(), host="127.0.0.1", port=0, ping_interval=0)
    sock = _LoopbackSocket(request)
    transport = Transport(server, sock, ("127.0.0.1", 1))
    server.connections.add(transport)
    server.loop.register(sock, EVENT_READ, transport.on_ready)
    transport.on_ready(EVENT_READ)
    server._flush_dirty()
    if sock.writes != 1:
        raise RuntimeError("no 101 from the server")
    sock.next_read = encode_frame(OP_TEXT, b"x" * 32, mask_key=KEY)
    on_ready, after_turn = transport.on_ready, server._flush_dirty

    def one_message() -> None:
        on_ready(EVENT_READ)
        after_turn()

    rate = best_rate(one_message, 1, rounds=(1 if quick else 5),
                     round_time=(0.05 if quick else 0.25))
    if sock.writes < 2:
        raise RuntimeError("the echo was not written")
    yield ("server path, 32 B echo, syscalls taken out", 1e6 / rate, "µs/message",
           "Transport.on_ready to Transport.flush, in process")
    transport.teardown()
    server.listener.close()
    server.loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    rows = [*bench_parse(args.quick), *bench_encode(args.quick), *bench_server_path(args.quick)]
    print(json.dumps([list(row) for row in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
