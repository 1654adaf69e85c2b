"""rawws.frames: one frame on the wire, byte by byte (RFC 6455 §5.2, §5.3, §5.5, §5.7).

Read beside the RFC: the §5.7 examples come first, with the exact bytes the
RFC prints; then the payload length forms, masking, and every header rule a
receiver enforces. Frames are decoded by `FrameParser` here; the same bytes
through a whole `WebSocketConnection` are in tests/test_protocol.py.
"""
from __future__ import annotations

import random

import pytest

from rawws.errors import MessageTooBig, ProtocolError
from rawws.frames import (OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT,
                          RSV1_BIT, SHORT_HEADERS, Frame, FrameParser, encode_frame,
                          frame_header, header_violations, mask)

from tests.masking_paths import masking_path  # noqa: F401 (a fixture)

# Every test here runs on each masking implementation: pure Python, and C when built.
pytestmark = pytest.mark.usefixtures("masking_path")

# The masking key of every masked example in §5.7.
RFC_KEY = bytes([0x37, 0xFA, 0x21, 0x3D])

# §5.1: a server receives masked frames, a client receives unmasked ones.
SERVER_SIDE = True
CLIENT_SIDE = False


def parse_all(data: bytes, *, require_mask: bool, **limits: int) -> list[Frame]:
    """Every frame in `data`, which must hold whole frames and nothing else."""
    parser = FrameParser(require_mask=require_mask, **limits)
    parser.feed(data)
    frames = []
    while (frame := parser.next_frame()) is not None:
        frames.append(frame)
    assert parser.buffered == 0, "bytes left over after the last frame"
    return frames


def parse_one(data: bytes, *, require_mask: bool, **limits: int) -> Frame:
    (frame,) = parse_all(data, require_mask=require_mask, **limits)
    return frame


def refusal(data: bytes, *, require_mask: bool, **limits: int) -> ProtocolError:
    """The error a parser raises on `data`; fails the test if there is none."""
    parser = FrameParser(require_mask=require_mask, **limits)
    parser.feed(data)
    with pytest.raises(ProtocolError) as info:
        parser.next_frame()
    return info.value


# ---- §5.7 examples -------------------------------------------------------

HELLO_UNMASKED = bytes([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
HELLO_MASKED = bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
HEL_FRAGMENT = bytes([0x01, 0x03, 0x48, 0x65, 0x6C])
LO_FRAGMENT = bytes([0x80, 0x02, 0x6C, 0x6F])
PING_UNMASKED = bytes([0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
PONG_MASKED = bytes([0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
HEADER_256 = bytes([0x82, 0x7E, 0x01, 0x00])
HEADER_64K = bytes([0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00])


def test_rfc_single_frame_unmasked_text_encodes():
    assert encode_frame(OP_TEXT, b"Hello") == HELLO_UNMASKED


def test_rfc_single_frame_unmasked_text_decodes():
    assert parse_one(HELLO_UNMASKED, require_mask=CLIENT_SIDE) == Frame(OP_TEXT, b"Hello")


def test_rfc_single_frame_masked_text_encodes():
    assert encode_frame(OP_TEXT, b"Hello", mask_key=RFC_KEY) == HELLO_MASKED


def test_rfc_single_frame_masked_text_decodes_unmasked():
    assert parse_one(HELLO_MASKED, require_mask=SERVER_SIDE) == Frame(OP_TEXT, b"Hello")


def test_rfc_fragmented_unmasked_text_encodes():
    assert encode_frame(OP_TEXT, b"Hel", fin=False) == HEL_FRAGMENT
    assert encode_frame(OP_CONTINUATION, b"lo") == LO_FRAGMENT


def test_rfc_fragmented_unmasked_text_decodes_as_two_frames():
    # Reassembling them into "Hello" is rawws.protocol's job (test_protocol.py).
    assert parse_all(HEL_FRAGMENT + LO_FRAGMENT, require_mask=CLIENT_SIDE) == [
        Frame(OP_TEXT, b"Hel", fin=False),
        Frame(OP_CONTINUATION, b"lo", fin=True),
    ]


def test_rfc_unmasked_ping_encodes():
    assert encode_frame(OP_PING, b"Hello") == PING_UNMASKED


def test_rfc_unmasked_ping_decodes():
    assert parse_one(PING_UNMASKED, require_mask=CLIENT_SIDE) == Frame(OP_PING, b"Hello")


def test_rfc_masked_pong_encodes():
    assert encode_frame(OP_PONG, b"Hello", mask_key=RFC_KEY) == PONG_MASKED


def test_rfc_masked_pong_decodes():
    assert parse_one(PONG_MASKED, require_mask=SERVER_SIDE) == Frame(OP_PONG, b"Hello")


def test_rfc_256_byte_binary_has_16_bit_length_header():
    payload = bytes(range(256))
    assert encode_frame(OP_BINARY, payload) == HEADER_256 + payload


def test_rfc_256_byte_binary_decodes():
    payload = bytes(range(256))
    assert parse_one(HEADER_256 + payload, require_mask=CLIENT_SIDE) == Frame(OP_BINARY, payload)


def test_rfc_64k_binary_has_64_bit_length_header():
    payload = bytes(65536)
    assert encode_frame(OP_BINARY, payload) == HEADER_64K + payload


def test_rfc_64k_binary_decodes():
    payload = bytes(i % 251 for i in range(65536))
    assert parse_one(HEADER_64K + payload, require_mask=CLIENT_SIDE) == Frame(OP_BINARY, payload)


# ---- §5.2 payload length: 7 bits, 7+16 bits, 7+64 bits -------------------

@pytest.mark.parametrize("length, header", [
    (0, bytes([0x82, 0x00])),
    (1, bytes([0x82, 0x01])),
    (125, bytes([0x82, 0x7D])),                                      # largest 7-bit length
    (126, bytes([0x82, 0x7E, 0x00, 0x7E])),                          # smallest 16-bit length
    (65535, bytes([0x82, 0x7E, 0xFF, 0xFF])),                        # largest 16-bit length
    (65536, bytes([0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00])),   # smallest 64-bit length
])
def test_length_uses_the_minimal_form(length, header):
    # §5.2: "the minimal number of bytes MUST be used to encode the length".
    payload = bytes(length)
    assert encode_frame(OP_BINARY, payload) == header + payload


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_each_length_form_decodes(length):
    payload = bytes(i % 256 for i in range(length))
    wire = encode_frame(OP_BINARY, payload)
    assert parse_one(wire, require_mask=CLIENT_SIDE) == Frame(OP_BINARY, payload)


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536])
def test_each_length_form_decodes_masked(length):
    payload = bytes(i % 256 for i in range(length))
    wire = encode_frame(OP_BINARY, payload, mask_key=RFC_KEY)
    assert parse_one(wire, require_mask=SERVER_SIDE) == Frame(OP_BINARY, payload)


def test_masked_header_sets_the_mask_bit_beside_the_length():
    assert encode_frame(OP_BINARY, bytes(126), mask_key=RFC_KEY)[:8] == bytes(
        [0x82, 0xFE, 0x00, 0x7E]) + RFC_KEY


def test_16_bit_length_is_accepted_even_when_not_minimal():
    # The minimal-length rule binds senders; a receiver that reads a 5-byte
    # payload from a 16-bit length still has an unambiguous frame.
    assert parse_one(bytes([0x82, 0x7E, 0x00, 0x05]) + b"abcde",
                     require_mask=CLIENT_SIDE) == Frame(OP_BINARY, b"abcde")


def test_64_bit_length_with_top_bit_set_is_refused_with_1002():
    # §5.2: "the most significant bit MUST be 0".
    header = bytes([0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0x05])
    error = refusal(header, require_mask=CLIENT_SIDE)
    assert type(error) is ProtocolError
    assert error.close_code == 1002


def test_64_bit_length_with_top_bit_set_is_refused_even_under_a_huge_limit():
    header = bytes([0x82, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
    assert refusal(header, require_mask=CLIENT_SIDE, max_frame_size=2**64).close_code == 1002


# ---- §5.3 masking --------------------------------------------------------

def naive_mask(data: bytes, key: bytes) -> bytes:
    """§5.3 word for word: "octet i of the transformed data is the XOR of
    octet i of the original data with octet at index i modulo 4 of the
    masking key"."""
    return bytes(data[i] ^ key[i % 4] for i in range(len(data)))


def test_mask_rfc_example():
    assert mask(b"Hello", RFC_KEY) == bytes([0x7F, 0x9F, 0x4D, 0x51, 0x58])


def test_mask_twice_gives_back_the_data():
    data = b"The same operation masks and unmasks."
    assert mask(mask(data, RFC_KEY), RFC_KEY) == data


def test_mask_of_nothing_is_nothing():
    assert mask(b"", RFC_KEY) == b""


@pytest.mark.parametrize("length", [1, 2, 3, 5, 6, 7, 9, 13])
def test_mask_lengths_not_a_multiple_of_four(length):
    data = bytes(range(0x40, 0x40 + length))
    assert mask(data, RFC_KEY) == naive_mask(data, RFC_KEY)
    assert len(mask(data, RFC_KEY)) == length


def test_mask_keeps_leading_and_trailing_zero_bytes():
    # The fast mask goes through int; zero bytes at either end must survive.
    data = bytes(9)
    key = b"\x00\x00\x00\x00"
    assert mask(data, key) == data
    assert mask(bytes([0x37, 0, 0, 0, 0, 0, 0, 0x3D]), RFC_KEY) == naive_mask(
        bytes([0x37, 0, 0, 0, 0, 0, 0, 0x3D]), RFC_KEY)


def test_mask_matches_the_naive_reference_for_many_lengths():
    rng = random.Random(6455)
    for length in list(range(0, 300)) + [1023, 1024, 1025, 4096, 65537]:
        data = rng.randbytes(length)
        key = rng.randbytes(4)
        assert mask(data, key) == naive_mask(data, key), length


def test_mask_accepts_a_bytearray():
    data = bytearray(b"Hello")
    assert mask(data, RFC_KEY) == bytes([0x7F, 0x9F, 0x4D, 0x51, 0x58])


def test_encode_frame_refuses_a_mask_key_that_is_not_4_bytes():
    with pytest.raises(ValueError):
        encode_frame(OP_TEXT, b"Hello", mask_key=b"\x01\x02\x03")


# ---- §5.1 who masks ------------------------------------------------------

def test_server_side_parser_refuses_an_unmasked_frame_with_1002():
    # §5.1: "a server MUST close the connection upon receiving a frame that is not masked".
    assert refusal(HELLO_UNMASKED, require_mask=SERVER_SIDE).close_code == 1002


def test_client_side_parser_refuses_a_masked_frame_with_1002():
    # §5.1: "A client MUST close a connection if it detects a masked frame".
    assert refusal(HELLO_MASKED, require_mask=CLIENT_SIDE).close_code == 1002


def test_mask_rule_is_checked_from_the_first_two_bytes():
    assert refusal(HELLO_UNMASKED[:2], require_mask=SERVER_SIDE).close_code == 1002


# ---- §5.2 reserved bits and opcodes -------------------------------------

@pytest.mark.parametrize("bit, name", [(0x40, "RSV1"), (0x20, "RSV2"), (0x10, "RSV3")])
def test_reserved_bit_set_is_refused_with_1002(bit, name):
    # §5.2: "MUST be 0 unless an extension is negotiated that defines meanings".
    first = 0x81 | bit
    assert refusal(bytes([first, 0x05]) + b"Hello", require_mask=CLIENT_SIDE).close_code == 1002


@pytest.mark.parametrize("opcode", [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcode_is_refused_with_1002(opcode):
    # §5.2: 0x3-0x7 are reserved for non-control frames, 0xB-0xF for control frames.
    assert refusal(bytes([0x80 | opcode, 0x00]), require_mask=CLIENT_SIDE).close_code == 1002


# ---- §5.5 control frames -------------------------------------------------

@pytest.mark.parametrize("opcode", [OP_CLOSE, OP_PING, OP_PONG])
def test_fragmented_control_frame_is_refused_with_1002(opcode):
    # §5.5: "Control frames themselves MUST NOT be fragmented" (FIN is 0 here).
    assert refusal(bytes([opcode, 0x00]), require_mask=CLIENT_SIDE).close_code == 1002


@pytest.mark.parametrize("opcode", [OP_CLOSE, OP_PING, OP_PONG])
def test_control_frame_with_126_byte_payload_is_refused_with_1002(opcode):
    # §5.5: "All control frames MUST have a payload length of 125 bytes or less".
    wire = bytes([0x80 | opcode, 0x7E, 0x00, 0x7E]) + bytes(126)
    assert refusal(wire, require_mask=CLIENT_SIDE).close_code == 1002


def test_oversized_control_frame_is_refused_from_its_first_two_bytes():
    assert refusal(bytes([0x89, 0x7E]), require_mask=CLIENT_SIDE).close_code == 1002


def test_control_frame_with_125_byte_payload_is_accepted():
    payload = bytes(range(125))
    wire = bytes([0x89, 0x7D]) + payload
    assert parse_one(wire, require_mask=CLIENT_SIDE) == Frame(OP_PING, payload)


def test_control_frames_are_bounded_by_125_bytes_not_by_max_frame_size():
    assert parse_one(PING_UNMASKED, require_mask=CLIENT_SIDE, max_frame_size=2) == Frame(
        OP_PING, b"Hello")


# ---- §10.4 frame size limit ----------------------------------------------

def test_frame_announcing_more_than_max_frame_size_is_refused_after_its_header():
    # 82 7E 03 E9: a binary frame of 1001 bytes; not one payload byte is fed.
    error = refusal(bytes([0x82, 0x7E, 0x03, 0xE9]), require_mask=CLIENT_SIDE, max_frame_size=1000)
    assert isinstance(error, MessageTooBig)
    assert error.close_code == 1009


def test_masked_frame_over_the_limit_is_refused_before_its_masking_key():
    error = refusal(bytes([0x82, 0xFF, 0, 0, 0, 0, 0x40, 0, 0, 0]), require_mask=SERVER_SIDE,
                    max_frame_size=1024 * 1024)
    assert error.close_code == 1009


def test_frame_of_exactly_max_frame_size_is_accepted():
    wire = bytes([0x82, 0x7E, 0x03, 0xE8]) + bytes(1000)
    assert parse_one(wire, require_mask=CLIENT_SIDE, max_frame_size=1000) == Frame(
        OP_BINARY, bytes(1000))


# ---- the rules, stated once: header_violations ----------------------------

def test_header_violations_names_every_rule_broken_in_the_order_the_parser_checks():
    # 39 7E 00C8: RSV2 and RSV3 set, a Ping without FIN, a 200-byte payload, unmasked.
    found = header_violations(0x39, 0x7E, 200, require_mask=SERVER_SIDE)
    assert [(v.byte, v.rule, v.close_code, v.reason) for v in found] == [
        (0, "RFC 6455 §5.2", 1002, "reserved bits set without a negotiated extension"),
        (0, "RFC 6455 §5.2", 1002, "reserved bits set without a negotiated extension"),
        (1, "RFC 6455 §5.1", 1002, "frame must be masked"),
        (0, "RFC 6455 §5.5", 1002, "fragmented control frame"),
        (1, "RFC 6455 §5.5", 1002, "control frame payload over 125 bytes"),
    ]


def test_header_violations_checks_the_length_once_it_is_known():
    assert header_violations(0x82, 0x7F) == []
    (top_bit,) = header_violations(0x82, 0x7F, 2**63)
    assert (top_bit.byte, top_bit.rule, top_bit.close_code) == (2, "RFC 6455 §5.2", 1002)
    (too_big,) = header_violations(0x82, 0x7E, 1001, payload_limit=1000)
    assert (too_big.byte, too_big.rule, too_big.close_code, too_big.reason) == (
        2, "RFC 6455 §10.4", 1009, "frame of 1001 bytes is over the 1000-byte limit")
    assert isinstance(too_big.error(), MessageTooBig)


@pytest.mark.parametrize("require_mask, allowed_rsv_bits", [(SERVER_SIDE, RSV1_BIT),
                                                            (CLIENT_SIDE, 0)],
                         ids=["server-deflate", "client"])
def test_every_two_byte_start_is_refused_exactly_when_a_rule_names_it(require_mask,
                                                                      allowed_rsv_bits):
    # The parser's fast path is a table made from header_violations; all 65,536 starts.
    for first in range(256):
        for second in range(256):
            parser = FrameParser(require_mask=require_mask, allowed_rsv_bits=allowed_rsv_bits)
            parser.feed(bytes((first, second)))
            try:
                parser.next_frame()
                refused = None
            except ProtocolError as error:
                refused = (type(error), str(error))
            found = header_violations(first, second, require_mask=require_mask,
                                      allowed_rsv_bits=allowed_rsv_bits)
            named = (found[0].error_type, found[0].reason) if found else None
            assert refused == named, f"{first:02x} {second:02x}"


def test_allowed_rsv_bits_set_after_the_parser_is_made_take_effect():
    parser = FrameParser(require_mask=CLIENT_SIDE)
    parser.allowed_rsv_bits = RSV1_BIT      # as rawws.protocol does once deflate is agreed
    parser.feed(bytes([0xC1, 0x00]))
    assert parser.next_frame() == Frame(OP_TEXT, b"", rsv1=True)


@pytest.mark.parametrize("first", [0xC9, 0xC0], ids=["ping", "continuation"])
def test_rsv1_on_a_control_or_continuation_frame_is_refused_from_its_header(first):
    # RFC 7692 §6.1: permessage-deflate's RSV1 marks a data message's first frame only.
    error = refusal(bytes([first, 0x05]), require_mask=CLIENT_SIDE, allowed_rsv_bits=RSV1_BIT)
    assert error.close_code == 1002


# ---- incremental parsing --------------------------------------------------

def test_parser_returns_none_until_the_whole_frame_arrived():
    parser = FrameParser(require_mask=SERVER_SIDE)
    for byte in HELLO_MASKED[:-1]:
        parser.feed(bytes([byte]))
        assert parser.next_frame() is None
    parser.feed(HELLO_MASKED[-1:])
    assert parser.next_frame() == Frame(OP_TEXT, b"Hello")
    assert parser.next_frame() is None


def test_parser_fed_one_byte_at_a_time_gives_the_same_frames_as_fed_at_once():
    stream = b"".join([
        encode_frame(OP_TEXT, b"Hel", fin=False, mask_key=RFC_KEY),
        encode_frame(OP_PING, b"ping", mask_key=b"\x01\x02\x03\x04"),
        encode_frame(OP_CONTINUATION, b"lo", mask_key=b"\xff\xee\xdd\xcc"),
        encode_frame(OP_BINARY, bytes(range(200)), mask_key=RFC_KEY),
        encode_frame(OP_BINARY, bytes(70000), mask_key=RFC_KEY),
        encode_frame(OP_PONG, b"", mask_key=RFC_KEY),
        encode_frame(OP_CLOSE, b"\x03\xe8bye", mask_key=RFC_KEY),
    ])
    at_once = parse_all(stream, require_mask=SERVER_SIDE)

    parser = FrameParser(require_mask=SERVER_SIDE)
    one_by_one = []
    for i in range(len(stream)):
        parser.feed(stream[i:i + 1])
        while (frame := parser.next_frame()) is not None:
            one_by_one.append(frame)

    assert one_by_one == at_once
    assert [frame.opcode for frame in at_once] == [
        OP_TEXT, OP_PING, OP_CONTINUATION, OP_BINARY, OP_BINARY, OP_PONG, OP_CLOSE]


def test_parser_keeps_bytes_of_the_next_frame():
    parser = FrameParser(require_mask=CLIENT_SIDE)
    parser.feed(HELLO_UNMASKED + PING_UNMASKED[:3])
    assert parser.next_frame() == Frame(OP_TEXT, b"Hello")
    assert parser.next_frame() is None
    assert parser.buffered == 3
    parser.feed(PING_UNMASKED[3:])
    assert parser.next_frame() == Frame(OP_PING, b"Hello")


def test_parser_takes_whole_frames_from_the_read_and_copies_only_the_frame_it_cuts():
    # A server reads into one buffer it reuses: whole frames are parsed where
    # they lie, and the start of a cut frame must survive the next read.
    read_buffer = bytearray(HELLO_MASKED + PONG_MASKED[:4])
    parser = FrameParser(require_mask=SERVER_SIDE)
    parser.feed(memoryview(read_buffer))
    assert parser.next_frame() == Frame(OP_TEXT, b"Hello")
    assert parser.next_frame() is None
    assert parser.buffered == 4
    read_buffer[:] = b"\xff" * len(read_buffer)        # the next read overwrites it
    parser.feed(PONG_MASKED[4:])
    assert parser.next_frame() == Frame(OP_PONG, b"Hello")
    assert parser.buffered == 0


def test_parser_fed_twice_before_parsing_gives_the_frames_in_order():
    parser = FrameParser(require_mask=CLIENT_SIDE)
    parser.feed(HELLO_UNMASKED)
    parser.feed(PING_UNMASKED)
    assert parser.buffered == len(HELLO_UNMASKED) + len(PING_UNMASKED)
    assert parser.next_frame() == Frame(OP_TEXT, b"Hello")
    assert parser.next_frame() == Frame(OP_PING, b"Hello")
    assert parser.next_frame() is None


def test_next_frame_parts_is_the_first_byte_and_the_unmasked_payload():
    parser = FrameParser(require_mask=SERVER_SIDE)
    parser.feed(HELLO_MASKED + encode_frame(OP_TEXT, b"Hel", fin=False, mask_key=RFC_KEY))
    assert parser.next_frame_parts() == (0x81, b"Hello")    # FIN, opcode 1
    assert parser.next_frame_parts() == (0x01, b"Hel")      # no FIN, opcode 1
    assert parser.next_frame_parts() is None


def test_short_headers_are_frame_headers_of_every_7_bit_length():
    for opcode in (OP_TEXT, OP_BINARY):
        assert SHORT_HEADERS[opcode] == tuple(frame_header(opcode, length)
                                              for length in range(126))


def test_rsv_bits_are_reported_when_an_extension_allows_them():
    parser = FrameParser(require_mask=CLIENT_SIDE, allowed_rsv_bits=0x40)
    parser.feed(bytes([0xC1, 0x00]))
    assert parser.next_frame() == Frame(OP_TEXT, b"", rsv1=True)


@pytest.mark.parametrize("rsv", [0x10, 0x20, 0x40, 0x70])
def test_allowed_rsv_bits_are_reported_whether_the_frame_came_whole_or_cut(rsv):
    wire = encode_frame(OP_TEXT, b"abc", mask_key=RFC_KEY, rsv1=bool(rsv & 0x40),
                        rsv2=bool(rsv & 0x20), rsv3=bool(rsv & 0x10))
    expected = Frame(OP_TEXT, b"abc", rsv1=bool(rsv & 0x40), rsv2=bool(rsv & 0x20),
                     rsv3=bool(rsv & 0x10))
    whole = FrameParser(require_mask=SERVER_SIDE, allowed_rsv_bits=0x70)
    whole.feed(wire)
    cut = FrameParser(require_mask=SERVER_SIDE, allowed_rsv_bits=0x70)
    cut.feed(wire[:7])                                  # header, key and one payload byte
    assert cut.next_frame() is None and cut.pending is not None
    cut.feed(wire[7:])
    assert whole.next_frame() == cut.next_frame() == expected


def test_encode_frame_sets_the_rsv_bits_it_is_asked_to():
    assert encode_frame(OP_TEXT, b"", rsv1=True, rsv2=True, rsv3=True) == bytes([0xF1, 0x00])
