"""rawws.frames for big frames: headers apart from their payload, masking in
chunks, and frames unmasked as they arrive (RFC 6455 §5.2, §5.3, §5.7).

Read beside the RFC: the §5.7 examples come first, with the exact bytes the
RFC prints, now from `frame_header` alone; then `mask_chunks` against §5.3
word for word; then `StreamedFrame`, the form a frame of STREAM_THRESHOLD
bytes or more takes in a `FrameParser` while its payload is still arriving:
the payload bytes go to it before the parser's buffer, it unmasks them in a
bytearray borrowed from a pool of one, and `read()` and the finished `Frame`
hand them over exactly once. Small frames and the header rules are in
tests/test_frames.py; a big message through a connection's output is in
tests/test_protocol.py (buffers_to_send).
"""
from __future__ import annotations

import random
import tracemalloc

import pytest

from rawws import masking
from rawws.frames import (OP_BINARY, OP_CONTINUATION, OP_PING, OP_TEXT, STREAM_THRESHOLD, Frame,
                          FrameParser, encode_frame, frame_header, mask)
from rawws.masking import mask_chunks
from rawws.protocol import BinaryMessage, Role, TextMessage, WebSocketConnection

from tests.wire import failed_with
from tests.masking_paths import masking_path  # noqa: F401 (a fixture)

# Every test here runs on each masking implementation: pure Python, and C when built.
pytestmark = pytest.mark.usefixtures("masking_path")

# The masking key of every masked example in §5.7.
RFC_KEY = bytes([0x37, 0xFA, 0x21, 0x3D])

# §5.1: a server receives masked frames, a client receives unmasked ones.
SERVER_SIDE = True
CLIENT_SIDE = False

MIB = 1024 * 1024

HELLO_MASKED = bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
PING_UNMASKED = bytes([0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
HEADER_256 = bytes([0x82, 0x7E, 0x01, 0x00])
HEADER_64K = bytes([0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00])


def naive_mask(data: bytes, key: bytes) -> bytes:
    """§5.3 word for word: "octet i of the transformed data is the XOR of
    octet i of the original data with octet at index i modulo 4 of the
    masking key"."""
    return bytes(data[i] ^ key[i % 4] for i in range(len(data)))


@pytest.fixture
def pool() -> list[bytearray]:
    """StreamedFrame's pool of spare payload buffers, empty for the test and after it."""
    masking._spare_buffers.clear()
    yield masking._spare_buffers
    masking._spare_buffers.clear()


def big_frame(size: int, *, seed: int, masked: bool = True, fin: bool = True,
              opcode: int = OP_BINARY) -> tuple[bytes, bytes, int]:
    """(wire bytes, payload, header length) of a frame of `size` random bytes,
    masked with a random key unless `masked` is False."""
    rng = random.Random(seed)
    payload = rng.randbytes(size)
    key = rng.randbytes(4) if masked else None
    wire = encode_frame(opcode, payload, fin=fin, mask_key=key)
    return wire, payload, len(wire) - size


# ---- §5.7 examples: the header alone --------------------------------------

def test_rfc_masked_hello_header_is_the_examples_first_six_bytes():
    assert frame_header(OP_TEXT, 5, mask_key=RFC_KEY) == HELLO_MASKED[:6]


def test_rfc_unmasked_hello_header():
    assert frame_header(OP_TEXT, 5) == bytes([0x81, 0x05])


def test_rfc_fragment_headers():
    # 0x01 0x03 "Hel", then 0x80 0x02 "lo".
    assert frame_header(OP_TEXT, 3, fin=False) == bytes([0x01, 0x03])
    assert frame_header(OP_CONTINUATION, 2) == bytes([0x80, 0x02])


def test_rfc_unmasked_ping_header():
    assert frame_header(OP_PING, 5) == PING_UNMASKED[:2]


def test_rfc_256_byte_binary_header():
    assert frame_header(OP_BINARY, 256) == HEADER_256


def test_rfc_64k_binary_header():
    assert frame_header(OP_BINARY, 65536) == HEADER_64K


def test_masked_256_byte_header_is_the_rfc_header_with_the_mask_bit_then_the_key():
    assert frame_header(OP_BINARY, 256, mask_key=RFC_KEY) == bytes(
        [0x82, 0xFE, 0x01, 0x00, 0x37, 0xFA, 0x21, 0x3D])


def test_masked_64k_header_is_the_rfc_header_with_the_mask_bit_then_the_key():
    assert frame_header(OP_BINARY, 65536, mask_key=RFC_KEY) == bytes(
        [0x82, 0xFF, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00, 0x37, 0xFA, 0x21, 0x3D])


@pytest.mark.parametrize("length, header", [
    (0, bytes([0x82, 0x00])),
    (125, bytes([0x82, 0x7D])),                                      # largest 7-bit length
    (126, bytes([0x82, 0x7E, 0x00, 0x7E])),                          # smallest 16-bit length
    (65535, bytes([0x82, 0x7E, 0xFF, 0xFF])),                        # largest 16-bit length
    (65536, bytes([0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00])),   # smallest 64-bit length
    (16 * MIB, bytes([0x82, 0x7F, 0, 0, 0, 0, 0x01, 0x00, 0x00, 0x00])),
    (2**63 - 1, bytes([0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])),
])
def test_header_length_uses_the_minimal_form(length, header):
    # §5.2: "the minimal number of bytes MUST be used to encode the length";
    # the header needs no payload, so even 2**63 - 1 costs nothing.
    assert frame_header(OP_BINARY, length) == header


@pytest.mark.parametrize("flags, first_byte", [
    ({"rsv1": True}, 0xC1), ({"rsv2": True}, 0xA1), ({"rsv3": True}, 0x91),
    ({"rsv1": True, "rsv2": True, "rsv3": True}, 0xF1),
])
def test_header_sets_the_rsv_bits_it_is_asked_to(flags, first_byte):
    assert frame_header(OP_TEXT, 0, **flags) == bytes([first_byte, 0x00])


@pytest.mark.parametrize("key", [b"", b"\x01\x02\x03", b"\x01\x02\x03\x04\x05"])
def test_header_refuses_a_mask_key_that_is_not_4_bytes(key):
    with pytest.raises(ValueError):
        frame_header(OP_TEXT, 5, mask_key=key)


LENGTHS = [0, 1, 5, 125, 126, 256, 65535, 65536, 70_003]


@pytest.mark.parametrize("length", LENGTHS)
def test_encode_frame_is_the_header_then_the_payload(length):
    payload = bytes(i % 251 for i in range(length))
    assert encode_frame(OP_BINARY, payload) == frame_header(OP_BINARY, length) + payload


@pytest.mark.parametrize("length", LENGTHS)
def test_encode_frame_masked_is_the_header_then_the_masked_payload(length):
    payload = bytes(i % 251 for i in range(length))
    assert encode_frame(OP_BINARY, payload, mask_key=RFC_KEY) == (
        frame_header(OP_BINARY, length, mask_key=RFC_KEY) + mask(payload, RFC_KEY))


# ---- §5.3 masking in chunks ------------------------------------------------

CHUNK = masking._CHUNK


def test_mask_chunks_rfc_example():
    assert mask_chunks(b"Hello", RFC_KEY) == [bytes([0x7F, 0x9F, 0x4D, 0x51, 0x58])]


def test_mask_chunks_of_nothing_is_no_chunk():
    assert mask_chunks(b"", RFC_KEY) == []


@pytest.mark.parametrize("length", [
    1, 2, 3, 5, 7, 4097,
    CHUNK - 3, CHUNK - 1, CHUNK, CHUNK + 1, CHUNK + 2, CHUNK + 3, CHUNK + 5,
    2 * CHUNK - 1, 2 * CHUNK, 2 * CHUNK + 1, 3 * CHUNK + 3,
])
def test_mask_chunks_joined_is_the_mask_of_the_whole(length):
    # Lengths around the chunk size and not multiples of 4: the key must
    # stay aligned from one chunk to the next and cover a short last chunk.
    rng = random.Random(length)
    data = rng.randbytes(length)
    key = rng.randbytes(4)
    assert b"".join(mask_chunks(data, key)) == naive_mask(data, key)


@pytest.mark.parametrize("length", [CHUNK - 1, CHUNK + 1, 3 * CHUNK + 3])
def test_mask_chunks_joined_is_what_mask_returns(length):
    data = random.Random(length).randbytes(length)
    assert b"".join(mask_chunks(data, RFC_KEY)) == mask(data, RFC_KEY)


def test_mask_chunks_are_chunk_sized_but_the_last():
    chunks = mask_chunks(bytes(3 * CHUNK + 1699), RFC_KEY)
    assert [len(chunk) for chunk in chunks] == [CHUNK, CHUNK, CHUNK, 1699]


def test_mask_chunks_of_a_whole_number_of_chunks_has_no_short_last_chunk():
    assert [len(chunk) for chunk in mask_chunks(bytes(2 * CHUNK), RFC_KEY)] == [CHUNK, CHUNK]


def test_mask_chunks_accepts_a_bytearray_and_a_memoryview_at_an_offset():
    data = random.Random(5).randbytes(CHUNK + 11)
    expected = naive_mask(data[3:], RFC_KEY)
    assert b"".join(mask_chunks(bytearray(data)[3:], RFC_KEY)) == expected
    assert b"".join(mask_chunks(memoryview(data)[3:], RFC_KEY)) == expected


def test_mask_chunks_keeps_leading_and_trailing_zero_bytes():
    # Masking goes through int; zero bytes at either end of a chunk must survive.
    assert mask_chunks(bytes(CHUNK + 3), b"\x00\x00\x00\x00") == [bytes(CHUNK), bytes(3)]


# ---- which frames are streamed ----------------------------------------------

@pytest.mark.parametrize("length, streamed", [(STREAM_THRESHOLD - 1, False),
                                              (STREAM_THRESHOLD, True)])
def test_a_cut_frame_is_streamed_from_stream_threshold_bytes(pool, length, streamed):
    wire, _, header = big_frame(length, seed=1)
    parser = FrameParser(require_mask=SERVER_SIDE)
    parser.feed(wire[:header + 100])
    assert parser.next_frame() is None
    assert parser.pending.streamed is streamed


def test_a_streamed_frame_is_pending_with_its_header(pool):
    wire, _, header = big_frame(100_000, seed=2, fin=False)
    parser = FrameParser(require_mask=SERVER_SIDE)
    parser.feed(wire[:header])
    assert parser.next_frame() is None
    pending = parser.pending
    assert pending.streamed
    assert (pending.opcode, pending.fin, pending.length, pending.mask_key) == (
        OP_BINARY, False, 100_000, wire[10:14])
    assert pending.consumed == 0


def test_a_big_frame_that_arrives_whole_is_not_streamed(pool):
    # The fast path: a whole frame never borrows the pool's buffer.
    spare = bytearray(10)
    pool.append(spare)
    wire, payload, _ = big_frame(200_000, seed=3)
    parser = FrameParser(require_mask=SERVER_SIDE)
    parser.feed(wire)
    assert parser.next_frame() == Frame(OP_BINARY, payload)
    assert pool == [spare] and pool[0] is spare


# ---- a streamed frame's payload -------------------------------------------

PIECE_SIZES = (1, 2, 3, 5, 100, 4095, 4096, 4097, 65_536, 262_144)


def test_a_1mib_masked_frame_in_random_pieces_gives_the_exact_payload(pool):
    wire, payload, _ = big_frame(MIB + 3, seed=6455)
    rng = random.Random(6455)
    parser = FrameParser(require_mask=SERVER_SIDE, max_frame_size=2 * MIB)
    position = 0
    frame = None
    while position < len(wire):
        step = rng.choice(PIECE_SIZES)
        assert frame is None
        parser.feed(wire[position:position + step])
        position += step
        frame = parser.next_frame()
    assert frame == Frame(OP_BINARY, payload)


def test_the_parser_buffers_nothing_while_a_big_frame_streams(pool):
    # Every byte of the frame goes to the StreamedFrame, none to the parser's buffer.
    wire, payload, header = big_frame(MIB + 3, seed=17)
    rng = random.Random(17)
    parser = FrameParser(require_mask=SERVER_SIDE, max_frame_size=2 * MIB)
    parser.feed(wire[:header + 1])
    position = header + 1
    while position < len(wire) - 1:
        assert parser.next_frame() is None
        assert parser.pending.streamed
        assert parser.buffered == 0
        step = min(rng.choice(PIECE_SIZES), len(wire) - 1 - position)
        parser.feed(memoryview(wire)[position:position + step])
        position += step
    parser.feed(wire[-1:])
    assert parser.next_frame() == Frame(OP_BINARY, payload)
    assert parser.buffered == 0


def test_bytes_after_a_streamed_frame_in_the_same_feed_are_the_next_frames(pool):
    wire, payload, header = big_frame(100_000, seed=4)
    parser = FrameParser(require_mask=SERVER_SIDE)
    parser.feed(wire[:header + 5000])
    assert parser.next_frame() is None
    parser.feed(wire[header + 5000:] + HELLO_MASKED + HELLO_MASKED[:3])
    assert parser.next_frame() == Frame(OP_BINARY, payload)
    assert parser.next_frame() == Frame(OP_TEXT, b"Hello")
    assert parser.next_frame() is None
    assert parser.buffered == 3
    parser.feed(HELLO_MASKED[3:])
    assert parser.next_frame() == Frame(OP_TEXT, b"Hello")


def test_a_frame_fed_after_a_finished_streamed_frame_is_not_taken_by_it(pool):
    # The whole big frame, then the next frame in a feed of its own, before
    # next_frame() is called.
    wire, payload, header = big_frame(100_000, seed=5)
    parser = FrameParser(require_mask=SERVER_SIDE)
    parser.feed(wire[:header + 10])
    assert parser.next_frame() is None
    parser.feed(wire[header + 10:])
    parser.feed(HELLO_MASKED)
    assert parser.next_frame() == Frame(OP_BINARY, payload)
    assert parser.next_frame() == Frame(OP_TEXT, b"Hello")


def test_a_70k_frame_trickled_one_byte_at_a_time_gives_the_exact_payload(pool):
    wire, payload, header = big_frame(70 * 1024, seed=6)
    parser = FrameParser(require_mask=SERVER_SIDE)
    for index in range(len(wire) - 1):
        parser.feed(wire[index:index + 1])
        assert parser.next_frame() is None
    assert parser.pending.streamed
    parser.feed(wire[-1:])
    assert parser.next_frame() == Frame(OP_BINARY, payload)


def test_an_unmasked_streamed_frame_from_a_server(pool):
    wire, payload, header = big_frame(300_001, seed=7, masked=False)
    assert header == 10
    parser = FrameParser(require_mask=CLIENT_SIDE)
    parts = []
    for start in range(0, len(wire), 7_001):
        parser.feed(wire[start:start + 7_001])
        frame_or_none = parser.next_frame()
        if frame_or_none is None:
            assert parser.pending.streamed and parser.buffered == 0
            parts.append(parser.pending.read())
    parts.append(frame_or_none.payload)
    assert b"".join(parts) == payload


def test_a_streamed_frame_keeps_its_fin_and_rsv_bits(pool):
    # A compressed message's first frame (RSV1, RFC 7692) cut into pieces.
    payload = random.Random(8).randbytes(100_000)
    wire = encode_frame(OP_BINARY, payload, fin=False, rsv1=True, mask_key=RFC_KEY)
    parser = FrameParser(require_mask=SERVER_SIDE, allowed_rsv_bits=0x40)
    parser.feed(wire[:50_000])
    assert parser.next_frame() is None and parser.pending.streamed
    parser.feed(wire[50_000:])
    assert parser.next_frame() == Frame(OP_BINARY, payload, fin=False, rsv1=True)


# ---- memory grows with the bytes received, not the length announced ----------

def test_a_16mib_frame_announced_holds_only_the_bytes_received(pool):
    parser = FrameParser(require_mask=SERVER_SIDE)
    parser.feed(frame_header(OP_BINARY, 16 * MIB, mask_key=RFC_KEY))
    assert parser.next_frame() is None
    assert parser.pending.streamed
    assert len(parser.pending._payload) == 0
    parser.feed(mask(b"0123456789", RFC_KEY))
    assert parser.next_frame() is None
    assert len(parser.pending._payload) == 10
    assert parser.pending.read() == b"0123456789"


def test_1mib_received_of_a_16mib_frame_costs_about_1mib(pool):
    data = random.Random(9).randbytes(MIB)
    parser = FrameParser(require_mask=SERVER_SIDE)
    parser.feed(frame_header(OP_BINARY, 16 * MIB, mask_key=RFC_KEY))
    tracemalloc.start()
    try:
        for start in range(0, MIB, 65_536):
            parser.feed(data[start:start + 65_536])
            assert parser.next_frame() is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * MIB


# ---- read(): the bytes since the last read, then the frame carries the rest ----

@pytest.mark.parametrize("split", [0, 1, 2, 3, 4, 5, 6, 7, 4095, 4096, 4097, 32_769])
def test_streamed_read_unmasks_with_the_key_turned_to_its_offset(pool, split):
    # Byte i of a payload is masked with key[i % 4] (§5.3): a read that starts
    # at any offset must use the key from that position.
    wire, payload, header = big_frame(STREAM_THRESHOLD + 1000, seed=split)
    parser = FrameParser(require_mask=SERVER_SIDE)
    parser.feed(wire[:header + split])
    assert parser.next_frame() is None
    assert parser.pending.read() == payload[:split]
    parser.feed(wire[header + split:header + split + 5])
    assert parser.next_frame() is None
    assert parser.pending.read() == payload[split:split + 5]
    assert parser.pending.read() == b""               # nothing new
    assert parser.pending.consumed == split + 5
    parser.feed(wire[header + split + 5:])
    # The frame carries only what was not read.
    assert parser.next_frame() == Frame(OP_BINARY, payload[split + 5:])
    assert parser.buffered == 0


def test_a_piece_of_4096_bytes_or_more_is_unmasked_in_place_as_it_arrives(pool):
    # No read() yet: the payload bytes are already unmasked where they lie.
    wire, payload, header = big_frame(100_000, seed=26)
    parser = FrameParser(require_mask=SERVER_SIDE)
    parser.feed(wire[:header])
    assert parser.next_frame() is None
    parser.feed(wire[header:header + 4099])
    assert bytes(parser.pending._payload[:4099]) == payload[:4099]
    parser.feed(wire[header + 4099:header + 9000])
    assert bytes(parser.pending._payload[:9000]) == payload[:9000]


def test_streamed_read_of_bytes_trickled_under_the_unmasking_piece(pool):
    # Ten 1-byte reads are gathered still masked (fewer than 4096 bytes);
    # read() unmasks them all the same.
    wire, payload, header = big_frame(100_000, seed=10)
    parser = FrameParser(require_mask=SERVER_SIDE)
    parser.feed(wire[:header])
    for index in range(header, header + 10):
        parser.feed(wire[index:index + 1])
        assert parser.next_frame() is None
    assert parser.pending.read() == payload[:10]
    parser.feed(wire[header + 10:header + 13])
    assert parser.pending.read() == payload[10:13]


def test_a_streamed_frame_read_to_its_end_comes_with_an_empty_payload(pool):
    wire, payload, header = big_frame(100_000, seed=12)
    parser = FrameParser(require_mask=SERVER_SIDE)
    parser.feed(wire[:header + 10])
    assert parser.next_frame() is None
    pending = parser.pending
    parser.feed(wire[header + 10:])
    assert pending.read() == payload
    assert parser.next_frame() == Frame(OP_BINARY, b"")
    assert len(pool) == 1


# ---- the pool of one spare buffer ---------------------------------------------

def stream_one(parser: FrameParser, wire: bytes, header: int) -> tuple[bytearray, Frame]:
    """Feed `wire` in two pieces: the buffer its payload streamed into, and the frame."""
    parser.feed(wire[:header + 1000])
    assert parser.next_frame() is None
    buffer = parser.pending._payload
    parser.feed(wire[header + 1000:])
    return buffer, parser.next_frame()


def test_the_next_streamed_frame_reuses_the_pooled_buffer(pool):
    first, _, header = big_frame(100_000, seed=13)
    second, _, _ = big_frame(100_000, seed=14)
    parser = FrameParser(require_mask=SERVER_SIDE)
    buffer, _ = stream_one(parser, first, header)
    assert len(pool) == 1 and pool[0] is buffer     # given back when the frame is done
    parser.feed(second[:header + 1000])
    assert parser.next_frame() is None
    assert parser.pending._payload is buffer
    assert pool == []                                 # borrowed while the frame streams


def test_a_streamed_frame_in_another_parser_reuses_the_pooled_buffer(pool):
    wire, _, header = big_frame(100_000, seed=15)
    buffer, _ = stream_one(FrameParser(require_mask=SERVER_SIDE), wire, header)
    reused, _ = stream_one(FrameParser(require_mask=SERVER_SIDE), wire, header)
    assert reused is buffer


def test_the_pooled_buffer_keeps_its_memory_for_the_next_frame(pool):
    # Back-to-back big frames reuse the same pages: a shorter frame written
    # into the buffer a longer one left does not shrink it.
    first, _, first_header = big_frame(300_000, seed=24)
    second, second_payload, second_header = big_frame(100_000, seed=25)
    parser = FrameParser(require_mask=SERVER_SIDE)
    buffer, _ = stream_one(parser, first, first_header)
    assert len(buffer) == 300_000
    parser.feed(second[:second_header + 1000])
    assert parser.next_frame() is None
    assert len(parser.pending._payload) == 300_000
    parser.feed(second[second_header + 1000:])
    assert parser.next_frame() == Frame(OP_BINARY, second_payload)
    assert pool[0] is buffer and len(buffer) == 300_000


def test_a_frame_from_the_reused_buffer_leaves_earlier_payloads_alone(pool):
    # The payloads handed out are copies: the next frame unmasked in the same
    # buffer must not change them.
    first, first_payload, header = big_frame(100_000, seed=16)
    second, second_payload, _ = big_frame(100_000, seed=17)
    parser = FrameParser(require_mask=SERVER_SIDE)
    parser.feed(first[:header + 5000])
    assert parser.next_frame() is None
    early = parser.pending.read()
    parser.feed(first[header + 5000:])
    frame = parser.next_frame()
    _, second_frame = stream_one(parser, second, header)
    assert second_frame == Frame(OP_BINARY, second_payload)
    assert early == first_payload[:5000]
    assert frame.payload == first_payload[5000:]


def test_a_shorter_frame_in_a_bigger_reused_buffer_gives_only_its_own_bytes(pool):
    big, _, big_header = big_frame(300_000, seed=18)
    small, small_payload, small_header = big_frame(STREAM_THRESHOLD, seed=19)
    parser = FrameParser(require_mask=SERVER_SIDE)
    buffer, _ = stream_one(parser, big, big_header)
    reused, frame = stream_one(parser, small, small_header)
    assert reused is buffer
    assert frame == Frame(OP_BINARY, small_payload)


def test_the_pool_keeps_at_most_one_buffer(pool):
    # Two frames streaming at once, in two parsers: both buffers come back,
    # one is kept.
    wire, payload, header = big_frame(100_000, seed=20)
    parsers = [FrameParser(require_mask=SERVER_SIDE) for _ in range(2)]
    for parser in parsers:
        parser.feed(wire[:header + 1000])
        assert parser.next_frame() is None
    assert parsers[0].pending._payload is not parsers[1].pending._payload
    for parser in parsers:
        parser.feed(wire[header + 1000:])
        assert parser.next_frame() == Frame(OP_BINARY, payload)
    assert len(pool) == 1


def test_a_buffer_over_spare_buffer_max_is_not_kept(pool, monkeypatch):
    # (The limit is lowered so the test needs no 16 MiB frame.)
    monkeypatch.setattr(masking, "_SPARE_BUFFER_MAX", 100_000)
    wire, payload, header = big_frame(100_001, seed=21)
    _, frame = stream_one(FrameParser(require_mask=SERVER_SIDE), wire, header)
    assert frame == Frame(OP_BINARY, payload)
    assert pool == []


def test_a_buffer_of_spare_buffer_max_bytes_is_kept(pool, monkeypatch):
    monkeypatch.setattr(masking, "_SPARE_BUFFER_MAX", 100_000)
    wire, _, header = big_frame(100_000, seed=22)
    buffer, _ = stream_one(FrameParser(require_mask=SERVER_SIDE), wire, header)
    assert len(pool) == 1 and pool[0] is buffer


# ---- through a connection ------------------------------------------------------

def test_a_server_gets_a_1mib_binary_message_sent_in_random_pieces(pool):
    wire, payload, _ = big_frame(MIB, seed=23)
    rng = random.Random(23)
    server = WebSocketConnection(Role.SERVER, max_message_size=2 * MIB)
    events = []
    position = 0
    while position < len(wire):
        step = rng.choice(PIECE_SIZES)
        server.receive_data(wire[position:position + step])
        position += step
        events += list(server.events())
    assert events == [BinaryMessage(payload)]


def test_a_streamed_text_frame_in_pieces_is_one_text_message(pool):
    # 100 kB of 1-, 2- and 3-byte characters.
    text = "caf\N{LATIN SMALL LETTER E WITH ACUTE} \N{EURO SIGN} " * 10_000
    wire = encode_frame(OP_TEXT, text.encode("utf-8"), mask_key=RFC_KEY)
    server = WebSocketConnection(Role.SERVER)
    events = []
    for start in range(0, len(wire), 4_999):              # pieces cut inside characters
        server.receive_data(wire[start:start + 4_999])
        events += list(server.events())
    assert events == [TextMessage(text)]


def test_invalid_utf8_in_a_streamed_text_frame_fails_with_1007_before_the_frame_ends(pool):
    # §8.1 fail fast: the bad byte is the 5001st of a 100 kB frame.
    payload = b"a" * 5000 + b"\xff" + b"a" * 95_000
    wire = encode_frame(OP_TEXT, payload, mask_key=RFC_KEY)
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(wire[:14 + 4000])
    assert server.data_to_send() == b""
    server.receive_data(wire[14 + 4000:14 + 6000])
    assert failed_with(server) == 1007
