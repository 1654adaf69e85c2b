"""Robustness fuzzing of rawws.resp.RespParser: random and mutated input, fixed seeds.

Whatever bytes a server sends, the parser hands out replies, asks for more
(NEED_DATA), or raises RespProtocolError: never another exception, never a
loop that does not end. How the bytes are cut into reads must not change
what it reports. Well-formed streams, written here by a writer of the test's
own, must come back as the values they encode.

Like tests/test_fuzz.py: every test draws from `random.Random(seed)`, names
the seed and case on failure, runs a bounded number of cases and stops early
past its time budget. `make fuzz` runs longer through FUZZ_ITERATIONS,
FUZZ_SECONDS and FUZZ_SEEDS.
"""
from __future__ import annotations

import os
import random
import time

import pytest

from rawws.resp import NEED_DATA, ReplyError, RespParser, RespProtocolError

SEED_COUNT = max(1, int(os.environ.get("FUZZ_SEEDS", "3")))
SEEDS = ((6379, 2009, 1024) + tuple(range(1, SEED_COUNT + 1)))[:SEED_COUNT]
CASES = int(os.environ.get("FUZZ_ITERATIONS", "300"))
TIME_BUDGET = float(os.environ.get("FUZZ_SECONDS", "0.6"))


def deadline_runs():
    """Case numbers 0.. until CASES or the time budget runs out (at least 20 cases)."""
    stop = time.monotonic() + TIME_BUDGET
    for case in range(CASES):
        if case >= 20 and time.monotonic() > stop:
            return
        yield case


# ---- writing replies -------------------------------------------------------------

def random_reply(rng: random.Random, depth: int = 0) -> tuple[bytes, object]:
    """One reply of any type, as (wire bytes, the value the parser must give).

    Errors are given as ("error", message), the form `plain()` turns them into.
    """
    roll = rng.random()
    if roll < 0.15:
        text = "".join(rng.choice("OK PONG queued-x") for _ in range(rng.randint(0, 12)))
        return b"+" + text.encode() + b"\r\n", text
    if roll < 0.25:
        message = rng.choice(("ERR", "WRONGTYPE", "NOSCRIPT")) + " bad thing " + str(rng.random())
        return b"-" + message.encode() + b"\r\n", ("error", message)
    if roll < 0.40:
        value = rng.choice((0, -1, rng.randint(-1000, 1000), 2 ** 63 - 1, -2 ** 63,
                            rng.randint(-2 ** 63, 2 ** 63 - 1)))
        return b":%d\r\n" % value, value
    if roll < 0.65:
        payload = rng.randbytes(rng.choice((0, 1, 2, rng.randint(0, 40), rng.randint(0, 3000))))
        if rng.random() < 0.2:
            payload += b"\r\n"   # CR and LF inside a bulk string are data
        return b"$%d\r\n" % len(payload) + payload + b"\r\n", payload
    if roll < 0.72:
        return rng.choice(((b"$-1\r\n", None), (b"*-1\r\n", None)))
    if depth >= 5:
        return b"*0\r\n", []
    items = [random_reply(rng, depth + 1) for _ in range(rng.choice((0, 1, 2, rng.randint(0, 8))))]
    return (b"*%d\r\n" % len(items) + b"".join(data for data, _ in items),
            [value for _, value in items])


def random_garbage(rng: random.Random) -> bytes:
    """Bytes made mostly of RESP's own characters, so they get past the first check."""
    pieces = []
    for _ in range(rng.randint(1, 30)):
        roll = rng.random()
        if roll < 0.35:
            pieces.append(bytes((rng.choice(b"+-:$*%_>?\r\n"),)))
        elif roll < 0.55:
            pieces.append(b"%d" % rng.choice((-2, -1, 0, 1, 3, 10, rng.randint(0, 10 ** 6),
                                              2 ** 63, 10 ** 30)))
        elif roll < 0.80:
            pieces.append(b"\r\n")
        else:
            pieces.append(rng.randbytes(rng.randint(1, 6)))
    return b"".join(pieces)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """`data` with one to four random edits: bit flips, new bytes, cuts, repeats."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        edit = rng.random()
        position = rng.randint(0, len(data))
        if edit < 0.40 and data:
            data[min(position, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif edit < 0.55 and data:
            data[min(position, len(data) - 1)] = rng.choice(b"+-:$*\r\n0123456789")
        elif edit < 0.65:
            del data[position:]
        elif edit < 0.80:
            del data[position:position + rng.randint(1, 8)]
        elif edit < 0.90:
            data[position:position] = rng.randbytes(rng.randint(1, 8))
        else:
            end = min(len(data), position + rng.randint(1, 30))
            data[position:position] = data[position:end]
    return bytes(data)


def random_chunks(rng: random.Random, data: bytes) -> list[bytes]:
    """`data` cut into reads of random sizes, none empty."""
    chunks = []
    position = 0
    while position < len(data):
        size = rng.choice((1, 1, 2, 3, rng.randint(1, 16), rng.randint(1, 200),
                           rng.randint(1, len(data))))
        chunks.append(data[position:position + size])
        position += size
    return chunks


def random_limits(rng: random.Random) -> dict:
    """Default limits mostly; now and then small ones that the input will break."""
    if rng.random() < 0.6:
        return {}
    return {"max_bulk_length": rng.choice((0, 5, 100, 2000)),
            "max_array_length": rng.choice((0, 1, 3, 8)),
            "max_depth": rng.choice((0, 1, 2, 4)),
            "max_line_length": rng.choice((1, 4, 30, 100))}


# ---- running the parser ----------------------------------------------------------

def plain(reply):
    if isinstance(reply, ReplyError):
        return ("error", reply.message)
    if isinstance(reply, list):
        return [plain(item) for item in reply]
    return reply


def check_value(reply, label: str) -> None:
    """A reply is made of RESP2's types only."""
    stack = [reply]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
        else:
            assert value is None or isinstance(value, (str, bytes, int, ReplyError)), label
            assert not isinstance(value, bool), label


def parse(chunks: list[bytes], limits: dict, label: str) -> tuple[list, bool, int]:
    """(replies, whether it failed, bytes left buffered); any other exception fails the test."""
    parser = RespParser(**limits)
    replies = []
    for chunk in chunks:
        parser.feed(chunk)
        for _ in range(len(chunk) + 1):   # a reply needs at least 3 bytes: never more loops
            try:
                reply = parser.next_reply()
            except RespProtocolError:
                return replies, True, parser.buffered
            except Exception as error:   # noqa: BLE001 - the point: nothing else may escape
                pytest.fail(f"{label}: next_reply raised {error!r}")
            if reply is NEED_DATA:
                break
            check_value(reply, label)
            replies.append(plain(reply))
        else:
            pytest.fail(f"{label}: more replies than the bytes could hold")
    return replies, False, parser.buffered


@pytest.mark.parametrize("seed", SEEDS)
def test_well_formed_replies_come_back_however_they_are_cut(seed):
    rng = random.Random(seed)
    for case in deadline_runs():
        replies = [random_reply(rng) for _ in range(rng.randint(1, 6))]
        stream = b"".join(data for data, _ in replies)
        expected = [value for _, value in replies]
        label = f"seed {seed} case {case} (well-formed)"
        assert parse([stream], {}, label) == (expected, False, 0), label
        assert parse(random_chunks(rng, stream), {}, label) == (expected, False, 0), label


@pytest.mark.parametrize("seed", SEEDS)
def test_random_bytes_give_replies_or_a_protocol_error(seed):
    rng = random.Random(seed)
    for case in deadline_runs():
        stream = random_garbage(rng)
        limits = random_limits(rng)
        label = f"seed {seed} case {case} (garbage {stream!r}, limits {limits})"
        whole = parse([stream], limits, label)
        assert parse(random_chunks(rng, stream), limits, label + ", cut") == whole, label


@pytest.mark.parametrize("seed", SEEDS)
def test_mutated_replies_give_replies_or_a_protocol_error(seed):
    rng = random.Random(seed)
    for case in deadline_runs():
        stream = mutate(rng, b"".join(random_reply(rng)[0] for _ in range(rng.randint(1, 4))))
        limits = random_limits(rng)
        label = f"seed {seed} case {case} (mutated, limits {limits})"
        whole = parse([stream], limits, label)
        assert parse(random_chunks(rng, stream), limits, label + ", cut") == whole, label


@pytest.mark.parametrize("seed", SEEDS)
def test_a_reply_cut_short_waits_for_the_rest_and_never_fails(seed):
    rng = random.Random(seed)
    for case in deadline_runs():
        data, value = random_reply(rng)
        cut = rng.randint(0, len(data) - 1)
        label = f"seed {seed} case {case} (cut at {cut} of {len(data)})"
        assert parse([data[:cut]], {}, label)[:2] == ([], False), label
        assert parse([data[:cut], data[cut:]], {}, label) == ([value], False, 0), label
