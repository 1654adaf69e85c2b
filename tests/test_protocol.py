"""rawws.protocol: one connection's messages, fragments and control frames (RFC 6455 §5.4-5.6).

Each test feeds exact bytes into a `WebSocketConnection` and checks the
events it reports and the bytes it wants to send back. The closing
handshake has its own file, tests/test_close.py, and UTF-8 has
tests/test_utf8.py.
"""
from __future__ import annotations

import random
import tracemalloc

import pytest

from rawws.errors import MessageTooBig
from rawws.frames import (OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, Frame,
                          FrameParser, encode_frame, frame_header, mask)
from rawws.protocol import (TRANSITIONS, VECTORED_MIN, BinaryMessage, Cause, CloseReceived, Ping,
                            Pong, Role, State, TextMessage, WebSocketConnection)

from tests.wire import failed_with, sent_frames
from tests.masking_paths import masking_path  # noqa: F401 (a fixture)

# Every test here runs on each masking implementation: pure Python, and C when built.
pytestmark = pytest.mark.usefixtures("masking_path")

RFC_KEY = bytes([0x37, 0xFA, 0x21, 0x3D])


def from_client(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A frame as a client sends it: masked (§5.3), here with the §5.7 key."""
    return encode_frame(opcode, payload, fin=fin, mask_key=RFC_KEY)


def from_server(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A frame as a server sends it: unmasked."""
    return encode_frame(opcode, payload, fin=fin)


# ---- §5.7 examples through a connection ----------------------------------

def test_rfc_unmasked_text_hello_is_a_text_message_for_a_client():
    client = WebSocketConnection(Role.CLIENT)
    client.receive_data(bytes([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F]))
    assert list(client.events()) == [TextMessage("Hello")]


def test_rfc_masked_text_hello_is_a_text_message_for_a_server():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]))
    assert list(server.events()) == [TextMessage("Hello")]


def test_rfc_fragmented_hel_lo_is_one_text_message():
    client = WebSocketConnection(Role.CLIENT)
    client.receive_data(bytes([0x01, 0x03, 0x48, 0x65, 0x6C]))
    assert list(client.events()) == []
    client.receive_data(bytes([0x80, 0x02, 0x6C, 0x6F]))
    assert list(client.events()) == [TextMessage("Hello")]


def test_rfc_unmasked_ping_is_answered_with_a_masked_pong_of_the_same_payload():
    client = WebSocketConnection(Role.CLIENT)
    client.receive_data(bytes([0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F]))
    assert list(client.events()) == [Ping(b"Hello")]
    assert sent_frames(client) == [Frame(OP_PONG, b"Hello")]


def test_rfc_masked_pong_is_reported_to_a_server():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(bytes([0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]))
    assert list(server.events()) == [Pong(b"Hello")]


def test_rfc_256_byte_binary_is_a_binary_message():
    client = WebSocketConnection(Role.CLIENT)
    client.receive_data(bytes([0x82, 0x7E, 0x01, 0x00]) + bytes(range(256)))
    assert list(client.events()) == [BinaryMessage(bytes(range(256)))]


def test_rfc_64k_binary_is_a_binary_message():
    client = WebSocketConnection(Role.CLIENT)
    client.receive_data(bytes([0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]) + bytes(65536))
    assert list(client.events()) == [BinaryMessage(bytes(65536))]


# ---- §5.1 who masks ------------------------------------------------------

def test_server_refuses_an_unmasked_client_frame_with_1002():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_server(OP_TEXT, b"Hello"))
    assert list(server.events()) == []
    assert failed_with(server) == 1002


def test_client_refuses_a_masked_server_frame_with_1002():
    client = WebSocketConnection(Role.CLIENT)
    client.receive_data(from_client(OP_TEXT, b"Hello"))
    assert list(client.events()) == []
    assert failed_with(client) == 1002


# ---- §5.2 header rules reach the peer as a Close ---------------------------

@pytest.mark.parametrize("first_byte", [0xC1, 0xA1, 0x91])
def test_rsv_bit_set_fails_the_connection_with_1002(first_byte):
    client = WebSocketConnection(Role.CLIENT)
    client.receive_data(bytes([first_byte, 0x00]))
    assert failed_with(client) == 1002


@pytest.mark.parametrize("opcode", [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcode_fails_the_connection_with_1002(opcode):
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(opcode, b""))
    assert failed_with(server) == 1002


def test_fragmented_control_frame_fails_the_connection_with_1002():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_PING, b"ping", fin=False))
    assert list(server.events()) == []
    assert failed_with(server) == 1002


def test_control_frame_with_126_byte_payload_fails_the_connection_with_1002():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_PING, bytes(126)))
    assert list(server.events()) == []
    assert failed_with(server) == 1002


def test_64_bit_length_with_top_bit_set_fails_the_connection_with_1002():
    client = WebSocketConnection(Role.CLIENT)
    client.receive_data(bytes([0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0x01]))
    assert failed_with(client) == 1002


def test_nothing_is_read_after_the_connection_failed():
    client = WebSocketConnection(Role.CLIENT)
    client.receive_data(bytes([0x83, 0x00]) + from_server(OP_TEXT, b"after"))
    assert failed_with(client) == 1002
    client.receive_data(from_server(OP_TEXT, b"later"))
    assert list(client.events()) == []
    assert client.data_to_send() == b""


# ---- §5.4 fragmentation --------------------------------------------------

def test_fragmented_text_is_reassembled():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"frag", fin=False)
                        + from_client(OP_CONTINUATION, b"men", fin=False)
                        + from_client(OP_CONTINUATION, b"ted"))
    assert list(server.events()) == [TextMessage("fragmented")]


def test_fragmented_binary_is_reassembled():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_BINARY, b"\x00\x01", fin=False)
                        + from_client(OP_CONTINUATION, b"", fin=False)
                        + from_client(OP_CONTINUATION, b"\x02\xff"))
    assert list(server.events()) == [BinaryMessage(b"\x00\x01\x02\xff")]


def test_no_message_is_reported_before_its_final_fragment():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"Hel", fin=False))
    assert list(server.events()) == []
    server.receive_data(from_client(OP_CONTINUATION, b"lo"))
    assert list(server.events()) == [TextMessage("Hello")]


def test_ping_between_fragments_is_answered_at_once_and_the_message_completes():
    # §5.4: control frames MAY be injected in the middle of a fragmented message;
    # §5.5.2: the Pong carries the Ping's payload, sent "as soon as is practical".
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"Hel", fin=False) + from_client(OP_PING, b"still there?"))
    assert list(server.events()) == [Ping(b"still there?")]
    assert server.data_to_send() == b"\x8a\x0cstill there?"
    server.receive_data(from_client(OP_CONTINUATION, b"lo"))
    assert list(server.events()) == [TextMessage("Hello")]
    assert server.state is State.OPEN


def test_continuation_with_no_message_in_progress_fails_with_1002():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_CONTINUATION, b"lo"))
    assert list(server.events()) == []
    assert failed_with(server) == 1002


def test_continuation_after_a_completed_message_fails_with_1002():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"Hel", fin=False) + from_client(OP_CONTINUATION, b"lo")
                        + from_client(OP_CONTINUATION, b"!"))
    events = server.events()
    assert next(events) == TextMessage("Hello")
    assert server.state is State.OPEN   # the failure waits for the message before it (Autobahn 5.15)
    assert list(events) == []
    assert failed_with(server) == 1002


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
@pytest.mark.parametrize("fin", [True, False])
def test_new_data_frame_while_a_fragmented_message_is_open_fails_with_1002(opcode, fin):
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"Hel", fin=False))
    server.receive_data(from_client(opcode, b"interloper", fin=fin))
    assert list(server.events()) == []
    assert failed_with(server) == 1002


def test_unsolicited_pong_is_reported_and_not_answered():
    # §5.5.3: "A response to an unsolicited Pong frame is not expected."
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_PONG, b"heartbeat"))
    assert list(server.events()) == [Pong(b"heartbeat")]
    assert server.data_to_send() == b""


def test_empty_messages_are_delivered():
    client = WebSocketConnection(Role.CLIENT)
    client.receive_data(b"\x81\x00\x82\x00\x01\x00\x80\x00")
    assert list(client.events()) == [TextMessage(""), BinaryMessage(b""), TextMessage("")]


# ---- §10.4 limits --------------------------------------------------------

def test_frame_over_max_frame_size_fails_with_1009_after_only_its_header():
    server = WebSocketConnection(Role.SERVER, max_frame_size=1000)
    # 82 FE 03 E9: masked binary, 16-bit length 1001. No key, no payload fed.
    server.receive_data(bytes([0x82, 0xFE, 0x03, 0xE9]))
    assert list(server.events()) == []
    assert isinstance(server.failure, MessageTooBig)
    assert failed_with(server) == 1009


def test_frame_over_max_frame_size_with_64_bit_length_fails_after_its_header():
    client = WebSocketConnection(Role.CLIENT, max_frame_size=1024)
    client.receive_data(bytes([0x82, 0x7F, 0, 0, 0, 0x01, 0, 0, 0, 0]))  # 4 GiB announced
    assert failed_with(client) == 1009


def test_frame_of_exactly_max_frame_size_is_accepted():
    client = WebSocketConnection(Role.CLIENT, max_frame_size=1000)
    client.receive_data(bytes([0x82, 0x7E, 0x03, 0xE8]) + bytes(1000))
    assert list(client.events()) == [BinaryMessage(bytes(1000))]


def test_fragment_that_would_exceed_max_message_size_fails_with_1009_from_its_header():
    server = WebSocketConnection(Role.SERVER, max_message_size=10)
    server.receive_data(from_client(OP_BINARY, b"123456", fin=False))
    assert server.data_to_send() == b""
    # 80 85: a masked final continuation of 5 bytes; 6 + 5 > 10. Header only.
    server.receive_data(bytes([0x80, 0x85]))
    assert failed_with(server) == 1009


def test_fragments_that_fill_max_message_size_exactly_are_accepted():
    server = WebSocketConnection(Role.SERVER, max_message_size=10)
    server.receive_data(from_client(OP_BINARY, b"123456", fin=False)
                        + from_client(OP_PING, b"")
                        + from_client(OP_CONTINUATION, b"7890"))
    assert list(server.events()) == [Ping(b""), BinaryMessage(b"1234567890")]


def test_message_size_limit_starts_over_with_each_message():
    server = WebSocketConnection(Role.SERVER, max_message_size=10)
    for _ in range(3):
        server.receive_data(from_client(OP_TEXT, b"12345", fin=False)
                            + from_client(OP_CONTINUATION, b"67890"))
    assert list(server.events()) == [TextMessage("1234567890")] * 3


def test_single_frame_message_over_max_message_size_fails_with_1009():
    # A frame limit above the message limit must not let a one-frame message through.
    server = WebSocketConnection(Role.SERVER, max_message_size=10, max_frame_size=1000)
    server.receive_data(bytes([0x82, 0x8B]))  # masked binary, 11 bytes announced
    assert failed_with(server) == 1009


def test_first_fragment_over_max_message_size_fails_with_1009_from_its_header():
    server = WebSocketConnection(Role.SERVER, max_message_size=10, max_frame_size=1000)
    server.receive_data(bytes([0x02, 0x8B]))  # masked, not final, 11 bytes announced
    assert failed_with(server) == 1009


def test_max_frame_size_defaults_to_max_message_size():
    client = WebSocketConnection(Role.CLIENT, max_message_size=100)
    client.receive_data(bytes([0x82, 0x65]))  # 101 bytes announced
    assert failed_with(client) == 1009


# §10.4 names "a long stream of small frames that are a part of a fragmented
# message" as a way to exhaust a peer's memory. Small pieces of a message are
# joined 64 at a time and empty ones dropped, so its frames add little to
# memory but their payload, and a message may take at most max_fragments
# frames: one per 64 bytes of max_message_size, and at least 64.

EMPTY_CONTINUATION = from_client(OP_CONTINUATION, b"", fin=False)


def test_max_fragments_is_one_frame_per_64_bytes_of_the_message_limit_and_at_least_64():
    assert WebSocketConnection(Role.SERVER).max_fragments == 16384          # 1 MiB
    assert WebSocketConnection(Role.SERVER, max_message_size=128 * 1024).max_fragments == 2048
    assert WebSocketConnection(Role.SERVER, max_message_size=10).max_fragments == 64
    assert WebSocketConnection(Role.SERVER, max_fragments=3).max_fragments == 3


def test_a_message_of_exactly_max_fragments_frames_is_delivered():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_BINARY, b"", fin=False) + EMPTY_CONTINUATION * 16382
                        + from_client(OP_CONTINUATION, b"end"))
    assert list(server.events()) == [BinaryMessage(b"end")]
    assert server.state is State.OPEN and server.data_to_send() == b""


def test_100k_empty_continuations_fail_with_1009_at_frame_max_fragments_plus_one():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"", fin=False) + EMPTY_CONTINUATION * 16383)
    assert server.state is State.OPEN and server.data_to_send() == b""
    server.receive_data(EMPTY_CONTINUATION)                  # frame 16385
    assert failed_with(server) == 1009
    server.receive_data(EMPTY_CONTINUATION * (100_000 - 16384) + from_client(OP_CONTINUATION, b"x"))
    assert list(server.events()) == [] and server.data_to_send() == b""


def test_the_fragment_limit_starts_over_with_each_message():
    server = WebSocketConnection(Role.SERVER, max_message_size=10)          # 64 frames
    for _ in range(3):
        server.receive_data(from_client(OP_TEXT, b"a", fin=False) + EMPTY_CONTINUATION * 62
                            + from_client(OP_CONTINUATION, b"b"))
    assert list(server.events()) == [TextMessage("ab")] * 3
    server.receive_data(from_client(OP_TEXT, b"a", fin=False) + EMPTY_CONTINUATION * 63
                        + from_client(OP_CONTINUATION, b"b"))
    assert failed_with(server) == 1009


def memory_while_feeding(connection: WebSocketConnection, chunks: list[bytes]) -> int:
    """Bytes newly allocated and still held after feeding `chunks` one by one."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for chunk in chunks:
            connection.receive_data(chunk)
            for _ in connection.events():
                pass
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_100k_empty_continuations_hold_no_memory():
    # With the fragment cap lifted, the frames themselves cost nothing (a
    # list entry each would be 800 KB here).
    server = WebSocketConnection(Role.SERVER, max_fragments=200_000)
    chunks = [from_client(OP_BINARY, b"start", fin=False)] + [EMPTY_CONTINUATION * 1000] * 100
    assert memory_while_feeding(server, chunks) < 16 * 1024
    server.receive_data(from_client(OP_CONTINUATION, b"end"))
    assert list(server.events()) == [BinaryMessage(b"startend")]


def test_tiny_text_fragments_hold_about_the_message_size():
    # 3-byte fragments of "€": one str object each would be ~3.5 MB for
    # this 128 KiB message; joined 64 at a time, about its size.
    size = 128 * 1024 // 3 * 3
    server = WebSocketConnection(Role.SERVER, max_message_size=128 * 1024,
                                 max_fragments=size // 3)
    euro = "\N{EURO SIGN}".encode("utf-8")
    continuation = from_client(OP_CONTINUATION, euro, fin=False)
    frames = [from_client(OP_TEXT, euro, fin=False)] + [continuation] * (size // 3 - 2)
    chunks = [b"".join(frames[start:start + 1000]) for start in range(0, len(frames), 1000)]
    assert memory_while_feeding(server, chunks) < 2 * size
    server.receive_data(from_client(OP_CONTINUATION, euro))
    assert list(server.events()) == [TextMessage("\N{EURO SIGN}" * (size // 3))]


def test_a_text_frame_trickled_byte_by_byte_holds_about_its_size():
    # Each read is checked as it arrives (§8.1) and kept without an object per read.
    size = 30_000
    frame = from_client(OP_TEXT, "\N{EURO SIGN}".encode("utf-8") * (size // 3))
    server = WebSocketConnection(Role.SERVER)
    assert memory_while_feeding(server, [frame[i:i + 1] for i in range(len(frame) - 1)]) < 2 * size
    assert list(server.events()) == []
    server.receive_data(frame[-1:])
    assert list(server.events()) == [TextMessage("\N{EURO SIGN}" * (size // 3))]


# ---- sending -------------------------------------------------------------

def test_server_sends_text_unmasked_as_in_the_rfc_example():
    server = WebSocketConnection(Role.SERVER)
    server.send_text("Hello")
    assert server.data_to_send() == bytes([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])


def test_server_sends_256_bytes_of_binary_with_a_16_bit_length():
    server = WebSocketConnection(Role.SERVER)
    server.send_binary(bytes(range(256)))
    assert server.data_to_send() == bytes([0x82, 0x7E, 0x01, 0x00]) + bytes(range(256))


def test_server_sends_ping_unmasked_as_in_the_rfc_example():
    server = WebSocketConnection(Role.SERVER)
    server.send_ping(b"Hello")
    assert server.data_to_send() == bytes([0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])


def test_client_sends_text_masked():
    client = WebSocketConnection(Role.CLIENT)
    client.send_text("Hello")
    wire = client.data_to_send()
    assert wire[:2] == bytes([0x81, 0x85])  # FIN+text, MASK bit + length 5
    assert len(wire) == 2 + 4 + 5
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(wire)
    assert list(server.events()) == [TextMessage("Hello")]


def test_client_sends_binary_masked():
    client = WebSocketConnection(Role.CLIENT)
    client.send_binary(bytes(range(256)))
    assert sent_frames(client) == [Frame(OP_BINARY, bytes(range(256)))]


def test_client_sends_ping_and_pong_masked():
    client = WebSocketConnection(Role.CLIENT)
    client.send_ping(b"Hello")
    client.send_pong(b"Hello")
    assert sent_frames(client) == [Frame(OP_PING, b"Hello"), Frame(OP_PONG, b"Hello")]


def test_client_uses_a_new_masking_key_for_each_frame():
    # §5.3: the key MUST be unpredictable and fresh for each frame.
    client = WebSocketConnection(Role.CLIENT)
    client.send_text("Hello")
    first_key = client.data_to_send()[2:6]
    client.send_text("Hello")
    second_key = client.data_to_send()[2:6]
    assert first_key != second_key


def test_text_is_sent_as_utf8():
    server = WebSocketConnection(Role.SERVER)
    server.send_text("é€")
    assert server.data_to_send() == b"\x81\x05\xc3\xa9\xe2\x82\xac"


def test_send_fragment_streams_a_text_message_as_in_the_rfc_example():
    server = WebSocketConnection(Role.SERVER)
    server.send_fragment("Hel", fin=False)
    server.send_fragment("lo", fin=True)
    assert server.data_to_send() == bytes([0x01, 0x03, 0x48, 0x65, 0x6C, 0x80, 0x02, 0x6C, 0x6F])


def test_send_fragment_streams_a_binary_message():
    server = WebSocketConnection(Role.SERVER)
    server.send_fragment(b"\x01", fin=False)
    server.send_fragment(b"\x02", fin=False)
    server.send_fragment(b"\x03", fin=True)
    assert server.data_to_send() == b"\x02\x01\x01" + b"\x00\x01\x02" + b"\x80\x01\x03"


def test_client_fragments_are_masked_and_reassemble():
    client = WebSocketConnection(Role.CLIENT)
    client.send_fragment("Hel", fin=False)
    client.send_ping(b"between")
    client.send_fragment("lo", fin=True)
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(client.data_to_send())
    assert list(server.events()) == [Ping(b"between"), TextMessage("Hello")]


def test_a_new_message_may_follow_a_finished_stream():
    server = WebSocketConnection(Role.SERVER)
    server.send_fragment(b"a", fin=True)
    server.send_text("b")
    assert server.data_to_send() == b"\x82\x01a\x81\x01b"


@pytest.mark.parametrize("send", [
    lambda ws: ws.send_text("whole"),
    lambda ws: ws.send_binary(b"whole"),
    lambda ws: ws.send_frame_bytes(b"\x81\x05whole"),
], ids=["send_text", "send_binary", "send_frame_bytes"])
def test_whole_message_while_streaming_one_is_refused(send):
    # §5.4: fragments of one message are not interleaved with another message.
    server = WebSocketConnection(Role.SERVER)
    server.send_fragment("Hel", fin=False)
    with pytest.raises(ValueError):
        send(server)
    server.send_fragment("lo", fin=True)
    assert server.data_to_send() == b"\x01\x03Hel\x80\x02lo"


def test_ping_while_streaming_is_allowed():
    server = WebSocketConnection(Role.SERVER)
    server.send_fragment("Hel", fin=False)
    server.send_ping(b"")
    server.send_fragment("lo", fin=True)
    assert server.data_to_send() == b"\x01\x03Hel\x89\x00\x80\x02lo"


def test_streamed_pieces_must_keep_the_message_type():
    server = WebSocketConnection(Role.SERVER)
    server.send_fragment("text", fin=False)
    with pytest.raises(ValueError):
        server.send_fragment(b"bytes", fin=True)


def test_send_frame_bytes_passes_bytes_through_unchanged():
    frame = encode_frame(OP_TEXT, b"broadcast")
    server = WebSocketConnection(Role.SERVER)
    server.send_frame_bytes(frame)
    server.send_frame_bytes(frame)
    assert server.data_to_send() == frame + frame


def test_client_may_not_send_preencoded_frames():
    client = WebSocketConnection(Role.CLIENT)
    with pytest.raises(ValueError):
        client.send_frame_bytes(encode_frame(OP_TEXT, b"x"))


@pytest.mark.parametrize("method", ["send_ping", "send_pong"])
def test_control_payload_over_125_bytes_is_not_sent(method):
    server = WebSocketConnection(Role.SERVER)
    with pytest.raises(ValueError):
        getattr(server, method)(bytes(126))
    getattr(server, method)(bytes(125))
    assert len(server.data_to_send()) == 2 + 125


def test_data_to_send_is_cleared_when_read():
    server = WebSocketConnection(Role.SERVER)
    server.send_text("a")
    assert server.data_to_send() == b"\x81\x01a"
    assert server.data_to_send() == b""


def test_events_are_cleared_when_read():
    client = WebSocketConnection(Role.CLIENT)
    client.receive_data(b"\x81\x01a")
    assert list(client.events()) == [TextMessage("a")]
    assert list(client.events()) == []


# ---- the whole parser, one byte at a time ---------------------------------

def every_kind_of_frame_from_a_client() -> bytes:
    return b"".join([
        from_client(OP_TEXT, b"Hello"),                                   # 7-bit length
        from_client(OP_BINARY, bytes(range(200))),                        # 16-bit length
        from_client(OP_BINARY, bytes(i % 256 for i in range(70000))),     # 64-bit length
        from_client(OP_TEXT, b"caf\xc3", fin=False),                      # é split between...
        from_client(OP_PING, b"mid-message"),                             # ...with a ping between
        from_client(OP_CONTINUATION, b"\xa9 ", fin=False),                # ...fragments
        from_client(OP_CONTINUATION, b"\xe2\x82\xac"),
        from_client(OP_BINARY, b"", fin=False),
        from_client(OP_CONTINUATION, b"\x00"),
        from_client(OP_PONG, b"unsolicited"),
        from_client(OP_TEXT, b""),
        from_client(OP_CLOSE, b"\x03\xe8done"),
        from_client(OP_TEXT, b"after close: ignored"),
    ])


def test_stream_of_every_kind_of_frame_gives_the_expected_events():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(every_kind_of_frame_from_a_client())
    events = server.events()
    before_close = [next(events) for _ in range(7)]
    assert server.data_to_send() == b"\x8a\x0bmid-message"   # the Close waits for the app
    assert before_close + list(events) == [
        TextMessage("Hello"),
        BinaryMessage(bytes(range(200))),
        BinaryMessage(bytes(i % 256 for i in range(70000))),
        Ping(b"mid-message"),
        TextMessage("café €"),
        BinaryMessage(b"\x00"),
        Pong(b"unsolicited"),
        TextMessage(""),
        CloseReceived(1000, "done"),
    ]
    assert server.data_to_send() == b"\x88\x02\x03\xe8"


def test_stream_fed_one_byte_at_a_time_gives_the_same_events_as_fed_at_once():
    stream = every_kind_of_frame_from_a_client()
    at_once = WebSocketConnection(Role.SERVER)
    at_once.receive_data(stream)

    at_once_events = list(at_once.events())

    byte_by_byte = WebSocketConnection(Role.SERVER)
    events = []
    for i in range(len(stream)):
        byte_by_byte.receive_data(stream[i:i + 1])
        events.extend(byte_by_byte.events())

    assert events == at_once_events
    assert byte_by_byte.data_to_send() == at_once.data_to_send()
    assert byte_by_byte.state is at_once.state is State.CLOSED


def test_client_fed_one_byte_at_a_time_gives_the_same_events_as_fed_at_once():
    stream = b"".join([
        from_server(OP_TEXT, b"Hel", fin=False), from_server(OP_PING, b"p"),
        from_server(OP_CONTINUATION, b"lo"), from_server(OP_BINARY, bytes(300)),
        from_server(OP_BINARY, bytes(65536)), from_server(OP_CLOSE, b"\x0f\xa0"),
    ])
    at_once = WebSocketConnection(Role.CLIENT)
    at_once.receive_data(stream)
    at_once_events = list(at_once.events())
    byte_by_byte = WebSocketConnection(Role.CLIENT)
    events = []
    for i in range(len(stream)):
        byte_by_byte.receive_data(stream[i:i + 1])
        events.extend(byte_by_byte.events())
    assert events == at_once_events == [
        Ping(b"p"), TextMessage("Hello"), BinaryMessage(bytes(300)), BinaryMessage(bytes(65536)),
        CloseReceived(4000, ""),
    ]
    # The client's answers are masked with fresh keys, so compare them decoded.
    assert sent_frames(byte_by_byte) == sent_frames(at_once) == [
        Frame(OP_PONG, b"p"), Frame(OP_CLOSE, b"\x0f\xa0")]


# ---- FrameParser.pending: a frame still arriving -----------------------------
#
# The connection checks a text frame's UTF-8 while it arrives (§8.1, tests in
# tests/test_utf8.py); it reads the part received through `parser.pending`.

def test_pending_appears_once_the_header_and_masking_key_have_arrived():
    payload = bytes(range(200))                       # 16-bit length: 2 + 2 + 4 header bytes
    frame = from_client(OP_BINARY, payload, fin=False)
    parser = FrameParser(require_mask=True)
    for index in range(8):
        assert parser.pending is None
        parser.feed(frame[index:index + 1])
        assert parser.next_frame() is None
    pending = parser.pending
    assert (pending.opcode, pending.fin, pending.length, pending.mask_key) == (
        OP_BINARY, False, 200, RFC_KEY)
    assert pending.consumed == 0
    parser.feed(frame[8:50])
    assert parser.next_frame() is None
    assert parser.pending is pending                  # the header is not parsed again
    parser.feed(frame[50:])
    assert parser.next_frame() == Frame(OP_BINARY, payload, fin=False)
    assert parser.pending is None


@pytest.mark.parametrize("split", range(0, 13))
def test_pending_read_unmasks_with_the_key_turned_to_its_offset(split):
    # Byte i of a payload is masked with key[i % 4] (§5.3): a read that starts
    # at any offset must use the key from that position.
    payload = b"Hello, world! 0123456789"
    frame = from_client(OP_TEXT, payload)
    parser = FrameParser(require_mask=True)
    parser.feed(frame[:6 + split])
    assert parser.next_frame() is None
    first = parser.pending.read()
    assert first == payload[:split]
    parser.feed(frame[6 + split:6 + split + 5])
    assert parser.next_frame() is None
    second = parser.pending.read()
    assert second == payload[split:split + 5]
    assert parser.pending.read() == b""               # nothing new
    parser.feed(frame[6 + split + 5:])
    # The frame carries only what was not read.
    assert parser.next_frame() == Frame(OP_TEXT, payload[split + 5:])
    assert parser.buffered == 0


def test_pending_read_of_an_unmasked_frame():
    payload = bytes(range(256)) * 300                 # 64-bit length
    frame = from_server(OP_BINARY, payload)
    parser = FrameParser(require_mask=False, max_frame_size=1 << 20)
    parts = []
    for start in range(0, len(frame), 7_001):
        parser.feed(frame[start:start + 7_001])
        frame_or_none = parser.next_frame()
        if frame_or_none is None:
            parts.append(parser.pending.read())
    parts.append(frame_or_none.payload)
    assert b"".join(parts) == payload


@pytest.mark.parametrize("size", [20_000, 300_000])   # in the parser's buffer; streamed
def test_a_frame_read_in_random_pieces_is_unmasked_exactly_once(size):
    rng = random.Random(6455)
    payload = rng.randbytes(size)
    frame = encode_frame(OP_BINARY, payload, mask_key=b"\x01\x80\xfe\x7f")
    parser = FrameParser(require_mask=True)
    parts = []
    position = 0
    while position < len(frame):
        step = rng.choice((1, 2, 3, 5, 100, 4096, 50_000))
        parser.feed(frame[position:position + step])
        position += step
        frame_or_none = parser.next_frame()
        if frame_or_none is not None:
            parts.append(frame_or_none.payload)
        elif parser.pending is not None and rng.random() < 0.7:
            parts.append(parser.pending.read())
    assert b"".join(parts) == payload


def test_whole_text_frames_in_one_feed_are_not_read_early():
    # The fast path: frames that arrive whole are parsed as before.
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"one") + from_client(OP_TEXT, b"two"))
    assert server._parser.pending is None
    assert list(server.events()) == [TextMessage("one"), TextMessage("two")]


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 64, 1000])
def test_every_kind_of_frame_in_pieces_of_any_size_gives_the_same_events(piece):
    stream = every_kind_of_frame_from_a_client()
    at_once = WebSocketConnection(Role.SERVER)
    at_once.receive_data(stream)
    in_pieces = WebSocketConnection(Role.SERVER)
    for start in range(0, len(stream), piece):
        in_pieces.receive_data(stream[start:start + piece])
    assert list(in_pieces.events()) == list(at_once.events())
    assert in_pieces.data_to_send() == at_once.data_to_send()


# ---- a bad frame after good messages in one read (Autobahn 3.2, 4.1.3, 5.15) ----

def test_messages_before_a_bad_frame_in_the_same_read_are_delivered_first():
    server = WebSocketConnection(Role.SERVER)
    bad = bytearray(from_client(OP_TEXT, b"x"))
    bad[0] |= 0x20   # RSV2, no extension: §5.2 fails the connection
    server.receive_data(from_client(OP_TEXT, b"Hello") + bytes(bad))
    events = server.events()
    assert next(events) == TextMessage("Hello")
    assert server.state is State.OPEN and server.data_to_send() == b""
    assert list(events) == [] and failed_with(server) == 1002


def test_a_reply_to_those_messages_goes_out_before_the_close():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"Hello") + from_client(0x3, b""))  # reserved opcode
    for event in server.events():
        server.send_text(event.data)
    frames = sent_frames(server)
    assert [(f.opcode, f.payload[:2]) for f in frames] == [(OP_TEXT, b"He"), (OP_CLOSE, b"\x03\xea")]
    assert server.state is State.CLOSED and server.should_close_transport


def test_a_bad_frame_with_no_message_before_it_fails_at_once():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(0x3, b""))
    assert failed_with(server) == 1002


def test_a_reply_to_a_message_before_the_peers_close_goes_out_before_our_close():
    # Autobahn 7.1.6: a message, then a Close, in one read.
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"Hello") + from_client(OP_CLOSE, b"\x03\xe8"))
    events = []
    for event in server.events():
        events.append(event)
        if isinstance(event, TextMessage):
            server.send_text(event.data)   # the app's reply, before the Close is even parsed
    assert events == [TextMessage("Hello"), CloseReceived(1000, "")]
    assert [f.opcode for f in sent_frames(server)] == [OP_TEXT, OP_CLOSE]
    assert server.state is State.CLOSED and server.should_close_transport


def test_a_close_alone_is_answered_at_once():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_CLOSE, b"\x03\xe8"))
    assert list(server.events()) == [CloseReceived(1000, "")]
    assert server.state is State.CLOSED
    assert [f.opcode for f in sent_frames(server)] == [OP_CLOSE]


def test_nothing_after_a_deferred_failure_is_read():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(from_client(OP_TEXT, b"a") + from_client(0xB, b""))
    server.receive_data(from_client(OP_TEXT, b"after"))
    assert list(server.events()) == [TextMessage("a")]
    assert failed_with(server) == 1002


# ---- buffers_to_send: a big payload apart from its header ------------------------
#
# The server writes these pieces with one sendmsg (rawws.net.sendqueue): a payload
# of VECTORED_MIN bytes or more is a piece of its own after its frame's header,
# for a server the very object the application gave; small frames are joined.

def test_server_sends_a_64k_binary_message_as_the_rfc_header_then_the_payload_itself():
    payload = bytes(i % 251 for i in range(65536))
    server = WebSocketConnection(Role.SERVER)
    server.send_binary(payload)
    pieces = server.buffers_to_send()
    assert pieces == [bytes([0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]), payload]
    assert pieces[1] is payload                       # not copied


@pytest.mark.parametrize("length, pieces", [
    (VECTORED_MIN - 1, [bytes([0x82, 0x7E, 0x3F, 0xFF]) + bytes(VECTORED_MIN - 1)]),
    (VECTORED_MIN, [bytes([0x82, 0x7E, 0x40, 0x00]), bytes(VECTORED_MIN)]),
])
def test_a_payload_is_a_piece_of_its_own_from_vectored_min_bytes(length, pieces):
    server = WebSocketConnection(Role.SERVER)
    server.send_binary(bytes(length))
    assert server.buffers_to_send() == pieces


def test_small_frames_queued_together_come_as_one_piece():
    server = WebSocketConnection(Role.SERVER)
    server.send_text("Hello")
    server.send_ping(b"Hello")
    server.send_binary(bytes(range(256)))
    assert server.buffers_to_send() == [
        bytes([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
        + bytes([0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
        + bytes([0x82, 0x7E, 0x01, 0x00]) + bytes(range(256))]


def test_a_preencoded_frame_alone_is_passed_on_as_it_is():
    # A broadcast's frame, encoded once for every recipient.
    frame = encode_frame(OP_TEXT, b"x" * 70_000)
    server = WebSocketConnection(Role.SERVER)
    server.send_frame_bytes(frame)
    pieces = server.buffers_to_send()
    assert pieces == [frame] and pieces[0] is frame


def queue_every_kind_of_output(connection: WebSocketConnection) -> None:
    """Small and big messages, fragments, a ping, a pong answered and a close."""
    connection.send_text("Hello")
    connection.send_binary(bytes(i % 256 for i in range(70_000)))
    connection.send_ping(b"ping")
    connection.send_text("\N{EURO SIGN}" * 20_000)
    connection.send_fragment(b"a" * 20_000, fin=False)
    connection.send_fragment(b"b", fin=False)
    connection.send_fragment(b"c" * VECTORED_MIN, fin=True)
    connection.receive_data(from_client(OP_PING, b"are you there?"))
    assert list(connection.events()) == [Ping(b"are you there?")]
    connection.send_binary(b"")
    connection.close(1000, "done")


def test_buffers_to_send_joined_are_what_data_to_send_returns():
    vectored = WebSocketConnection(Role.SERVER)
    joined = WebSocketConnection(Role.SERVER)
    queue_every_kind_of_output(vectored)
    queue_every_kind_of_output(joined)
    pieces = vectored.buffers_to_send()
    assert len(pieces) > 1
    assert b"".join(pieces) == joined.data_to_send()


def test_buffers_to_send_joined_decode_to_the_frames_sent():
    server = WebSocketConnection(Role.SERVER)
    queue_every_kind_of_output(server)
    peer = FrameParser(require_mask=False)
    for piece in server.buffers_to_send():
        peer.feed(piece)
    frames = []
    while (frame := peer.next_frame()) is not None:
        frames.append(frame)
    assert peer.buffered == 0
    assert frames == [
        Frame(OP_TEXT, b"Hello"),
        Frame(OP_BINARY, bytes(i % 256 for i in range(70_000))),
        Frame(OP_PING, b"ping"),
        Frame(OP_TEXT, "\N{EURO SIGN}".encode("utf-8") * 20_000),
        Frame(OP_BINARY, b"a" * 20_000, fin=False),
        Frame(OP_CONTINUATION, b"b", fin=False),
        Frame(OP_CONTINUATION, b"c" * VECTORED_MIN),
        Frame(OP_PONG, b"are you there?"),
        Frame(OP_BINARY, b""),
        Frame(OP_CLOSE, b"\x03\xe8done"),
    ]


def test_data_to_send_joins_a_big_payload_after_its_header():
    payload = bytes(i % 251 for i in range(65536))
    server = WebSocketConnection(Role.SERVER)
    server.send_binary(payload)
    assert server.data_to_send() == bytes([0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]) + payload


def test_a_client_sends_a_big_payload_masked_after_its_header():
    payload = random.Random(6455).randbytes(100_003)
    client = WebSocketConnection(Role.CLIENT)
    client.send_binary(payload)
    header, *masked = client.buffers_to_send()
    key = header[-4:]
    assert header == frame_header(OP_BINARY, 100_003, mask_key=key)
    assert len(masked) > 1                            # in chunks, after the header
    assert b"".join(masked) == mask(payload, key)


def test_a_client_big_message_in_pieces_decodes_back_with_a_server_parser():
    payload = random.Random(6455).randbytes(1024 * 1024 + 3)
    client = WebSocketConnection(Role.CLIENT)
    client.send_binary(payload)
    parser = FrameParser(require_mask=True, max_frame_size=2 * 1024 * 1024)
    for piece in client.buffers_to_send():
        parser.feed(piece)
    assert parser.next_frame() == Frame(OP_BINARY, payload)
    assert parser.buffered == 0


def test_a_client_big_message_in_pieces_reaches_a_server_connection():
    text = "\N{EURO SIGN}" * 30_000
    client = WebSocketConnection(Role.CLIENT)
    client.send_text(text)
    server = WebSocketConnection(Role.SERVER)
    for piece in client.buffers_to_send():
        server.receive_data(piece)
    assert list(server.events()) == [TextMessage(text)]


def test_nothing_is_left_after_buffers_to_send():
    server = WebSocketConnection(Role.SERVER)
    server.send_text("Hello")
    server.send_binary(bytes(70_000))
    server.send_text("again")
    assert server.buffers_to_send() != []
    assert server.buffers_to_send() == []
    assert server.data_to_send() == b""


def test_a_connection_with_nothing_queued_has_no_buffers_to_send():
    assert WebSocketConnection(Role.SERVER).buffers_to_send() == []
    assert WebSocketConnection(Role.CLIENT).buffers_to_send() == []


def test_data_to_send_leaves_the_next_small_frames_joined_in_buffers_to_send():
    conn = WebSocketConnection(Role.SERVER)
    conn.send_binary(bytes(VECTORED_MIN))
    conn.data_to_send()
    conn.send_text("a")
    conn.send_text("b")
    assert conn.buffers_to_send() == [b"\x81\x01a\x81\x01b"]


def test_a_bytearray_frame_sent_as_bytes_is_copied_so_later_changes_do_not_go_out():
    conn = WebSocketConnection(Role.SERVER)
    frame = bytearray(b"\x81\x02hi")
    conn.send_frame_bytes(frame)
    frame[2:4] = b"no"
    assert b"".join(conn.buffers_to_send()) == b"\x81\x02hi"


# ---- the state machine, written down once ------------------------------------

def test_the_module_docstrings_diagram_lists_exactly_the_transitions_table():
    import re

    import rawws.protocol as protocol
    drawn = {(State[before], Cause(cause.lower()), State[after])
             for before, cause, after in re.findall(r"^\s+(\w+)\s+--(\w+)-->\s+(\w+)",
                                                    protocol.__doc__, re.MULTILINE)}
    table = {(before, cause, after) for (before, cause), after in TRANSITIONS.items()}
    assert drawn == table


def test_every_state_change_follows_the_table():
    # Drive one connection through each cause and check where it lands.
    for cause, drive in [
        (Cause.SEND_CLOSE, lambda c: c.close(1000)),
        (Cause.RECEIVE_CLOSE, lambda c: (c.receive_data(from_client(OP_CLOSE, b"\x03\xe8")),
                                         list(c.events()))),
        (Cause.FAIL, lambda c: (c.receive_data(from_client(0x3, b"")), list(c.events()))),
        (Cause.EOF, lambda c: (c.receive_data(b""), list(c.events()))),
        (Cause.ABORT, lambda c: c.abort()),
    ]:
        server = WebSocketConnection(Role.SERVER)
        drive(server)
        assert server.state is TRANSITIONS[(State.OPEN, cause)], cause


def test_a_client_closes_tcp_only_after_the_servers_eof_or_its_own_failure():
    # §7.1.1: the one rule both I/O layers follow, should_close_transport.
    client = WebSocketConnection(Role.CLIENT)
    client.receive_data(from_server(OP_CLOSE, b"\x03\xe8"))
    list(client.events())
    assert client.state is State.CLOSED and not client.should_close_transport
    client.abort()   # the I/O layer's close timeout
    assert client.should_close_transport
    failing = WebSocketConnection(Role.CLIENT)
    failing.receive_data(from_server(0x3, b""))
    list(failing.events())
    assert failing.should_close_transport
