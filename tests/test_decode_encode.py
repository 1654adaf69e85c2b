"""`python -m rawws.tools.decode` and `python -m rawws.tools.encode`: frames from hex and back.

The decoder is run through `main(argv)` (its output captured) for each kind
of input and each rule it names, with the byte and the RFC section; the
encoder builds the §5.7 examples byte for byte; and both are run once as
real commands, piped into each other.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rawws.tools import decode, encode
from rawws.tools.decode import parse_hex

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))

MASKED_HELLO = "81 85 37 fa 21 3d 7f 9f 4d 51 58"   # RFC 6455 §5.7


def run_decode(capsys, *argv: str, stdin: str | None = None) -> tuple[int, list[str]]:
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        status = decode.main(list(argv))
    finally:
        sys.stdin = sys.__stdin__
    captured = capsys.readouterr()
    return status, (captured.out + captured.err).splitlines()


def run_encode(capsys, *argv: str) -> tuple[int, list[str]]:
    status = encode.main(list(argv))
    captured = capsys.readouterr()
    return status, (captured.out + captured.err).splitlines()


# ---- reading hex ----------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "81 05 48 65 6c 6c 6f",
    "8105 48656c6c6f",
    "0x81 0x05 0x48 0x65 0x6c 0x6c 0x6f",
    "81:05:48:65:6c:6c:6f",
    "81,05,48,65,6C,6C,6F",
    "  81 05\n48 65\t6c 6c 6f\n",
    "0x8105:0X48656C6C6F",
])
def test_hex_is_read_with_any_usual_separators(text):
    assert parse_hex(text) == b"\x81\x05Hello"


def test_hex_with_a_character_that_is_no_digit_is_refused_naming_it():
    with pytest.raises(ValueError, match="not a hex digit: 'g' in '6g'"):
        parse_hex("81 6g")


def test_hex_with_an_odd_number_of_digits_is_refused():
    with pytest.raises(ValueError, match=r"an odd number of hex digits \(3\)"):
        parse_hex("81 0")


def test_bad_hex_exits_2_with_the_reason(capsys):
    assert run_decode(capsys, "81", "zz") == (2, [
        "python -m rawws.tools.decode: not a hex digit: 'z' in 'zz'"])


# ---- decoding: the RFC §5.7 examples -------------------------------------------------

def test_decode_masked_hello(capsys):
    assert run_decode(capsys, MASKED_HELLO) == (0, [
        "frame 1: bytes 0-10 (11 bytes)",
        "  FIN=1 RSV=000 op=0x1 TEXT MASK=1 len=5 (7-bit) key=37fa213d",
        "    masked   7f 9f 4d 51 58",
        "    unmasked 48 65 6c 6c 6f",
        '    text     "Hello"',
    ])


def test_decode_reads_stdin_when_given_no_arguments(capsys):
    status, lines = run_decode(capsys, stdin="0x81 0x05 0x48 0x65 0x6c 0x6c 0x6f\n")
    assert status == 0
    assert lines[1:] == ["  FIN=1 RSV=000 op=0x1 TEXT MASK=0 len=5 (7-bit)",
                         "    payload  48 65 6c 6c 6f",
                         '    text     "Hello"']


def test_decode_several_frames_in_sequence_as_one_receiver(capsys):
    status, lines = run_decode(capsys, "01 03 48 65 6c", "89 00", "80 02 6c 6f")
    assert status == 0
    assert [line for line in lines if line.startswith("frame")] == [
        "frame 1: bytes 0-4 (5 bytes)", "frame 2: bytes 5-6 (2 bytes)",
        "frame 3: bytes 7-10 (4 bytes)"]
    assert lines[-1] == '    text     "lo"'


def test_decode_256_byte_binary_shortens_the_payload_to_the_limit(capsys):
    status, lines = run_decode(capsys, "--limit", "16", "82 7E 0100" + " ab" * 256)
    assert status == 0
    assert lines == ["frame 1: bytes 0-259 (260 bytes)",
                     "  FIN=1 RSV=000 op=0x2 BINARY MASK=0 len=256 (16-bit)",
                     "    payload  " + "ab " * 15 + "ab \u2026 (240 more bytes)"]


def test_decode_limit_0_shows_every_byte(capsys):
    status, lines = run_decode(capsys, "--limit", "0", "82 7E 0100" + " 00" * 256)
    assert status == 0
    assert len(lines) == 2 + 256 // 16


def test_decode_64_kib_binary(capsys):
    data = "82 7F 0000000000010000 " + "00" * 65536
    status, lines = run_decode(capsys, stdin=data)
    assert status == 0
    assert lines[1] == "  FIN=1 RSV=000 op=0x2 BINARY MASK=0 len=65536 (64-bit)"
    assert lines[-1].endswith("\u2026 (65472 more bytes)")


# ---- decoding: each rule named by byte and section ------------------------------------

@pytest.mark.parametrize("frame, message", [
    ("a1 05 48656c6c6f",
     "error: byte 0: RSV2 set but no extension negotiated (RFC 6455 §5.2)"),
    ("c1 05 48656c6c6f",
     "error: byte 0: RSV1 set but no extension negotiated (RFC 6455 §5.2)"),
    ("85 00", "error: byte 0: reserved opcode 0x5 (RFC 6455 §5.2)"),
    ("09 00", "error: byte 0: control frame with FIN=0; control frames must not be "
              "fragmented (RFC 6455 §5.5)"),
    ("89 7e 00c8" + "00" * 200, "error: byte 1: control frame payload 200 > 125 (RFC 6455 §5.5)"),
    ("80 02 6c6f", "error: byte 0: continuation frame with no message in progress "
                   "(RFC 6455 §5.4)"),
    ("81 03 48 ff 49", "error: byte 3: invalid UTF-8 in a text message (invalid start byte) "
                       "(RFC 6455 §8.1)"),
    ("88 01 03", "error: byte 2: a Close body of 1 byte; a body starts with a 2-byte code "
                 "(RFC 6455 §5.5.1)"),
    ("88 02 03ee", "error: byte 2: close code 1006 may not be sent in a Close frame "
                   "(RFC 6455 §7.4)"),
    ("88 04 03e8 c3 28", "error: byte 4: close reason is not valid UTF-8 (RFC 6455 §5.5.1)"),
])
def test_decode_names_the_byte_and_the_rule_and_exits_1(capsys, frame, message):
    status, lines = run_decode(capsys, frame)
    assert status == 1
    assert "    " + message in lines


def test_decode_64_bit_length_with_the_top_bit_set(capsys):
    status, lines = run_decode(capsys, "82 7f 8000000000000000")
    assert status == 1
    assert lines[-1] == "  error: incomplete: payload of 9223372036854775808 bytes at bytes " \
                        "10-9223372036854775817, have 0 (9223372036854775808 missing)"


def test_decode_new_message_inside_a_fragmented_one_names_the_byte_of_its_frame(capsys):
    status, lines = run_decode(capsys, "01 01 48", "81 01 49")
    assert status == 1
    assert lines[-1] == ("    error: byte 3: new data frame while a fragmented message is open "
                         "(RFC 6455 §5.4)")


def test_decode_non_minimal_length_is_only_a_warning(capsys):
    status, lines = run_decode(capsys, "81 7e 0005 48656c6c6f")
    assert status == 0
    assert lines[-1] == ("    warning: byte 1: length 5 sent in the 16-bit form; the minimal "
                         "form is 7-bit (RFC 6455 §5.2)")


def test_decode_checks_the_masking_rule_for_a_named_sender(capsys):
    status, lines = run_decode(capsys, "--sender", "client", "81 05 48656c6c6f")
    assert status == 1
    assert lines[-1] == ("    error: byte 1: MASK=0, but a client masks every frame it sends "
                         "(RFC 6455 §5.1)")
    status, lines = run_decode(capsys, "--sender", "server", MASKED_HELLO)
    assert status == 1
    assert lines[-1] == ("    error: byte 1: MASK=1, but a server never masks its frames "
                         "(RFC 6455 §5.1)")


@pytest.mark.parametrize("data, message", [
    ("81", "error: incomplete: a frame header needs at least 2 bytes, have 1"),
    ("81 7e 00", "error: incomplete: header says 16-bit length (len=126), need 4 bytes, "
                 "have 3"),
    ("82 7f 00 00", "error: incomplete: header says 64-bit length (len=127), need 10 bytes, "
                    "have 4"),
])
def test_decode_an_incomplete_header_says_what_is_missing(capsys, data, message):
    assert run_decode(capsys, data) == (1, ["frame 1: from byte 0, incomplete",
                                            "  " + message])


def test_decode_a_header_cut_in_its_masking_key_shows_the_fields_so_far(capsys):
    assert run_decode(capsys, "81 85 37 fa") == (1, [
        "frame 1: from byte 0, incomplete",
        "  FIN=1 RSV=000 op=0x1 TEXT MASK=1 len=5 (7-bit)",
        "  error: incomplete: MASK=1, the header needs 6 bytes with its masking key "
        "(bytes 2-5), have 4"])


def test_decode_an_incomplete_payload_shows_the_header_and_what_is_missing(capsys):
    assert run_decode(capsys, "81 05 48 65 6c 6c 6f 81 05 48 65") == (1, [
        "frame 1: bytes 0-6 (7 bytes)",
        "  FIN=1 RSV=000 op=0x1 TEXT MASK=0 len=5 (7-bit)",
        "    payload  48 65 6c 6c 6f",
        '    text     "Hello"',
        "frame 2: from byte 7, incomplete",
        "  FIN=1 RSV=000 op=0x1 TEXT MASK=0 len=5 (7-bit)",
        "  error: incomplete: payload of 5 bytes at bytes 9-13, have 2 (3 missing)",
    ])


def test_decode_of_nothing_says_so(capsys):
    assert run_decode(capsys, stdin="\n") == (1, ["no bytes to decode"])


def test_decode_with_deflate_inflates_the_rfc7692_example(capsys):
    status, lines = run_decode(capsys, "--deflate", "c1 07 f2 48 cd c9 c9 07 00")
    assert status == 0
    assert lines[-1] == '    inflated "Hello"'


# ---- encoding --------------------------------------------------------------------

def test_encode_unmasked_hello(capsys):
    assert run_encode(capsys, "Hello") == (0, [
        "81 05 48 65 6c 6c 6f",
        "  FIN=1 RSV=000 op=0x1 TEXT MASK=0 len=5 (7-bit)",
        "    payload  48 65 6c 6c 6f",
        '    text     "Hello"',
    ])


@pytest.mark.parametrize("argv, frame", [
    (["--key", "37fa213d", "Hello"], MASKED_HELLO),
    (["-q", "--no-fin", "Hel"], "01 03 48 65 6c"),
    (["-q", "--opcode", "continuation", "lo"], "80 02 6c 6f"),
    (["-q", "--opcode", "ping", "Hello"], "89 05 48 65 6c 6c 6f"),
    (["-q", "--opcode", "pong", "--key", "37:fa:21:3d", "Hello"],
     "8a 85 37 fa 21 3d 7f 9f 4d 51 58"),
    (["-q", "--opcode", "0x9"], "89 00"),
    (["-q", "--close", "1000", "bye"], "88 05 03 e8 62 79 65"),
    (["-q", "--binary", "de ad be ef"], "82 04 de ad be ef"),
    (["-q", "--deflate", "Hello"], "c1 07 f2 48 cd c9 c9 07 00"),   # RFC 7692 §7.2.3.1
    (["-q", "--rsv2", "--opcode", "3", "x"], "a3 01 78"),
])
def test_encode_builds_the_exact_bytes(capsys, argv, frame):
    status, lines = run_encode(capsys, *argv)
    assert status == 0
    assert lines[0] == frame


def test_encode_256_bytes_uses_the_16_bit_length(capsys):
    status, lines = run_encode(capsys, "-q", "--binary", "00" * 256)
    assert lines[0].startswith("82 7e 01 00 00")
    assert len(bytes.fromhex(lines[0])) == 4 + 256


def test_encode_64_kib_reads_its_hex_from_stdin(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("ab" * 65536))
    status, lines = run_encode(capsys, "-q", "--binary", "-")
    assert status == 0
    assert lines[0].startswith("82 7f 00 00 00 00 00 01 00 00 ab")


def test_encode_with_a_random_key_masks_and_decodes_back(capsys):
    status, lines = run_encode(capsys, "--mask", "Hello")
    assert status == 0
    frame = bytes.fromhex(lines[0])
    assert frame[1] == 0x85
    assert lines[1].startswith("  FIN=1 RSV=000 op=0x1 TEXT MASK=1 len=5 (7-bit) key=")
    assert lines[1].endswith(frame[2:6].hex())
    assert lines[-1] == '    text     "Hello"'


def test_encode_annotates_the_rule_a_built_frame_breaks(capsys):
    status, lines = run_encode(capsys, "--opcode", "ping", "x" * 200)
    assert status == 0   # built anyway: that is the point
    assert lines[-1] == "    error: byte 1: control frame payload 200 > 125 (RFC 6455 §5.5)"


@pytest.mark.parametrize("argv", [["--key", "37fa21", "x"], ["--key", "zz", "x"],
                                  ["--opcode", "16", "x"], ["--opcode", "hello", "x"]])
def test_encode_refuses_bad_options_with_status_2(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        encode.main(argv)
    assert exited.value.code == 2


def test_encode_refuses_a_binary_payload_that_is_not_hex(capsys):
    status, lines = run_encode(capsys, "--binary", "xyz")
    assert status == 2
    assert lines == ["python -m rawws.tools.encode: --binary payload: not a hex digit: 'x' in 'xyz'"]


# ---- the real commands ------------------------------------------------------------

def test_encode_piped_into_decode_as_commands():
    encoded = subprocess.run([sys.executable, "-m", "rawws.tools.encode", "-q", "--key", "37fa213d",
                              "h\u00e9llo \u20ac"], capture_output=True, text=True, env=ENV,
                             cwd=ROOT, timeout=20, check=True)
    decoded = subprocess.run([sys.executable, "-m", "rawws.tools.decode", "--sender", "client"],
                             input=encoded.stdout, capture_output=True, text=True, env=ENV,
                             cwd=ROOT, timeout=20)
    assert decoded.returncode == 0, decoded.stderr
    assert decoded.stdout.splitlines()[-1] == '    text     "h\u00e9llo \u20ac"'


def test_decode_command_exits_1_on_a_bad_frame():
    decoded = subprocess.run([sys.executable, "-m", "rawws.tools.decode", "a1 00"], capture_output=True,
                             text=True, env=ENV, cwd=ROOT, timeout=20)
    assert decoded.returncode == 1
    assert "error: byte 0: RSV2 set but no extension negotiated (RFC 6455 §5.2)" in decoded.stdout


def test_decode_names_a_broken_rule_of_a_header_cut_before_its_masking_key(capsys):
    # A ping announcing 200 bytes: §5.5 is broken as soon as the length is read.
    assert run_decode(capsys, "89 fe 00 c8") == (1, [
        "frame 1: from byte 0, incomplete",
        "  FIN=1 RSV=000 op=0x9 PING MASK=1 len=200 (16-bit)",
        "  error: byte 1: control frame payload 200 > 125 (RFC 6455 §5.5)",
        "  error: incomplete: MASK=1, the header needs 8 bytes with its masking key (bytes 4-7), have 4",
    ])


def test_decode_names_a_broken_rule_of_a_frame_whose_payload_is_cut(capsys):
    code, lines = run_decode(capsys, "89 fe 00 c8 01 02 03 04 05")
    assert code == 1
    assert lines[2] == "  error: byte 1: control frame payload 200 > 125 (RFC 6455 §5.5)"
    assert lines[3].startswith("  error: incomplete: payload of 200 bytes")
