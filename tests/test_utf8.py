"""rawws.utf8 and text messages: UTF-8 that fails fast (RFC 6455 §5.6, §8.1; RFC 3629).

§8.1: "When an endpoint is to interpret a byte stream as UTF-8 but finds
that the byte stream is not, in fact, a valid UTF-8 stream, that endpoint
MUST _Fail the WebSocket Connection_" (close code 1007, §7.4.1).

Failing *fast* means: as soon as the bytes that make the text invalid
arrive, even in the middle of a fragmented message, not when it ends.
"""
from __future__ import annotations

import pytest

from rawws.errors import InvalidPayload
from rawws.frames import OP_CLOSE, OP_CONTINUATION, OP_TEXT, FrameParser, encode_frame
from rawws.protocol import Role, State, TextMessage, WebSocketConnection
from rawws.utf8 import Utf8Decoder

# One character of each UTF-8 length: 1, 2, 3 and 4 bytes (RFC 3629 §3).
MIXED = "a\u00e9\u20ac\U0001D11Ez"          # a é € 𝄞 z
MIXED_BYTES = MIXED.encode("utf-8")         # 61 C3A9 E282AC F09D849E 7A

# Invalid sequences, each with the index of the byte at which no valid text
# can follow any more: that is where a fail-fast decoder must stop.
INVALID = [
    pytest.param(b"\xed\xa0\x80", 1, id="surrogate U+D800 (ED A0 80)"),
    pytest.param(b"\xed\xbf\xbf", 1, id="surrogate U+DFFF (ED BF BF)"),
    pytest.param(b"\xc0\x80", 0, id="overlong NUL (C0 80)"),
    pytest.param(b"\xc1\xbf", 0, id="overlong (C1 BF)"),
    pytest.param(b"\xe0\x80\x80", 1, id="overlong NUL (E0 80 80)"),
    pytest.param(b"\xf0\x80\x80\x80", 1, id="overlong NUL (F0 80 80 80)"),
    pytest.param(b"\xf4\x90\x80\x80", 1, id="above U+10FFFF (F4 90 80 80)"),
    pytest.param(b"\xf5\x80\x80\x80", 0, id="lead byte F5"),
    pytest.param(b"\xff", 0, id="byte FF"),
    pytest.param(b"\x80", 0, id="lone continuation byte"),
    pytest.param(b"\xe2\x82\x41", 2, id="3-byte sequence cut by ASCII"),
]


def from_client(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    return encode_frame(opcode, payload, fin=fin, mask_key=b"\x37\xfa\x21\x3d")


def close_code_sent(server: WebSocketConnection) -> int | None:
    """The code of the Close frame the server has queued, or None if it has not."""
    parser = FrameParser(require_mask=False)
    parser.feed(server.data_to_send())
    while (frame := parser.next_frame()) is not None:
        if frame.opcode == OP_CLOSE:
            return int.from_bytes(frame.payload[:2], "big")
    return None


# ---- the decoder on its own ------------------------------------------------

def test_decoder_decodes_whole_text():
    assert Utf8Decoder().decode(MIXED_BYTES, final=True) == MIXED


@pytest.mark.parametrize("split", range(len(MIXED_BYTES) + 1))
def test_decoder_joins_a_character_split_at_any_point(split):
    decoder = Utf8Decoder()
    text = decoder.decode(MIXED_BYTES[:split]) + decoder.decode(MIXED_BYTES[split:], final=True)
    assert text == MIXED


def test_decoder_fed_one_byte_at_a_time():
    decoder = Utf8Decoder()
    text = "".join(decoder.decode(MIXED_BYTES[i:i + 1]) for i in range(len(MIXED_BYTES)))
    assert text + decoder.decode(b"", final=True) == MIXED


def test_decoder_holds_back_an_incomplete_character():
    decoder = Utf8Decoder()
    assert decoder.decode(b"\xe2\x82") == ""
    assert decoder.decode(b"\xac") == "\u20ac"


@pytest.mark.parametrize("sequence, bad_index", INVALID)
def test_decoder_fails_on_the_byte_that_makes_the_text_invalid(sequence, bad_index):
    decoder = Utf8Decoder()
    for byte in sequence[:bad_index]:
        decoder.decode(bytes([byte]))        # still a possible prefix of valid text
    with pytest.raises(InvalidPayload) as info:
        decoder.decode(sequence[bad_index:bad_index + 1])
    assert info.value.close_code == 1007


def test_surrogate_is_refused_at_its_second_byte():
    # CPython's own incremental decoder keeps ED A0 pending, waiting for a
    # third byte; no third byte can make it valid (RFC 3629 §3), so rawws
    # refuses it at once.
    decoder = Utf8Decoder()
    decoder.decode(b"\xed")
    with pytest.raises(InvalidPayload):
        decoder.decode(b"\xa0")


def test_ed_followed_by_9f_is_not_a_surrogate():
    # ED 9F BF is U+D7FF, the last code point before the surrogates.
    decoder = Utf8Decoder()
    assert decoder.decode(b"\xed\x9f") == ""
    assert decoder.decode(b"\xbf", final=True) == "\ud7ff"


def test_largest_code_point_is_accepted():
    assert Utf8Decoder().decode(b"\xf4\x8f\xbf\xbf", final=True) == "\U0010ffff"


def test_decoder_refuses_a_truncated_character_at_the_end():
    decoder = Utf8Decoder()
    assert decoder.decode(b"\xe2\x82") == ""
    with pytest.raises(InvalidPayload):
        decoder.decode(b"", final=True)


# ---- text messages on a connection -------------------------------------------

@pytest.mark.parametrize("split", range(len(MIXED_BYTES) + 1))
def test_valid_text_split_between_two_fragments_at_any_point(split):
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, MIXED_BYTES[:split], fin=False))
    server.receive_data(from_client(OP_CONTINUATION, MIXED_BYTES[split:]))
    assert server.events() == [TextMessage(MIXED)]
    assert server.state is State.OPEN


def test_valid_text_in_one_byte_fragments():
    frames = [from_client(OP_TEXT, MIXED_BYTES[:1], fin=False)]
    for i in range(1, len(MIXED_BYTES) - 1):
        frames.append(from_client(OP_CONTINUATION, MIXED_BYTES[i:i + 1], fin=False))
    frames.append(from_client(OP_CONTINUATION, MIXED_BYTES[-1:]))
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(b"".join(frames))
    assert server.events() == [TextMessage(MIXED)]


@pytest.mark.parametrize("sequence, bad_index", INVALID)
def test_invalid_single_frame_text_fails_with_1007(sequence, bad_index):
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"ok " + sequence))
    assert server.events() == []
    assert close_code_sent(server) == 1007
    assert server.state is State.CLOSED


@pytest.mark.parametrize("sequence, bad_index", INVALID)
def test_invalid_text_fails_with_1007_before_the_final_fragment(sequence, bad_index):
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"valid start ", fin=False))
    assert server.data_to_send() == b""
    server.receive_data(from_client(OP_CONTINUATION, b"then " + sequence + b" more", fin=False))
    # The final fragment has not been sent, and the Close is already queued.
    assert close_code_sent(server) == 1007
    assert server.should_close_transport
    server.receive_data(from_client(OP_CONTINUATION, b"the end"))
    assert server.events() == []


@pytest.mark.parametrize("sequence, bad_index", [p for p in INVALID if p.values[1] > 0])
def test_invalid_sequence_split_between_fragments_fails_when_its_bad_byte_arrives(
        sequence, bad_index):
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, sequence[:bad_index], fin=False))
    assert server.data_to_send() == b""      # still a possible start of a character
    server.receive_data(from_client(OP_CONTINUATION, sequence[bad_index:], fin=False))
    assert close_code_sent(server) == 1007


def test_surrogate_split_after_its_second_byte_fails_before_the_third_arrives():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"\xed", fin=False))
    assert server.data_to_send() == b""
    server.receive_data(from_client(OP_CONTINUATION, b"\xa0", fin=False))
    assert close_code_sent(server) == 1007


def test_truncated_character_at_the_end_of_a_fragmented_message_fails_with_1007():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"price: ", fin=False))
    server.receive_data(from_client(OP_CONTINUATION, b"\xe2\x82", fin=False))
    assert server.data_to_send() == b""      # the third byte may still come
    server.receive_data(from_client(OP_CONTINUATION, b""))
    assert server.events() == []
    assert close_code_sent(server) == 1007


def test_truncated_character_at_the_end_of_a_single_frame_fails_with_1007():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"price: \xe2\x82"))
    assert close_code_sent(server) == 1007


def test_binary_messages_are_not_checked_for_utf8():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(0x2, b"\xed\xa0\x80\xff", fin=False)
                        + from_client(OP_CONTINUATION, b"\xc0"))
    assert [event.data for event in server.events()] == [b"\xed\xa0\x80\xff\xc0"]


def test_utf8_state_starts_over_with_each_message():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"\xc3", fin=False) + from_client(OP_CONTINUATION, b"\xa9"))
    server.receive_data(from_client(OP_TEXT, b"\xe2", fin=False) + from_client(OP_CONTINUATION, b"\x82\xac"))
    assert server.events() == [TextMessage("\u00e9"), TextMessage("\u20ac")]
