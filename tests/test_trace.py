"""rawws.tools.trace: frames annotated field by field, and --trace on a live connection.

The RFC 6455 §5.7 examples come first, each with its whole annotation, line
by line; then each rule the annotator names (byte and section), text split
between frames, Close bodies, compressed frames; then the tap that prints a
connection's bytes as they cross the socket: handshake heads, frames, fed in
any pieces, and a real server and client tracing to a StringIO.
"""
from __future__ import annotations

import io
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path

import pytest

from rawws.net.client import connect
from rawws.frames import OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, encode_frame
from rawws.handshake import accept_key, build_request
from rawws.tools.trace import (FrameAnnotator, IncompleteFrame, WireTracer, annotate_frame,
                         check_header, parse_header, printable)

RFC_KEY = bytes.fromhex("37fa213d")   # the masking key of every masked §5.7 example


def annotate_all(*frames: bytes, **options) -> list[str]:
    """The annotation of frames read one after another by one receiver."""
    annotator = FrameAnnotator(**options)
    lines = []
    for frame in frames:
        header = parse_header(frame)
        lines += annotator.annotate(header, frame[header.size:])
        lines += annotator.finish(header)
    return lines


# ---- RFC 6455 §5.7, byte for byte -------------------------------------------

def test_rfc_single_frame_unmasked_text():
    assert annotate_frame(bytes.fromhex("81 05 48 65 6c 6c 6f")) == [
        "FIN=1 RSV=000 op=0x1 TEXT MASK=0 len=5 (7-bit)",
        "  payload  48 65 6c 6c 6f",
        '  text     "Hello"',
    ]


def test_rfc_single_frame_masked_text_shows_key_masked_and_unmasked_bytes():
    assert annotate_frame(bytes.fromhex("81 85 37 fa 21 3d 7f 9f 4d 51 58")) == [
        "FIN=1 RSV=000 op=0x1 TEXT MASK=1 len=5 (7-bit) key=37fa213d",
        "  masked   7f 9f 4d 51 58",
        "  unmasked 48 65 6c 6c 6f",
        '  text     "Hello"',
    ]


def test_rfc_fragmented_text_continuation_is_text_because_the_message_is():
    assert annotate_all(bytes.fromhex("01 03 48 65 6c"), bytes.fromhex("80 02 6c 6f")) == [
        "FIN=0 RSV=000 op=0x1 TEXT MASK=0 len=3 (7-bit)",
        "  payload  48 65 6c",
        '  text     "Hel"',
        "FIN=1 RSV=000 op=0x0 CONTINUATION MASK=0 len=2 (7-bit)",
        "  payload  6c 6f",
        '  text     "lo"',
    ]


def test_rfc_unmasked_ping():
    assert annotate_frame(bytes.fromhex("89 05 48 65 6c 6c 6f")) == [
        "FIN=1 RSV=000 op=0x9 PING MASK=0 len=5 (7-bit)",
        "  payload  48 65 6c 6c 6f",
        '  text     "Hello"',
    ]


def test_rfc_masked_pong():
    assert annotate_frame(bytes.fromhex("8a 85 37 fa 21 3d 7f 9f 4d 51 58")) == [
        "FIN=1 RSV=000 op=0xa PONG MASK=1 len=5 (7-bit) key=37fa213d",
        "  masked   7f 9f 4d 51 58",
        "  unmasked 48 65 6c 6c 6f",
        '  text     "Hello"',
    ]


def test_rfc_256_bytes_binary_uses_the_16_bit_length_and_is_shortened():
    frame = bytes.fromhex("82 7E 0100") + bytes(range(256))
    assert annotate_frame(frame) == [
        "FIN=1 RSV=000 op=0x2 BINARY MASK=0 len=256 (16-bit)",
        "  payload  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f \u2026 (240 more bytes)",
    ]


def test_rfc_64_kib_binary_uses_the_64_bit_length():
    frame = bytes.fromhex("82 7F 0000000000010000") + b"\xab" * 65536
    assert annotate_frame(frame, hex_limit=4) == [
        "FIN=1 RSV=000 op=0x2 BINARY MASK=0 len=65536 (64-bit)",
        "  payload  ab ab ab ab \u2026 (65532 more bytes)",
    ]


def test_without_a_limit_hex_wraps_at_16_bytes_a_line():
    frame = encode_frame(OP_BINARY, bytes(range(20)))
    assert annotate_frame(frame, hex_limit=None) == [
        "FIN=1 RSV=000 op=0x2 BINARY MASK=0 len=20 (7-bit)",
        "  payload  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f",
        "           10 11 12 13",
    ]


# ---- the header ---------------------------------------------------------------

@pytest.mark.parametrize("frame, length, form, size", [
    ("81 05 48656c6c6f", 5, 7, 2),
    ("82 7e 0100" + "00" * 256, 256, 16, 4),
    ("82 7f 0000000000010000" + "00" * 65536, 65536, 64, 10),
    ("81 85 37fa213d 7f9f4d5158", 5, 7, 6),
])
def test_parse_header_reads_each_length_form(frame, length, form, size):
    header = parse_header(bytes.fromhex(frame))
    assert (header.length, header.length_form, header.size) == (length, form, size)


def test_parse_header_reads_every_bit():
    header = parse_header(bytes([0b0111_1001, 0b1000_0000]) + RFC_KEY)
    assert (header.fin, header.rsv1, header.rsv2, header.rsv3) == (False, True, True, True)
    assert (header.opcode, header.masked, header.mask_key) == (OP_PING, True, RFC_KEY)


@pytest.mark.parametrize("data, message", [
    ("", "incomplete: a frame header needs at least 2 bytes, have 0"),
    ("81", "incomplete: a frame header needs at least 2 bytes, have 1"),
    ("81 7e 01", "incomplete: header says 16-bit length (len=126), need 4 bytes, have 3"),
    ("82 7f 0000", "incomplete: header says 64-bit length (len=127), need 10 bytes, have 4"),
    ("81 85 37fa", "incomplete: MASK=1, the header needs 6 bytes with its masking key "
                   "(bytes 2-5), have 4"),
])
def test_an_incomplete_header_says_what_is_missing(data, message):
    with pytest.raises(IncompleteFrame) as raised:
        parse_header(bytes.fromhex(data))
    assert str(raised.value) == message


def test_an_incomplete_payload_says_how_many_bytes_are_missing():
    with pytest.raises(IncompleteFrame, match=r"payload of 5 bytes, have 2 \(3 missing\)"):
        annotate_frame(bytes.fromhex("81 05 48 65"))


def rules(frame_hex: str, **options) -> list[str]:
    return [str(finding) for finding in check_header(parse_header(bytes.fromhex(frame_hex)),
                                                     **options)]


@pytest.mark.parametrize("first, bit", [(0xC1, "RSV1"), (0xA1, "RSV2"), (0x91, "RSV3")])
def test_rsv_bit_without_an_extension_is_named(first, bit):
    assert rules(f"{first:02x} 00") == [
        f"error: byte 0: {bit} set but no extension negotiated (RFC 6455 §5.2)"]


def test_reserved_opcode_is_named():
    assert rules("83 00") == ["error: byte 0: reserved opcode 0x3 (RFC 6455 §5.2)"]
    assert rules("8b 00") == ["error: byte 0: reserved opcode 0xb (RFC 6455 §5.2)"]


def test_fragmented_control_frame_is_named():
    assert rules("09 00") == ["error: byte 0: control frame with FIN=0; control frames must "
                              "not be fragmented (RFC 6455 §5.5)"]


def test_control_frame_over_125_bytes_is_named_at_byte_1():
    assert rules("89 7e 00c8") == ["error: byte 1: control frame payload 200 > 125 "
                                   "(RFC 6455 §5.5)"]


def test_64_bit_length_with_its_top_bit_set_is_named_at_byte_2():
    assert rules("82 7f 8000000000000000") == [
        "error: byte 2: 64-bit length with its most significant bit set (RFC 6455 §5.2)",
        ]


def test_non_minimal_length_is_a_warning():
    assert rules("81 7e 0005") == ["warning: byte 1: length 5 sent in the 16-bit form; the "
                                   "minimal form is 7-bit (RFC 6455 §5.2)"]


def test_masking_rule_is_checked_when_the_sender_is_known():
    assert rules("81 00", sender="client") == [
        "error: byte 1: MASK=0, but a client masks every frame it sends (RFC 6455 §5.1)"]
    assert rules("81 80 37fa213d", sender="server") == [
        "error: byte 1: MASK=1, but a server never masks its frames (RFC 6455 §5.1)"]
    assert rules("81 80 37fa213d", sender="client") == []


def test_rsv1_is_allowed_with_deflate_but_not_on_control_or_continuation_frames():
    assert rules("c1 00", allow_rsv1=True) == []
    assert rules("c9 00", allow_rsv1=True) == [
        "error: byte 0: RSV1 set on a control frame; only the first frame of a data message "
        "may be compressed (RFC 7692 §6.1)"]
    assert rules("c0 00", allow_rsv1=True) == [
        "error: byte 0: RSV1 set on a continuation frame; only the first frame of a message "
        "carries it (RFC 7692 §6.1)"]


def test_a_control_frame_length_in_a_longer_form_is_an_error_as_the_parser_says():
    assert rules("89 7e 0005") == [
        "error: byte 1: control frame length in the 16-bit form; a control frame's payload is "
        "at most 125 bytes, in the 7-bit form (RFC 6455 §5.5)",
        "warning: byte 1: length 5 sent in the 16-bit form; the minimal form is 7-bit "
        "(RFC 6455 §5.2)"]


def test_a_frame_over_the_receivers_limit_is_named_when_the_limit_is_given():
    assert rules("82 7e 03e9", max_frame_size=1000) == [
        "error: byte 2: frame of 1001 bytes is over the 1000-byte limit (RFC 6455 §10.4)"]
    assert rules("82 7e 03e9") == []


def test_a_header_finding_carries_the_parsers_rule_and_close_code():
    (finding,) = check_header(parse_header(bytes.fromhex("81 05")), sender="client")
    assert (finding.violation.close_code, finding.violation.reason) == (
        1002, "frame must be masked")


def test_a_frame_breaking_several_rules_names_each():
    lines = annotate_frame(bytes.fromhex("39 7e 00c8") + bytes(200))
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 4   # RSV2, RSV3, FIN=0 on a control frame, 200 > 125


# ---- sequences of frames (§5.4) ---------------------------------------------------

def test_continuation_with_no_message_in_progress_is_named():
    assert annotate_all(bytes.fromhex("80 02 6c 6f"))[-1] == (
        "  error: byte 0: continuation frame with no message in progress (RFC 6455 §5.4)")


def test_new_message_inside_a_fragmented_one_is_named():
    lines = annotate_all(bytes.fromhex("01 01 48"), bytes.fromhex("81 01 49"))
    assert lines[-1] == ("  error: byte 0: new data frame while a fragmented message is open "
                         "(RFC 6455 §5.4)")


def test_a_ping_between_fragments_leaves_the_message_open():
    lines = annotate_all(bytes.fromhex("01 03 48 65 6c"), bytes.fromhex("89 00"),
                         bytes.fromhex("80 02 6c 6f"))
    assert lines[-1] == '  text     "lo"'
    assert not any("error" in line for line in lines)


# ---- text (§5.6, §8.1) ----------------------------------------------------------

def test_a_character_split_between_frames_shows_with_the_frame_that_ends_it():
    euro = "\u20ac".encode()   # e2 82 ac
    lines = annotate_all(b"\x01\x02" + euro[:2], b"\x80\x01" + euro[2:])
    assert lines[2] == '  text     "" (+2 bytes of a character the next frame ends)'
    assert lines[5] == '  text     "\u20ac"'
    assert not any("error" in line for line in lines)


def test_invalid_utf8_is_named_by_its_byte():
    lines = annotate_frame(bytes.fromhex("81 04 48 69 ff 21"))
    assert lines[-2:] == [
        '  text     "Hi\ufffd!"',
        "  error: byte 4: invalid UTF-8 in a text message (invalid start byte) (RFC 6455 §8.1)",
    ]


def test_a_truncated_character_at_the_end_of_a_message_is_invalid():
    lines = annotate_frame(bytes.fromhex("81 02 e2 82"))
    assert lines[-1] == ("  error: byte 2: invalid UTF-8 in a text message (unexpected end of "
                         "data) (RFC 6455 §8.1)")


def test_binary_payloads_are_not_read_as_text():
    assert annotate_frame(bytes.fromhex("82 02 ff fe")) == [
        "FIN=1 RSV=000 op=0x2 BINARY MASK=0 len=2 (7-bit)",
        "  payload  ff fe",
    ]


def test_text_past_the_limit_is_cut_with_a_count():
    frame = encode_frame(OP_TEXT, b"abcdefghij")
    assert annotate_frame(frame, text_limit=4)[-1] == '  text     "abcd\u2026" (6 more bytes)'


def test_control_characters_are_escaped_so_the_terminal_is_safe():
    assert printable("a\x1b[2Jb\n\\") == "a\\x1b[2Jb\\n\\\\"
    assert printable("caf\u00e9 \u263a") == "caf\u00e9 \u263a"
    assert printable("\u202e") == "\\u202e"   # right-to-left override: a format character


def test_a_character_past_the_bmp_is_escaped_with_all_its_digits():
    assert printable("\U000e0001") == "\\U000e0001"   # LANGUAGE TAG, a format character


def test_the_characters_asked_for_are_kept_as_they_are():
    # As the chat client shows a message: its lines, tabs and backslashes kept.
    assert printable("a\\b\n\tc\x1b\r", keep="\n\t\\") == "a\\b\n\tc\\x1b\\r"


# ---- Close bodies (§5.5.1, §7.4) ------------------------------------------------

def test_close_with_code_and_reason():
    assert annotate_frame(bytes.fromhex("88 05 03 e8 62 79 65"))[-1] == (
        '  close    code=1000 (normal closure) reason="bye"')


def test_empty_close_means_no_status_code():
    assert annotate_frame(bytes.fromhex("88 00")) == [
        "FIN=1 RSV=000 op=0x8 CLOSE MASK=0 len=0 (7-bit)",
        "  close    no status code (the receiver reports 1005, §7.1.5)",
    ]


def test_one_byte_close_body_is_named():
    assert annotate_frame(bytes.fromhex("88 01 03"))[-1] == (
        "  error: byte 2: a Close body of 1 byte; a body starts with a 2-byte code "
        "(RFC 6455 §5.5.1)")


@pytest.mark.parametrize("code", [999, 1005, 1006, 1015, 2999, 5000])
def test_a_code_that_may_not_be_sent_is_named(code):
    frame = encode_frame(OP_CLOSE, code.to_bytes(2, "big"))
    assert annotate_frame(frame)[-1] == (
        f"  error: byte 2: close code {code} may not be sent in a Close frame (RFC 6455 §7.4)")


def test_close_reason_that_is_not_utf8_is_named_by_its_byte():
    assert annotate_frame(bytes.fromhex("88 03 03 e8 ff"))[-1] == (
        "  error: byte 4: close reason is not valid UTF-8 (RFC 6455 §5.5.1)")


def test_private_and_registered_codes_are_named_so():
    assert annotate_frame(encode_frame(OP_CLOSE, (4001).to_bytes(2, "big")))[-1] == (
        "  close    code=4001 (private use)")
    assert annotate_frame(encode_frame(OP_CLOSE, (3000).to_bytes(2, "big")))[-1] == (
        "  close    code=3000 (registered)")


# ---- compressed frames (RFC 7692) ---------------------------------------------

# RFC 7692 §7.2.3.1: "Hello" compressed, as a frame with RSV1.
RFC7692_HELLO = bytes.fromhex("c1 07 f2 48 cd c9 c9 07 00")


def test_compressed_frame_without_deflate_negotiated_is_not_decoded():
    assert annotate_frame(RFC7692_HELLO) == [
        "FIN=1 RSV=100 op=0x1 TEXT MASK=0 len=7 (7-bit)",
        "  payload  f2 48 cd c9 c9 07 00",
        "  deflate  compressed (RSV1, permessage-deflate); not decoded",
        "  error: byte 0: RSV1 set but no extension negotiated (RFC 6455 §5.2)",
    ]


def test_compressed_frame_with_deflate_is_inflated():
    assert annotate_frame(RFC7692_HELLO, deflate=True) == [
        "FIN=1 RSV=100 op=0x1 TEXT MASK=0 len=7 (7-bit)",
        "  payload  f2 48 cd c9 c9 07 00",
        "  deflate  compressed (RSV1, permessage-deflate); inflated when the message ends",
        '  inflated "Hello"',
    ]


def test_rfc7692_fragmented_compressed_hello_is_inflated_at_its_last_frame():
    # RFC 7692 §7.2.3.1: the same bytes in two frames, RSV1 on the first only.
    lines = annotate_all(bytes.fromhex("41 03 f2 48 cd"), bytes.fromhex("80 04 c9 c9 07 00"),
                         deflate=True)
    assert lines[-1] == '  inflated "Hello"'
    assert not any("error" in line for line in lines)


def test_context_takeover_second_message_is_inflated_with_the_first_ones_window():
    # RFC 7692 §7.2.3.2: the second "Hello" refers back to the first.
    lines = annotate_all(RFC7692_HELLO, bytes.fromhex("c1 05 f2 00 11 00 00"), deflate=True)
    assert [line for line in lines if line.startswith("  inflated")] == ['  inflated "Hello"'] * 2


def test_data_that_does_not_inflate_is_an_error():
    lines = annotate_frame(bytes.fromhex("c1 02 ff ff"), deflate=True)
    assert lines[-1].startswith("  error: the message does not inflate:")


# ---- the tap: bytes as they cross a socket -------------------------------------

KEY = "dGhlIHNhbXBsZSBub25jZQ=="   # the §1.3 sample key


def handshake_bytes(extensions: str | None = None) -> tuple[bytes, bytes]:
    request = build_request("example.com", "/chat", KEY)
    response = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\n" f"Sec-WebSocket-Accept: {accept_key(KEY)}\r\n"
                + (f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else "")
                + "\r\n").encode()
    return request, response


def server_tap() -> tuple[WireTracer, io.StringIO]:
    out = io.StringIO()
    return WireTracer(out), out


def test_tap_prints_the_handshake_heads_then_frames():
    tracer, out = server_tap()
    tap = tracer.tap("accepted from 127.0.0.1:5555", role="server")
    request, response = handshake_bytes()
    tap.incoming(request)
    tap.outgoing(response)
    tap.incoming(bytes.fromhex("81 85 37 fa 21 3d 7f 9f 4d 51 58"))
    tap.outgoing(bytes.fromhex("81 05 48 65 6c 6c 6f"))
    tap.incoming(b"")
    assert out.getvalue().splitlines() == [
        "[c1 ==] accepted from 127.0.0.1:5555",
        f"[c1 <-] HTTP request, {len(request)} bytes:",
        "[c1 <-]   GET /chat HTTP/1.1",
        "[c1 <-]   Host: example.com",
        "[c1 <-]   Upgrade: websocket",
        "[c1 <-]   Connection: Upgrade",
        f"[c1 <-]   Sec-WebSocket-Key: {KEY}",
        "[c1 <-]   Sec-WebSocket-Version: 13",
        "[c1 <-]   (empty line: end of the head)",
        f"[c1 ->] HTTP response, {len(response)} bytes:",
        "[c1 ->]   HTTP/1.1 101 Switching Protocols",
        "[c1 ->]   Upgrade: websocket",
        "[c1 ->]   Connection: Upgrade",
        "[c1 ->]   Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
        "[c1 ->]   (empty line: end of the head)",
        "[c1 ==] handshake done (101): WebSocket frames from here on; no extensions",
        "[c1 <-] FIN=1 RSV=000 op=0x1 TEXT MASK=1 len=5 (7-bit) key=37fa213d",
        "[c1 <-]   masked   7f 9f 4d 51 58",
        "[c1 <-]   unmasked 48 65 6c 6c 6f",
        '[c1 <-]   text     "Hello"',
        "[c1 ->] FIN=1 RSV=000 op=0x1 TEXT MASK=0 len=5 (7-bit)",
        "[c1 ->]   payload  48 65 6c 6c 6f",
        '[c1 ->]   text     "Hello"',
        "[c1 <-] EOF: the peer closed its side of the TCP connection",
    ]


def conversation(extensions: str | None = None) -> tuple[list[bytes], list[bytes]]:
    """A client's bytes and a server's bytes: handshake, every kind of frame, close."""
    request, response = handshake_bytes(extensions)
    client = [request,
              encode_frame(OP_TEXT, "h\u00e9llo \u20ac".encode(), fin=False, mask_key=RFC_KEY),
              encode_frame(OP_PING, b"are you there", mask_key=b"\x01\x02\x03\x04"),
              encode_frame(0, "\U0001f600 done".encode(), mask_key=b"\xff\x00\xff\x00"),
              encode_frame(OP_BINARY, bytes(range(256)) * 3, mask_key=b"abcd"),
              encode_frame(OP_CLOSE, b"\x03\xe8bye", mask_key=RFC_KEY)]
    server = [response,
              encode_frame(OP_TEXT, b"x" * 70000),
              encode_frame(0xA, b"are you there"),
              encode_frame(OP_CLOSE, b"\x03\xe8")]
    return client, server


def trace_of(client_pieces: list[bytes], server_pieces: list[bytes]) -> str:
    """The server-side trace when the client's bytes come in these pieces, then the server's."""
    tracer, out = server_tap()
    tap = tracer.tap(role="server")
    for piece in client_pieces:
        tap.incoming(piece)
    for piece in server_pieces:
        tap.outgoing(piece)
    return out.getvalue()


def cut(data: bytes, rng: random.Random) -> list[bytes]:
    """`data` in pieces of random sizes, single bytes among them."""
    pieces, pos = [], 0
    while pos < len(data):
        size = rng.choice([1, 1, 2, 3, 7, 64, 1000, 70000])
        pieces.append(data[pos:pos + size])
        pos += size
    return pieces


@pytest.mark.parametrize("seed", range(8))
def test_tap_output_is_the_same_however_the_bytes_are_cut(seed):
    client, server = conversation()
    whole = trace_of([b"".join(client)], [b"".join(server)])
    rng = random.Random(seed)
    assert trace_of(cut(b"".join(client), rng), cut(b"".join(server), rng)) == whole


def test_tap_output_is_the_same_fed_one_byte_at_a_time():
    client, server = conversation()
    whole = trace_of([b"".join(client)], [b"".join(server)])
    one_by_one = [bytes([b]) for b in b"".join(client)]
    assert trace_of(one_by_one, server) == whole


def test_tap_shows_every_frame_of_the_conversation():
    client, server = conversation()
    trace = trace_of(client, server)
    assert '[c1 <-]   text     "h\u00e9llo \u20ac"' in trace
    assert '[c1 <-]   text     "\U0001f600 done"' in trace   # a continuation of text
    assert "[c1 <-] FIN=1 RSV=000 op=0x2 BINARY MASK=1 len=768 (16-bit) key=61626364" in trace
    assert "[c1 ->] FIN=1 RSV=000 op=0x1 TEXT MASK=0 len=70000 (64-bit)" in trace
    assert '[c1 ->]   text     "' + "x" * 200 + '\u2026" (69800 more bytes)' in trace
    assert '[c1 <-]   close    code=1000 (normal closure) reason="bye"' in trace
    assert "error" not in trace


def test_tap_keeps_only_what_it_shows_of_a_long_payload():
    tracer, _ = server_tap()
    tap = tracer.tap(role="client")
    request, response = handshake_bytes()
    tap.outgoing(request)
    tap.incoming(response)
    frame = encode_frame(OP_BINARY, bytes(4 * 1024 * 1024))
    for start in range(0, len(frame), 65536):
        tap.incoming(frame[start:start + 65536])
        assert len(tap.incoming_side.buffer) < 65536
    assert not tap.incoming_side.buffer


def test_tap_shows_frames_that_the_protocol_would_refuse():
    tracer, out = server_tap()
    tap = tracer.tap(role="server")
    request, response = handshake_bytes()
    tap.incoming(request)
    tap.outgoing(response)
    tap.incoming(bytes.fromhex("a1 05 48 65 6c 6c 6f"))   # unmasked, RSV2: refused with 1002
    trace = out.getvalue()
    assert "[c1 <-] FIN=1 RSV=010 op=0x1 TEXT MASK=0 len=5 (7-bit)" in trace
    assert "[c1 <-]   error: byte 0: RSV2 set but no extension negotiated (RFC 6455 §5.2)" in trace
    assert ("[c1 <-]   error: byte 1: MASK=0, but a client masks every frame it sends "
            "(RFC 6455 §5.1)") in trace


def test_frames_sent_with_the_upgrade_request_wait_for_the_101():
    tracer, out = server_tap()
    tap = tracer.tap(role="server")
    request, response = handshake_bytes()
    tap.incoming(request + bytes.fromhex("81 85 37 fa 21 3d 7f 9f 4d 51 58"))
    assert "FIN=1" not in out.getvalue()
    tap.outgoing(response)
    lines = out.getvalue().splitlines()
    assert lines.index("[c1 ==] handshake done (101): WebSocket frames from here on; "
                       "no extensions") < lines.index('[c1 <-]   text     "Hello"')


def test_a_refused_upgrade_leaves_both_directions_in_http():
    tracer, out = server_tap()
    tap = tracer.tap(role="server")
    request, _ = handshake_bytes()
    refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\nConnection: close\r\n\r\nno no\n"
    tap.incoming(request)
    tap.outgoing(refusal)
    trace = out.getvalue()
    assert "[c1 ->]   HTTP/1.1 403 Forbidden" in trace
    assert "[c1 ->]   followed by a body of 6 bytes (not shown)" in trace
    assert "handshake done" not in trace


def test_file_responses_are_skipped_by_their_length_and_head_has_no_body():
    tracer, out = server_tap()
    tap = tracer.tap(role="server")
    tap.incoming(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\nHEAD /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    tap.outgoing(head + b"hello" + head)
    request, response = handshake_bytes()
    tap.incoming(request)
    tap.outgoing(response)
    trace = out.getvalue()
    assert trace.count("[c1 ->]   HTTP/1.1 200 OK") == 2
    assert trace.count("followed by a body of 5 bytes (not shown)") == 1
    assert "handshake done (101)" in trace   # so the HEAD answer was read as bodiless


def test_content_length_is_read_as_rawws_http_reads_it():
    # RFC 9112 §6.3: "5, 5" is 5; conflicting values frame nothing, so the body runs to the end.
    tracer, out = server_tap()
    tap = tracer.tap(role="server")
    tap.incoming(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    tap.outgoing(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello"
                 b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello")
    lines = out.getvalue().splitlines()
    assert lines.count("[c1 ->]   followed by a body of 5 bytes (not shown)") == 1
    assert lines[-1] == "[c1 ->]   followed by a body up to the end of the connection (not shown)"


def test_negotiated_deflate_inflates_compressed_frames_in_the_trace():
    tracer, out = server_tap()
    tap = tracer.tap(role="client")
    request, response = handshake_bytes("permessage-deflate")
    tap.outgoing(request)
    tap.incoming(response)
    tap.incoming(RFC7692_HELLO)
    body = zlib.compressobj(wbits=-15)
    compressed = body.compress(b"Hello, Goats!") + body.flush(zlib.Z_SYNC_FLUSH)
    tap.outgoing(encode_frame(OP_TEXT, compressed[:-4], mask_key=RFC_KEY, rsv1=True))
    trace = out.getvalue()
    assert "extensions: permessage-deflate" in trace
    assert '[c1 <-]   inflated "Hello"' in trace
    assert '[c1 ->]   inflated "Hello, Goats!"' in trace
    assert "error" not in trace


def test_eof_inside_a_frame_says_bytes_went_unshown():
    tracer, out = server_tap()
    tap = tracer.tap(role="client")
    request, response = handshake_bytes()
    tap.outgoing(request)
    tap.incoming(response + bytes.fromhex("81 05 48 65"))
    tap.incoming(b"")
    assert out.getvalue().splitlines()[-1] == (
        "[c1 <-] EOF: the peer closed its side of the TCP connection; 2 bytes of an "
        "unfinished frame went unshown")


def test_each_connection_has_its_own_number():
    tracer, out = server_tap()
    taps = [tracer.tap(f"connection {n}") for n in range(3)]
    assert [tap.name for tap in taps] == ["c1", "c2", "c3"]
    assert out.getvalue().splitlines() == [f"[c{n + 1} ==] connection {n}" for n in range(3)]


def test_a_broken_stream_does_not_break_the_connection():
    stream = io.StringIO()
    stream.close()
    tap = WireTracer(stream).tap("closed stream")
    request, _ = handshake_bytes()
    tap.incoming(request)   # no exception


# ---- --trace on real sockets ---------------------------------------------------------

def test_server_with_a_tracer_prints_a_real_handshake_and_frames(serve):
    out = io.StringIO()
    server = serve(tracer=WireTracer(out), compression=None)
    with connect(f"ws://127.0.0.1:{server.port}/", timeout=5) as ws:
        ws.send_text("Hello")
        assert ws.recv(timeout=5) == "Hello"
    server.shutdown()
    trace = out.getvalue()
    assert "[c1 ==] accepted from 127.0.0.1:" in trace
    assert "[c1 <-]   GET / HTTP/1.1" in trace
    assert "[c1 ->]   HTTP/1.1 101 Switching Protocols" in trace
    assert "[c1 <-] FIN=1 RSV=000 op=0x1 TEXT MASK=1 len=5 (7-bit) key=" in trace
    assert "[c1 ->] FIN=1 RSV=000 op=0x1 TEXT MASK=0 len=5 (7-bit)" in trace
    assert trace.count('text     "Hello"') == 2
    assert "[c1 <-]   close    code=1000 (normal closure)" in trace
    assert "[c1 ->]   close    code=1000 (normal closure)" in trace
    assert "error" not in trace


def test_server_without_a_tracer_gives_connections_no_tap(serve):
    server = serve()
    with connect(f"ws://127.0.0.1:{server.port}/", timeout=5) as ws:
        ws.send_text("x")
        ws.recv(timeout=5)
        (conn,) = [c for c in server.connections if hasattr(c.session, "handle")]
        assert conn.tap is None


def test_client_trace_shows_its_request_and_masked_frames(serve):
    server = serve(compression=None)
    out = io.StringIO()
    with connect(f"ws://127.0.0.1:{server.port}/", trace=WireTracer(out), timeout=5) as ws:
        ws.send_text("Hello")
        assert ws.recv(timeout=5) == "Hello"
    trace = out.getvalue()
    assert f"[c1 ==] connected to 127.0.0.1:{server.port} from 127.0.0.1:" in trace
    assert "[c1 ->]   GET / HTTP/1.1" in trace
    assert "[c1 <-]   HTTP/1.1 101 Switching Protocols" in trace
    assert "[c1 ->] FIN=1 RSV=000 op=0x1 TEXT MASK=1 len=5 (7-bit) key=" in trace
    assert "[c1 ->]   unmasked 48 65 6c 6c 6f" in trace
    assert "[c1 <-]   payload  48 65 6c 6c 6f" in trace
    assert "[c1 <-] EOF: the peer closed its side of the TCP connection" in trace


def test_trace_with_compression_shows_inflated_text_both_ways(serve):
    server = serve()
    out = io.StringIO()
    with connect(f"ws://127.0.0.1:{server.port}/", trace=WireTracer(out), compression=True,
                 timeout=5) as ws:
        ws.send_text("Hello, Goats! " * 10)
        ws.recv(timeout=5)
    trace = out.getvalue()
    assert trace.count('inflated "Hello, Goats! Hello, Goats!') == 2
    assert "error" not in trace


def test_a_raw_socket_sending_a_bad_frame_is_traced_before_the_server_refuses_it(serve):
    out = io.StringIO()
    server = serve(tracer=WireTracer(out))
    request, _ = handshake_bytes()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request.replace(b"Host: example.com", b"Host: 127.0.0.1"))
        sock.sendall(bytes.fromhex("81 05 48 65 6c 6c 6f"))   # unmasked: 1002
        while sock.recv(4096):
            pass
    server.shutdown()
    trace = out.getvalue()
    assert ("[c1 <-]   error: byte 1: MASK=0, but a client masks every frame it sends "
            "(RFC 6455 §5.1)") in trace
    assert '[c1 ->]   close    code=1002 (protocol error) reason="frame must be masked"' in trace


# ---- the --trace options of the commands ----------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@contextmanager
def running(*command: str):
    """Start a server command with --port 0; yield (process, port); stop it with SIGTERM."""
    proc = subprocess.Popen([sys.executable, "-m", *command, "--port", "0"], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "the server printed nothing within 20 s"
        match = re.search(r":(\d+)/$", proc.stdout.readline().rstrip("\n"))
        assert match, "no 'Serving on' line"
        yield proc, int(match.group(1))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_python_m_rawws_echo_trace_prints_frames_on_stderr():
    with running("rawws.echo", "--trace", "--ping-interval", "0") as (proc, port):
        with connect(f"ws://127.0.0.1:{port}/", timeout=5) as ws:
            ws.send_text("Hello")
            assert ws.recv(timeout=5) == "Hello"
    trace = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert "[c1 <-] FIN=1 RSV=000 op=0x1 TEXT MASK=1 len=5 (7-bit) key=" in trace
    assert '[c1 ->]   text     "Hello"' in trace


def test_python_m_chat_and_its_client_trace_a_chat_message():
    with running("chat", "--trace", "--ping-interval", "0", "--log-level", "WARNING") as (
            server, port):
        client = subprocess.run([sys.executable, "-m", "chat.client", f"ws://127.0.0.1:{port}/",
                                 "--name", "Beej", "--trace"],
                                input="Hello, Goats!\n/quit\n", capture_output=True, text=True,
                                env=ENV, cwd=ROOT, timeout=20)
    server_trace = server.stderr.read()
    server.stdout.close()
    server.stderr.close()
    assert client.returncode == 0, client.stderr
    assert "* joined as Beej" in client.stdout   # the chat itself stays on stdout
    assert "[c1" not in client.stdout
    for trace, arrow in ((client.stderr, "->"), (server_trace, "<-")):
        assert f"[c1 {arrow}]   Sec-WebSocket-Protocol: beej-chat-protocol-v2" in trace
        assert "MASK=1" in trace
        assert re.search(rf'\[c1 {arrow}\]   text     "\{{"type": ?"chat-message".*Hello, Goats!',
                         trace), trace
