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
from rawws.frames import OP_CLOSE, OP_CONTINUATION, OP_PING, OP_TEXT, FrameParser, encode_frame
from rawws.protocol import Ping, Role, State, TextMessage, WebSocketConnection
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
    """The code of the Close frame the server has queued, or None if it has not,
    once the events received so far are read, as a driver reads them."""
    list(server.events())
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
    assert list(server.events()) == [TextMessage(MIXED)]
    assert server.state is State.OPEN


def test_valid_text_in_one_byte_fragments():
    frames = [from_client(OP_TEXT, MIXED_BYTES[:1], fin=False)]
    for i in range(1, len(MIXED_BYTES) - 1):
        frames.append(from_client(OP_CONTINUATION, MIXED_BYTES[i:i + 1], fin=False))
    frames.append(from_client(OP_CONTINUATION, MIXED_BYTES[-1:]))
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(b"".join(frames))
    assert list(server.events()) == [TextMessage(MIXED)]


@pytest.mark.parametrize("sequence, bad_index", INVALID)
def test_invalid_single_frame_text_fails_with_1007(sequence, bad_index):
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"ok " + sequence))
    assert list(server.events()) == []
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
    assert list(server.events()) == []


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
    assert list(server.events()) == []
    assert close_code_sent(server) == 1007


def test_truncated_character_at_the_end_of_a_single_frame_fails_with_1007():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"price: \xe2\x82"))
    assert close_code_sent(server) == 1007


def test_binary_messages_are_not_checked_for_utf8():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(0x2, b"\xed\xa0\x80\xff", fin=False)
                        + from_client(OP_CONTINUATION, b"\xc0"))
    assert [event.data for event in list(server.events())] == [b"\xed\xa0\x80\xff\xc0"]


def test_utf8_state_starts_over_with_each_message():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"\xc3", fin=False) + from_client(OP_CONTINUATION, b"\xa9"))
    server.receive_data(from_client(OP_TEXT, b"\xe2", fin=False) + from_client(OP_CONTINUATION, b"\x82\xac"))
    assert list(server.events()) == [TextMessage("\u00e9"), TextMessage("\u20ac")]


# ---- one text frame arriving in pieces (Autobahn 6.4.3, 6.4.4) ----------------
#
# Failing fast inside one frame: a frame's payload may come in many TCP reads,
# and the text must be refused when the read that makes it invalid arrives,
# not when the whole frame (up to max_message_size) has been buffered.

def header_size(frame: bytes, payload: bytes) -> int:
    return len(frame) - len(payload)


def cut(data: bytes, *offsets: int) -> list[bytes]:
    """`data` cut at the given offsets, without empty pieces (b"" would mean EOF)."""
    bounds = [0, *offsets, len(data)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:]) if end > start]


# The two invalid sequences of Autobahn 6.4.3/6.4.4 and one surrogate.
BAD_IN_ONE_FRAME = [
    pytest.param(b"\xf4\x90\x80\x80", id="above U+10FFFF (F4 90 80 80)"),
    pytest.param(b"\xed\xa0\x80", id="surrogate U+D800 (ED A0 80)"),
]
PREFIX = "κόσμε valid prefix ".encode("utf-8") * 4     # 16-bit length with what follows
REST = b" the rest" * 200


@pytest.mark.parametrize("sequence", BAD_IN_ONE_FRAME)
def test_one_frame_in_three_pieces_fails_when_the_bad_piece_arrives(sequence):
    payload = PREFIX + sequence + REST
    frame = from_client(OP_TEXT, payload)
    start = header_size(frame, payload)
    first, bad, rest = cut(frame, start + len(PREFIX), start + len(PREFIX) + len(sequence) + 5)
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(first)
    assert server.data_to_send() == b""
    assert server.state is State.OPEN
    server.receive_data(bad)
    # The rest of the frame has not arrived, and the Close is already queued.
    assert close_code_sent(server) == 1007
    assert server.state is State.CLOSED
    assert server.should_close_transport
    server.receive_data(rest)
    assert list(server.events()) == []
    assert server.data_to_send() == b""


@pytest.mark.parametrize("sequence", BAD_IN_ONE_FRAME)
def test_header_only_then_bad_piece_fails_at_once(sequence):
    # The header arrives alone (nothing to check yet), then a piece that
    # starts with the invalid sequence.
    payload = sequence + REST
    frame = from_client(OP_TEXT, payload)
    start = header_size(frame, payload)
    header, bad, rest = cut(frame, start, start + len(sequence))
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(header)
    assert server.data_to_send() == b""
    server.receive_data(bad)
    assert close_code_sent(server) == 1007


@pytest.mark.parametrize("sequence, bad_index", [p for p in INVALID if p.values[1] > 0])
def test_one_frame_cut_inside_the_bad_sequence_fails_when_its_bad_byte_arrives(
        sequence, bad_index):
    payload = PREFIX + sequence + REST
    frame = from_client(OP_TEXT, payload)
    bad_at = header_size(frame, payload) + len(PREFIX) + bad_index
    first, second, rest = cut(frame, bad_at, bad_at + 1)
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(first)
    assert server.data_to_send() == b""      # still a possible start of a character
    server.receive_data(second)              # the byte that makes it invalid
    assert close_code_sent(server) == 1007
    server.receive_data(rest)
    assert list(server.events()) == []


def test_surrogate_in_one_frame_fails_before_its_third_byte_arrives():
    payload = b"x" * 200 + b"\xed\xa0\x80" + REST
    frame = from_client(OP_TEXT, payload)
    ed_at = header_size(frame, payload) + 200
    pieces = cut(frame, ed_at + 1, ed_at + 2)     # ... ED | A0 | 80 ...
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(pieces[0])
    assert server.data_to_send() == b""
    server.receive_data(pieces[1])
    assert close_code_sent(server) == 1007


def test_bad_tenth_byte_of_a_large_frame_fails_without_waiting_for_the_frame():
    # A frame announcing nearly 1 MiB whose 10th payload byte is invalid is
    # refused after its first piece, not after the whole MiB.
    payload = b"abcdefghi\xff" + b"z" * (1024 * 1024 - 100)
    frame = from_client(OP_TEXT, payload)
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(frame[:header_size(frame, payload) + 4096])
    assert close_code_sent(server) == 1007


def test_bad_bytes_of_a_frame_with_a_64_bit_length_fail_at_once():
    payload = b"a" * 70_000 + b"\xf4\x90\x80\x80" + REST
    frame = from_client(OP_TEXT, payload)
    start = header_size(frame, payload)
    assert start == 14
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(frame[:start + 65_536])
    assert server.data_to_send() == b""
    server.receive_data(frame[start + 65_536:start + 70_002])
    assert close_code_sent(server) == 1007


@pytest.mark.parametrize("split", range(len(MIXED_BYTES) + 1))
def test_valid_text_in_one_frame_cut_at_any_point(split):
    frame = from_client(OP_TEXT, MIXED_BYTES)
    start = header_size(frame, MIXED_BYTES)
    server = WebSocketConnection(Role.SERVER)
    for piece in cut(frame, start + split):
        server.receive_data(piece)
    assert list(server.events()) == [TextMessage(MIXED)]
    assert server.data_to_send() == b""
    assert server.state is State.OPEN


@pytest.mark.parametrize("first, second", [(1, 2), (2, 4), (3, 6), (4, 9), (7, 10)])
def test_valid_text_in_one_frame_cut_in_three_inside_characters(first, second):
    frame = from_client(OP_TEXT, MIXED_BYTES * 3)
    start = header_size(frame, MIXED_BYTES * 3)
    server = WebSocketConnection(Role.SERVER)
    for piece in cut(frame, start + first, start + second):
        server.receive_data(piece)
    assert list(server.events()) == [TextMessage(MIXED * 3)]
    assert server.state is State.OPEN


def test_valid_text_in_one_frame_fed_one_byte_at_a_time():
    text = MIXED * 40                        # 16-bit length: header, key and payload cut everywhere
    frame = from_client(OP_TEXT, text.encode("utf-8"))
    server = WebSocketConnection(Role.SERVER)
    events = []
    for index in range(len(frame)):
        server.receive_data(frame[index:index + 1])
        events += list(server.events())
    assert events == [TextMessage(text)]
    assert server.data_to_send() == b""


def test_valid_text_from_a_server_in_pieces_passes_a_client():
    # Unmasked frames, the client side: the same early check, no key.
    text = MIXED * 40
    frame = encode_frame(OP_TEXT, text.encode("utf-8"))
    client = WebSocketConnection(Role.CLIENT)
    for piece in cut(frame, 3, 50, 51, 52, 200):
        client.receive_data(piece)
    assert list(client.events()) == [TextMessage(text)]


def test_invalid_text_from_a_server_in_pieces_fails_the_client_at_once():
    payload = PREFIX + b"\xf4\x90\x80\x80" + REST
    frame = encode_frame(OP_TEXT, payload)
    start = header_size(frame, payload)
    client = WebSocketConnection(Role.CLIENT)
    client.receive_data(frame[:start + len(PREFIX) + 2])
    assert list(client.events()) == []
    assert client.state is State.CLOSED
    peer = FrameParser(require_mask=True)    # the client's Close is masked
    peer.feed(client.data_to_send())
    close = peer.next_frame()
    assert (close.opcode, close.payload[:2]) == (OP_CLOSE, b"\x03\xef")   # 1007


# ---- a fragmented message whose fragment arrives in pieces ----------------------

@pytest.mark.parametrize("sequence", BAD_IN_ONE_FRAME)
def test_bad_bytes_inside_the_second_fragments_partial_payload_fail_at_once(sequence):
    second_payload = b"then " + sequence + REST
    first = from_client(OP_TEXT, PREFIX, fin=False)
    second = from_client(OP_CONTINUATION, second_payload, fin=False)
    start = header_size(second, second_payload)
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(first + second[:start + 5])           # "then ": still valid
    assert server.data_to_send() == b""
    server.receive_data(second[start + 5:start + 5 + len(sequence)])
    assert close_code_sent(server) == 1007
    server.receive_data(second[start + 5 + len(sequence):] + from_client(OP_CONTINUATION, b"end"))
    assert list(server.events()) == []


def test_character_split_between_fragments_and_pieces_is_joined():
    # "€" is E2 82 AC: E2 ends the first fragment, 82 and AC come in two reads
    # of the second fragment, and a ping arrives between the fragments.
    first = from_client(OP_TEXT, b"price: \xe2", fin=False)
    ping = from_client(OP_PING, b"p")
    second = from_client(OP_CONTINUATION, b"\x82\xac and more")
    start = header_size(second, b"\x82\xac and more")
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(first + ping + second[:start + 1])
    server.receive_data(second[start + 1:start + 2])
    assert list(server.events()) == [Ping(b"p")]
    server.receive_data(second[start + 2:])
    assert list(server.events()) == [TextMessage("price: \u20ac and more")]
    assert server.state is State.OPEN


def test_truncated_character_at_the_end_of_a_frame_read_in_pieces_fails_with_1007():
    payload = b"price: \xe2\x82"
    frame = from_client(OP_TEXT, payload)
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(frame[:-1])
    assert server.data_to_send() == b""      # E2 alone may still become a character
    server.receive_data(frame[-1:])          # the frame ends inside the character
    assert close_code_sent(server) == 1007


def test_binary_frame_in_pieces_is_not_checked_for_utf8():
    payload = b"\xf4\x90\x80\x80" + bytes(range(256)) * 4
    frame = from_client(0x2, payload)
    server = WebSocketConnection(Role.SERVER)
    for piece in cut(frame, 9, 10, 300):
        server.receive_data(piece)
    assert [event.data for event in list(server.events())] == [payload]
    assert server.data_to_send() == b""


def test_new_text_frame_inside_a_fragmented_message_is_still_a_1002():
    # A text frame arriving in pieces while another message is open breaks
    # §5.4 whatever its bytes: its UTF-8 is not checked early, so the answer
    # is 1002 when it is whole, not 1007.
    payload = b"\xff" + REST
    frame = from_client(OP_TEXT, payload)
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"open", fin=False) + frame[:20])
    assert server.data_to_send() == b""
    server.receive_data(frame[20:])
    assert close_code_sent(server) == 1002


def test_fragments_read_in_pieces_count_toward_max_message_size():
    # 60 bytes, then 40 read early in pieces: the message fills its limit
    # exactly. The next message's continuation may then carry only 40 more.
    def feed_in_pieces(server, frame):
        for index in range(0, len(frame), 7):
            server.receive_data(frame[index:index + 7])

    server = WebSocketConnection(Role.SERVER, max_message_size=100)
    feed_in_pieces(server, from_client(OP_TEXT, b"a" * 60, fin=False))
    feed_in_pieces(server, from_client(OP_CONTINUATION, b"b" * 40))
    assert list(server.events()) == [TextMessage("a" * 60 + "b" * 40)]
    feed_in_pieces(server, from_client(OP_TEXT, b"c" * 60, fin=False))
    feed_in_pieces(server, from_client(OP_CONTINUATION, b"d" * 41))
    assert close_code_sent(server) == 1009
