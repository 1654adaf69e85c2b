"""In-process benchmarks of the sans-IO hot paths: mask(), frame parsing, frame encoding.

No sockets here: these figures are the CPU cost of the protocol code alone,
the ceiling for anything the server does with the same bytes.
"""
from __future__ import annotations

import os
import random
from collections.abc import Iterator

from rawws.frames import OP_BINARY, OP_TEXT, FrameParser, encode_frame, mask
from rawws.protocol import Role, WebSocketConnection

from .core import KiB, MiB, Config, Result, best_rate, best_time, format_size

KEY = b"\x37\xfa\x21\x3d"


# ---- 1. mask() ----------------------------------------------------------

def naive_mask(data: bytes, key: bytes) -> bytes:
    """The per-byte loop that mask() replaces: the baseline."""
    return bytes(byte ^ key[index & 3] for index, byte in enumerate(data))


def bench_mask(config: Config) -> Iterator[Result]:
    rounds = config.pick(5, 2)
    round_time = config.pick(0.25, 0.05)
    for size in (1 * KiB, 64 * KiB, 1 * MiB, 16 * MiB):
        data = os.urandom(size)
        rate = best_rate(lambda: mask(data, KEY), size, rounds=rounds, round_time=round_time,
                         max_calls=config.pick(200_000, 20_000))
        yield Result(f"mask() {format_size(size)}", rate / 1e6, "MB/s",
                     f"rawws.frames.mask, best of {rounds}")
    size = 64 * KiB
    data = os.urandom(size)
    assert naive_mask(data, KEY) == mask(data, KEY)
    rate = best_rate(lambda: naive_mask(data, KEY), size, rounds=rounds, round_time=round_time,
                     max_calls=100)
    yield Result(f"naive per-byte mask {format_size(size)}", rate / 1e6, "MB/s", "baseline")


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
        received += len(connection.events())
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


def bench_parse(config: Config) -> Iterator[Result]:
    rounds = config.pick(3, 1)
    count = config.pick(100_000, 5_000)
    stream = small_frame_stream(count)
    size_mb = len(stream) / 1e6
    note = f"{count:,} masked text frames of 20-100 B"

    seconds = best_time(lambda: feed_connection([stream], count), rounds=rounds)
    yield Result("parse small frames, one buffer", count / seconds, "frames/s",
                 f"{note}, WebSocketConnection(SERVER)")
    yield Result("parse small frames, one buffer", size_mb / seconds, "MB/s", "same run")

    chunks = chunked(stream, 4 * KiB)
    seconds = best_time(lambda: feed_connection(chunks, count), rounds=rounds)
    yield Result("parse small frames, 4 KiB chunks", count / seconds, "frames/s", note)
    yield Result("parse small frames, 4 KiB chunks", size_mb / seconds, "MB/s", "same run")

    seconds = best_time(lambda: feed_parser(stream, count), rounds=rounds)
    yield Result("FrameParser alone, small frames", count / seconds, "frames/s",
                 "no messages/events: the framing cost")

    # Large frames: 1 MiB payloads, fed whole and in the server's 256 KiB reads.
    frame_count = config.pick(16, 2)
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
        yield Result(f"parse 1 MiB frames, {label}", total_mb / seconds, "MB/s",
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
            if config.quick and size > 10_000:
                continue
            single_bytes = [cut[index:index + 1] for index in range(len(cut))]
            seconds = best_time(lambda: feed_connection(single_bytes, expected), rounds=rounds,
                                budget=5.0)
            yield Result(f"parse 1 byte at a time, {kind}, {len(cut) // 1000} KB",
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

def bench_encode(config: Config) -> Iterator[Result]:
    rounds = config.pick(3, 1)
    round_time = config.pick(0.25, 0.05)
    max_calls = config.pick(1_000_000, 50_000)
    for size in (32, 1 * KiB, 64 * KiB, 1 * MiB):
        payload = os.urandom(size)
        for role, key in (("server, unmasked", None), ("client, masked", KEY)):
            rate = best_rate(lambda: encode_frame(OP_BINARY, payload, mask_key=key), 1,
                             rounds=rounds, round_time=round_time, max_calls=max_calls)
            if size < 64 * KiB:
                yield Result(f"encode_frame {format_size(size)}, {role}", rate, "frames/s",
                             f"{1e6 / rate:.2f} µs/frame")
            else:
                yield Result(f"encode_frame {format_size(size)}, {role}", rate * size / 1e6,
                             "MB/s", f"{rate:,.0f} frames/s")
    # The whole send path of one message: send_text() + data_to_send().
    for role in (Role.SERVER, Role.CLIENT):
        connection = WebSocketConnection(role)
        text = "x" * 32

        def send_one() -> None:
            connection.send_text(text)
            connection.data_to_send()

        rate = best_rate(send_one, 1, rounds=rounds, round_time=round_time, max_calls=max_calls)
        yield Result(f"send_text 32 B + data_to_send, {role.value}", rate, "msgs/s",
                     f"{1e6 / rate:.2f} µs/message")
