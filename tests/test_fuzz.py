"""Robustness fuzzing of the sans-IO parsers: random and mutated input, fixed seeds.

Whatever bytes a peer sends, a `WebSocketConnection` must either report
events or fail the connection cleanly (§7.1.7): state CLOSED, a Close frame
queued with 1002, 1007 or 1009, and the transport marked for closing. It must
never raise, and how the bytes are cut into reads must not change what it
reports. A frame header must get the same verdict from the parser and from
the annotator of `rawws.tools.trace`: both accept it, or both name the same
rule first. A `RequestParser` must either return request heads or raise an
`HTTPError` carrying a 4xx or 5xx status.

Every test draws from `random.Random(seed)` with a fixed seed, so a failure
is reproducible: its message names the seed and the case. Each test runs a
bounded number of cases and stops early past its time budget, so the whole
file takes a few seconds. `make fuzz` runs longer, through three knobs read
from the environment: FUZZ_ITERATIONS (cases per seed and test), FUZZ_SECONDS
(time budget per seed and test) and FUZZ_SEEDS (how many seeds).
"""
from __future__ import annotations

import os
import random
import time

import pytest

from rawws import masking
from rawws.errors import HTTPError, ProtocolError
from rawws.frames import (OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT,
                          RSV1_BIT, FrameParser, encode_close_payload, encode_frame, mask)
from rawws.http import Request, RequestParser
from rawws.protocol import (BinaryMessage, CloseReceived, Ping, Pong, Role, State, TextMessage,
                            WebSocketConnection)
from rawws.tools.trace import check_header, header_size, parse_header

from tests.masking_paths import masking_path  # noqa: F401 (a fixture)

# The frame tests run on each masking implementation: pure Python, and C when built.
on_each_masking_path = pytest.mark.usefixtures("masking_path")

SEED_COUNT = max(1, int(os.environ.get("FUZZ_SEEDS", "3")))
SEEDS = ((6455, 2011, 1007) + tuple(range(1, SEED_COUNT + 1)))[:SEED_COUNT]   # then 1, 2, 3...
CASES = int(os.environ.get("FUZZ_ITERATIONS", "150"))       # per seed and test; the time
TIME_BUDGET = float(os.environ.get("FUZZ_SECONDS", "0.6"))  # budget (s) may stop a run sooner
FAILURE_CODES = {1002, 1007, 1009}

# Characters of every UTF-8 length (RFC 3629), so splits fall inside characters.
ALPHABET = "ab z\u00e9\u00fc\u03ba\u20ac\u4e2d\U0001D11E\U0001F600\x00"


def deadline_runs():
    """Case numbers 0.. until CASES or the time budget runs out (at least 20 cases)."""
    stop = time.monotonic() + TIME_BUDGET
    for case in range(CASES):
        if case >= 20 and time.monotonic() > stop:
            return
        yield case


# ---- generating frame streams --------------------------------------------

def random_text(rng: random.Random, most: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, most)))


def random_size(rng: random.Random) -> int:
    """A payload size; now and then at the edges of the 7-, 16- and 64-bit length forms."""
    roll = rng.random()
    if roll < 0.80:
        return rng.randint(0, 40)
    if roll < 0.93:
        return rng.randint(120, 130)
    if roll < 0.98:
        return rng.randint(200, 1000)
    return rng.randint(65_530, 65_545)


def split_points(rng: random.Random, size: int, pieces: int) -> list[int]:
    return sorted(rng.randint(0, size) for _ in range(pieces - 1))


def well_formed_stream(rng: random.Random, peer_masks: bool) -> tuple[bytes, list]:
    """A valid stream from the peer of a connection, and the events it must give.

    Messages of text (split into fragments anywhere, inside characters too)
    and binary, pings and pongs, some between the fragments of a message, and
    maybe a Close at the end.
    """
    def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
        key = rng.randbytes(4) if peer_masks else None
        return encode_frame(opcode, payload, fin=fin, mask_key=key)

    frames: list[bytes] = []
    events: list = []
    for _ in range(rng.randint(1, 6)):
        kind = rng.random()
        if kind < 0.2:
            payload = rng.randbytes(rng.randint(0, 125))
            if rng.random() < 0.5:
                frames.append(frame(OP_PING, payload))
                events.append(Ping(payload))
            else:
                frames.append(frame(OP_PONG, payload))
                events.append(Pong(payload))
            continue
        if kind < 0.6:
            text = random_text(rng, random_size(rng))
            opcode, payload, event = OP_TEXT, text.encode("utf-8"), TextMessage(text)
        else:
            opcode = OP_BINARY
            payload = rng.randbytes(random_size(rng))
            event = BinaryMessage(payload)
        pieces = rng.choice((1, 1, 2, 3, 5))
        bounds = [0, *split_points(rng, len(payload), pieces), len(payload)]
        for index, (start, end) in enumerate(zip(bounds, bounds[1:])):
            last = index == pieces - 1
            frames.append(frame(opcode if index == 0 else OP_CONTINUATION, payload[start:end],
                                fin=last))
            if not last and rng.random() < 0.2:
                ping = rng.randbytes(rng.randint(0, 10))
                frames.append(frame(OP_PING, ping))
                events.append(Ping(ping))
        events.append(event)
    if rng.random() < 0.3:
        code = rng.choice((1000, 1001, 1003, 1011, 3000, 4999))
        reason = random_text(rng, 10)
        frames.append(frame(OP_CLOSE, encode_close_payload(code, reason)))
        events.append(CloseReceived(code, reason))
    return b"".join(frames), events


def random_frame(rng: random.Random, peer_masks: bool) -> bytes:
    """One frame with any header: reserved opcodes and bits, wrong masking,
    non-minimal or absurd lengths, control frames that are too long or
    fragmented, text that is not UTF-8."""
    opcode = rng.choice((OP_CONTINUATION, OP_TEXT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG,
                         rng.randrange(16)))
    first = opcode | (0x80 if rng.random() < 0.7 else 0)
    if rng.random() < 0.05:
        first |= rng.choice((0x40, 0x20, 0x10))
    if opcode == OP_TEXT and rng.random() < 0.6:
        payload = random_text(rng, random_size(rng)).encode("utf-8")
    elif opcode == OP_CLOSE and rng.random() < 0.6:
        payload = rng.randint(0, 5000).to_bytes(2, "big") + random_text(rng, 20).encode("utf-8")
    else:
        payload = rng.randbytes(random_size(rng))
    length = len(payload)
    form = rng.random()
    if form < 0.05:
        length = rng.choice((2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, 2 ** 31))   # lies, too big
    elif form < 0.10:
        length = max(0, length + rng.randint(-3, 3))                       # lies, a little
    masked = peer_masks if rng.random() < 0.95 else not peer_masks
    mask_bit = 0x80 if masked else 0
    if length < 126 and form < 0.97:
        header = bytes((first, mask_bit | length))
    elif length < 65536 and form < 0.99:
        header = bytes((first, mask_bit | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((first, mask_bit | 127)) + length.to_bytes(8, "big")
    if masked:
        key = rng.randbytes(4)
        masked_payload = bytes(byte ^ key[index % 4] for index, byte in enumerate(payload))
        return header + key + masked_payload
    return header + payload


def mutate(rng: random.Random, data: bytes) -> bytes:
    """`data` with one to four random edits: bit flips, new bytes, cuts, repeats."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        edit = rng.random()
        position = rng.randint(0, len(data))
        if edit < 0.45 and data:
            index = min(position, len(data) - 1)
            data[index] ^= 1 << rng.randrange(8)
        elif edit < 0.60 and data:
            data[min(position, len(data) - 1)] = rng.randrange(256)
        elif edit < 0.70:
            del data[position:]                                       # truncated
        elif edit < 0.80:
            del data[position:position + rng.randint(1, 8)]
        elif edit < 0.90:
            data[position:position] = rng.randbytes(rng.randint(1, 8))
        else:
            end = min(len(data), position + rng.randint(1, 30))
            data[position:position] = data[position:end]              # repeated
    return bytes(data)


def random_chunks(rng: random.Random, data: bytes) -> list[bytes]:
    """`data` cut into reads of random sizes, none empty (b"" would mean EOF)."""
    chunks = []
    position = 0
    while position < len(data):
        size = rng.choice((1, 1, 2, 3, rng.randint(1, 16), rng.randint(1, 200),
                           rng.randint(1, len(data))))
        chunks.append(data[position:position + size])
        position += size
    return chunks


# ---- running a connection --------------------------------------------------

def sent_summary(connection: WebSocketConnection) -> list[tuple[int, bytes | int]]:
    """What the connection sent, as its peer decodes it; Close frames by code only
    (the reason of a failure may be worded differently)."""
    peer = FrameParser(require_mask=connection.role is Role.CLIENT)
    peer.feed(connection.data_to_send())
    summary = []
    while (frame := peer.next_frame()) is not None:
        if frame.opcode == OP_CLOSE:
            summary.append((OP_CLOSE, int.from_bytes(frame.payload[:2], "big")))
        else:
            summary.append((frame.opcode, frame.payload))
    assert peer.buffered == 0
    return summary


def feed(role: Role, chunks: list[bytes], max_message_size: int, label: str):
    """Feed every chunk; return (events, sent summary, failure code, state, code received).

    Any exception out of receive_data() fails the test, naming the case.
    """
    connection = WebSocketConnection(role, max_message_size=max_message_size)
    events = []
    for chunk in chunks:
        if not chunk:
            continue   # b"" is EOF; a mutated stream may be empty
        try:
            connection.receive_data(chunk)
        except Exception as error:   # noqa: BLE001 - the point: nothing may escape
            pytest.fail(f"{label}: receive_data raised {error!r}")
        events += list(connection.events())
    sent = sent_summary(connection)
    check_outcome(connection, events, sent, label)
    # Nothing after a failure or a Close is processed (§7.1.7, §1.4).
    if connection.state is State.CLOSED:
        connection.receive_data(b"\x81\x00\x89\x00")
        assert list(connection.events()) == [] and connection.data_to_send() == b"", label
    failure = connection.failure.close_code if connection.failure is not None else None
    return events, sent, failure, connection.state, connection.close_received


def check_outcome(connection: WebSocketConnection, events: list, sent: list, label: str) -> None:
    for event in events:
        if isinstance(event, TextMessage):
            assert isinstance(event.data, str), label
        elif isinstance(event, BinaryMessage):
            assert isinstance(event.data, bytes), label
        elif isinstance(event, (Ping, Pong)):
            assert isinstance(event.payload, bytes) and len(event.payload) <= 125, label
        else:
            assert isinstance(event, CloseReceived), label
            assert event is events[-1], f"{label}: events after the peer's Close"
    if connection.failure is not None:
        # A clean failure: the Close with the error's code is the last thing sent.
        assert connection.failure.close_code in FAILURE_CODES, label
        assert connection.state is State.CLOSED, label
        assert connection.should_close_transport, label
        assert sent and sent[-1] == (OP_CLOSE, connection.failure.close_code), label
        assert not any(isinstance(event, CloseReceived) for event in events), label
    elif connection.state is State.CLOSED:
        assert isinstance(events[-1], CloseReceived), f"{label}: closed without a reason"
    else:
        assert connection.state is State.OPEN, label
        assert all(opcode != OP_CLOSE for opcode, _ in sent), label


ROLES = [pytest.param(Role.SERVER, id="server"), pytest.param(Role.CLIENT, id="client")]


@on_each_masking_path
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("role", ROLES)
def test_well_formed_stream_gives_the_same_events_however_it_is_cut(role, seed):
    rng = random.Random(seed)
    peer_masks = role is Role.SERVER
    for case in deadline_runs():
        stream, expected = well_formed_stream(rng, peer_masks)
        label = f"seed {seed} case {case} ({role.value}, well-formed)"
        whole = feed(role, [stream], 1 << 20, label)
        assert whole[0] == expected, label
        assert whole[2] is None, f"{label}: failed with {whole[2]}"
        cut = feed(role, random_chunks(rng, stream), 1 << 20, label + ", cut")
        assert cut == whole, label


@on_each_masking_path
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("role", ROLES)
def test_random_frames_give_events_or_a_clean_failure(role, seed):
    rng = random.Random(seed)
    peer_masks = role is Role.SERVER
    for case in deadline_runs():
        stream = b"".join(random_frame(rng, peer_masks) for _ in range(rng.randint(1, 6)))
        limit = rng.choice((1 << 20, 1000, 125))
        label = f"seed {seed} case {case} ({role.value}, random frames, limit {limit})"
        whole = feed(role, [stream], limit, label)
        cut = feed(role, random_chunks(rng, stream), limit, label + ", cut")
        assert cut == whole, label


@on_each_masking_path
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("role", ROLES)
def test_mutated_streams_give_events_or_a_clean_failure(role, seed):
    rng = random.Random(seed)
    peer_masks = role is Role.SERVER
    for case in deadline_runs():
        stream, _ = well_formed_stream(rng, peer_masks)
        stream = mutate(rng, stream)
        limit = rng.choice((1 << 20, 1000, 125))
        label = f"seed {seed} case {case} ({role.value}, mutated, limit {limit})"
        whole = feed(role, [stream], limit, label)
        cut = feed(role, random_chunks(rng, stream), limit, label + ", cut")
        assert cut == whole, label


@on_each_masking_path
@pytest.mark.parametrize("seed", SEEDS)
def test_mask_follows_the_rfc_rule_across_its_chunk_boundaries(seed):
    # The fast mask() works in 32 KiB chunks with a shorter last one (rawws.masking):
    # check lengths around the chunk size against §5.3 byte by byte.
    rng = random.Random(seed)
    chunk = 32 * 1024
    lengths = [chunk + delta for delta in (-1, 0, 1, 2, 3, 4, 5)]
    lengths += [2 * chunk + rng.randint(1, chunk - 1), rng.randint(1, 3 * chunk)]
    for length in lengths:
        data = rng.randbytes(length)
        key = rng.choice((rng.randbytes(4), b"\x00\x00\x00\x00", b"\xff\xff\xff\xff"))
        expected = bytes(byte ^ key[index % 4] for index, byte in enumerate(data))
        assert masking.mask(data, key) == expected, f"seed {seed}, length {length}, key {key.hex()}"


# ---- one frame header, two readers: the parser and the annotator -------------

def random_header(rng: random.Random) -> bytes:
    """A whole frame header, valid or not: `random_frame`'s kind of fields (RSV
    bits, reserved opcodes, either masking, lengths in any form, top bit set),
    now and then mutated or plain random bytes, cut or padded to its size."""
    roll = rng.random()
    if roll < 0.15:
        data = rng.randbytes(rng.randint(2, 14))
    else:
        opcode = rng.choice((OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG,
                             rng.randrange(16)))
        first = opcode | (0x80 if rng.random() < 0.7 else 0)
        if rng.random() < 0.12:
            first |= rng.choice((0x40, 0x40, 0x20, 0x10, 0x70))
        length = rng.choice((rng.randint(0, 125), rng.randint(120, 130), rng.randint(0, 70_000),
                             rng.choice((2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, 2 ** 31))))
        form = rng.random()
        mask_bit = 0x80 if rng.random() < 0.5 else 0
        if length < 126 and form < 0.9:
            data = bytes((first, mask_bit | length))
        elif length < 65536 and form < 0.95:
            data = bytes((first, mask_bit | 126)) + length.to_bytes(2, "big")
        else:
            data = bytes((first, mask_bit | 127)) + length.to_bytes(8, "big")
        data += rng.randbytes(4)    # a masking key, or the start of a payload
        if roll > 0.7:
            data = mutate(rng, data)
    data = data if len(data) >= 2 else data + rng.randbytes(2 - len(data))
    size = header_size(data[:2])
    return data[:size] + rng.randbytes(max(0, size - len(data)))


@pytest.mark.parametrize("seed", SEEDS)
def test_the_parser_and_the_annotator_give_a_header_the_same_verdict(seed):
    rng = random.Random(seed)
    for case in deadline_runs():
        header = random_header(rng)
        require_mask = rng.random() < 0.5
        deflate = rng.random() < 0.4
        limit = rng.choice((1 << 24, 1000, 125, 2 ** 64))
        label = (f"seed {seed} case {case}: {header.hex(' ')} (require_mask={require_mask}, "
                 f"deflate={deflate}, limit {limit})")
        parser = FrameParser(require_mask=require_mask, max_frame_size=limit,
                             allowed_rsv_bits=RSV1_BIT if deflate else 0)
        parser.feed(header)
        try:
            parser.next_frame()
            refused = None
        except ProtocolError as error:
            refused = (error.close_code, str(error))
        findings = check_header(parse_header(header), allow_rsv1=deflate,
                                sender="client" if require_mask else "server",
                                max_frame_size=limit)
        errors = [finding.violation for finding in findings if not finding.warning]
        named = (errors[0].close_code, errors[0].reason) if errors else None
        assert refused == named, label


# ---- HTTP request heads --------------------------------------------------------

HEADS = [
    b"GET /chat HTTP/1.1\r\nHost: localhost:8000\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://localhost:8000\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"HEAD /index.html?x=1 HTTP/1.1\r\nHost: example.com\r\nIf-None-Match: \"abc\"\r\n"
    b"Accept: */*\r\n\r\n",
    b"GET /style.css HTTP/1.1\nHost: a\nX-Empty:\nX-Tab:\tvalue\t\n\n",
    b"\r\nGET /after-blank-line HTTP/1.1\r\nHost: b\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: c\r\nContent-Length: 5\r\n\r\nhello",
    b"DELETE /x HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
]
# Bytes that matter to an HTTP parser, for insertions.
HTTP_BYTES = [b"\r", b"\n", b"\r\n", b"\r\n\r\n", b" ", b"\t", b":", b"\x00", b"\x7f", b"\xff",
              b"HTTP/1.1", b"HTTP/9.9", b"Host: x\r\n", b"Content-Length: -1\r\n", b"a" * 300]


def insert_tokens(rng: random.Random, data: bytes, tokens: list[bytes]) -> bytes:
    """`data` with one to three of `tokens` inserted at random places."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        position = rng.randint(0, len(data))
        data[position:position] = rng.choice(tokens)
    return bytes(data)


def mutate_head(rng: random.Random, data: bytes) -> bytes:
    if rng.random() < 0.5:
        return mutate(rng, data)
    return insert_tokens(rng, data, HTTP_BYTES)


def parse_requests(chunks: list[bytes], limits: dict, label: str) -> list[Request | int]:
    """Every request head in order, then the status of the error, if one came."""
    parser = RequestParser(**limits)
    outcome: list[Request | int] = []
    for chunk in chunks:
        parser.feed(chunk)
        while True:
            try:
                request = parser.next_request()
            except HTTPError as error:
                assert 400 <= error.status <= 599, f"{label}: status {error.status}"
                # The parser stays failed, with the same error.
                with pytest.raises(HTTPError) as again:
                    parser.next_request()
                assert again.value is error, label
                return outcome + [error.status]
            except Exception as error:   # noqa: BLE001 - the point: nothing else may escape
                pytest.fail(f"{label}: next_request raised {error!r}")
            if request is None:
                break
            assert isinstance(request, Request), label
            assert request.version in ("HTTP/1.0", "HTTP/1.1"), label
            assert isinstance(request.method, str) and isinstance(request.target, str), label
            outcome.append(request)
    return outcome


def same_http_outcome(cut: list, whole: list) -> bool:
    """Equal, except that a limit (414, 431) met by a line still arriving may
    stand for the 400 that the whole line shows: failing fast on a line too
    long, the parser never sees whether the rest of it was malformed."""
    if cut == whole:
        return True
    return (bool(cut) and bool(whole) and cut[:-1] == whole[:-1]
            and cut[-1] in (414, 431) and whole[-1] == 400)


@pytest.mark.parametrize("seed", SEEDS)
def test_mutated_request_heads_give_requests_or_an_http_error(seed):
    rng = random.Random(seed)
    for case in deadline_runs():
        heads = b"".join(rng.choice(HEADS) for _ in range(rng.randint(1, 3)))
        data = mutate_head(rng, heads)
        limits = rng.choice(({}, {"max_line": 40, "max_header_bytes": 120, "max_headers": 4},
                             {"require_host": False}))
        label = f"seed {seed} case {case} ({limits})"
        whole = parse_requests([data], limits, label)
        cut = parse_requests(random_chunks(rng, data), limits, label + ", cut")
        assert same_http_outcome(cut, whole), f"{label}: {cut} != {whole}"


@pytest.mark.parametrize("seed", SEEDS)
def test_random_bytes_give_an_http_error_or_need_more_data(seed):
    rng = random.Random(seed)
    for case in deadline_runs():
        data = rng.randbytes(rng.randint(1, 400))
        label = f"seed {seed} case {case} (random bytes)"
        outcome = parse_requests(random_chunks(rng, data), {}, label)
        assert all(isinstance(item, (Request, int)) for item in outcome), label
