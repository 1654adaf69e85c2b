"""Close codes and the closing handshake (RFC 6455 §5.5.1, §7).

A Close frame's payload is empty, or a 2-byte big-endian status code
followed by a UTF-8 reason. §7.4 says which codes may be on the wire;
§7.1 says who sends what, and who closes the TCP connection.
"""
from __future__ import annotations

import pytest

from rawws.close import is_valid_close_code
from rawws.errors import ConnectionClosed, InvalidPayload, ProtocolError
from rawws.frames import (OP_CLOSE, OP_TEXT, Frame, FrameParser, decode_close_payload,
                          encode_close_payload, encode_frame)
from rawws.protocol import CloseReceived, Role, State, TextMessage, WebSocketConnection

from tests.wire import failed_with, sent_frames

RFC_KEY = bytes([0x37, 0xFA, 0x21, 0x3D])

# §7.4.1 defines 1000-1003 and 1007-1011 for Close frames; §7.4.2 gives
# 3000-3999 to libraries and frameworks and 4000-4999 to private use.
VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
# 0-999 are unused; 1004 is reserved; 1005, 1006 and 1015 "MUST NOT be set as
# a status code in a Close control frame"; 1012-1016 are treated as
# unassigned (as Autobahn's case 7.9 does); 1017-2999 are reserved for
# extensions and later revisions; 5000 and up are not defined.
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100, 2000, 2999, 5000,
                 65535]


def close_frame_from_client(payload: bytes) -> bytes:
    return encode_frame(OP_CLOSE, payload, mask_key=RFC_KEY)


def code_bytes(code: int) -> bytes:
    return code.to_bytes(2, "big")


# ---- §7.4 which codes may be on the wire -----------------------------------

@pytest.mark.parametrize("code", VALID_CODES)
def test_code_is_valid_on_the_wire(code):
    assert is_valid_close_code(code)


@pytest.mark.parametrize("code", INVALID_CODES)
def test_code_is_invalid_on_the_wire(code):
    assert not is_valid_close_code(code)


@pytest.mark.parametrize("code", VALID_CODES)
def test_server_echoes_a_valid_code(code):
    # §5.5.1: the endpoint "typically echos the status code it received".
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(close_frame_from_client(code_bytes(code)))
    assert list(server.events()) == [CloseReceived(code, "")]
    assert server.data_to_send() == bytes([0x88, 0x02]) + code_bytes(code)
    assert server.close_code == code


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_code_on_the_wire_fails_with_1002(code):
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(close_frame_from_client(code_bytes(code)))
    assert list(server.events()) == []
    assert failed_with(server) == 1002


# ---- §5.5.1 the Close payload -----------------------------------------------

def test_close_payload_is_a_big_endian_code_then_utf8_reason():
    assert encode_close_payload(1000, "bye") == b"\x03\xe8bye"
    assert decode_close_payload(b"\x03\xe8bye") == (1000, "bye")


def test_close_payload_may_be_empty():
    assert encode_close_payload(None) == b""


def test_empty_close_payload_decodes_as_1005():
    # §7.1.5: "If this Close control frame contains no status code, _The
    # WebSocket Connection Close Code_ is considered to be 1005."
    assert decode_close_payload(b"") == (1005, "")


def test_one_byte_close_payload_is_a_protocol_error():
    with pytest.raises(ProtocolError) as info:
        decode_close_payload(b"\x03")
    assert info.value.close_code == 1002


def test_close_reason_that_is_not_utf8_is_invalid_payload():
    with pytest.raises(InvalidPayload) as info:
        decode_close_payload(b"\x03\xe8\xff")
    assert info.value.close_code == 1007


@pytest.mark.parametrize("code", [1005, 1006, 1015, 999, 5000])
def test_reserved_or_undefined_code_is_never_sent(code):
    with pytest.raises(ValueError):
        encode_close_payload(code)


def test_reason_without_a_code_is_not_sent():
    with pytest.raises(ValueError):
        encode_close_payload(None, "why")


def test_close_payload_is_at_most_125_bytes():
    # §5.5: control frames carry 125 bytes at most: 2 for the code, 123 for the reason.
    assert len(encode_close_payload(1000, "x" * 123)) == 125
    with pytest.raises(ValueError):
        encode_close_payload(1000, "x" * 124)


# ---- receiving a Close ------------------------------------------------------

def test_empty_close_is_answered_with_an_empty_close_and_reported_as_1005():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(close_frame_from_client(b""))
    assert list(server.events()) == [CloseReceived(1005, "")]
    assert server.data_to_send() == bytes([0x88, 0x00])
    assert server.close_code == 1005


def test_one_byte_close_payload_fails_with_1002():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(close_frame_from_client(b"\x03"))
    assert list(server.events()) == []
    assert failed_with(server) == 1002


def test_close_reason_that_is_not_utf8_fails_with_1007():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(close_frame_from_client(b"\x03\xe8\xed\xa0\x80"))
    assert list(server.events()) == []
    assert failed_with(server) == 1007


def test_close_reason_is_reported_and_the_code_echoed_without_it():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(close_frame_from_client(b"\x0f\xa0going to lunch"))
    assert list(server.events()) == [CloseReceived(4000, "going to lunch")]
    assert server.data_to_send() == b"\x88\x02\x0f\xa0"
    assert server.close_reason == "going to lunch"


def test_server_closes_the_transport_after_answering_a_close():
    # §7.1.1: "the server SHOULD close the underlying TCP connection first".
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(close_frame_from_client(b"\x03\xe8"))
    assert list(server.events()) == [CloseReceived(1000, "")]
    assert server.data_to_send() == b"\x88\x02\x03\xe8"
    assert server.state is State.CLOSED
    assert server.should_close_transport


def test_client_answers_a_server_close_and_waits_for_the_server_to_close_tcp():
    client = WebSocketConnection(Role.CLIENT)
    client.receive_data(b"\x88\x02\x03\xe9")
    assert list(client.events()) == [CloseReceived(1001, "")]
    assert sent_frames(client) == [Frame(OP_CLOSE, b"\x03\xe9")]   # masked on the wire
    assert client.state is State.CLOSED
    assert not client.should_close_transport
    client.receive_data(b"")   # the server closed TCP
    assert client.should_close_transport
    assert client.close_code == 1001


def test_data_after_a_close_in_the_same_read_is_ignored():
    # §1.4: "after receiving a control frame indicating the connection should be
    # closed, a peer discards any further data received".
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(close_frame_from_client(b"\x03\xe8")
                        + encode_frame(OP_TEXT, b"too late", mask_key=RFC_KEY))
    assert list(server.events()) == [CloseReceived(1000, "")]


def test_the_rest_of_a_read_after_a_close_is_let_go_not_kept():
    # The read is parsed where it lies (a server reuses its read buffer): the
    # bytes after the Close are neither parsed nor held on to.
    server = WebSocketConnection(Role.SERVER)
    read = bytearray(close_frame_from_client(b"\x03\xe8")
                     + encode_frame(OP_TEXT, b"too late", mask_key=RFC_KEY))
    server.receive_data(memoryview(read))
    list(server.events())
    assert server.bytes_unparsed == 0


def test_data_after_a_close_in_a_later_read_is_ignored():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(close_frame_from_client(b"\x03\xe8"))
    list(server.events())
    server.data_to_send()
    server.receive_data(encode_frame(OP_TEXT, b"too late", mask_key=RFC_KEY))
    server.receive_data(close_frame_from_client(b"\x03\xe8"))
    assert list(server.events()) == []
    assert server.data_to_send() == b""


# ---- starting the closing handshake -----------------------------------------

def test_client_close_sends_a_masked_close_and_enters_closing():
    client = WebSocketConnection(Role.CLIENT)
    client.close(1000)
    wire = client.data_to_send()
    assert wire[:2] == bytes([0x88, 0x82])          # FIN+Close, MASK + length 2
    server = FrameParser(require_mask=True)
    server.feed(wire)
    assert server.next_frame() == Frame(OP_CLOSE, b"\x03\xe8")
    assert client.state is State.CLOSING


def test_client_in_closing_becomes_closed_when_the_server_close_arrives():
    client = WebSocketConnection(Role.CLIENT)
    client.close(1000)
    client.data_to_send()
    client.receive_data(b"\x88\x02\x03\xe8")
    assert list(client.events()) == [CloseReceived(1000, "")]
    assert client.state is State.CLOSED
    assert client.data_to_send() == b""             # no second Close
    assert client.close_code == 1000
    # §7.1.1: the server closes TCP first; the client waits for its EOF.
    assert not client.should_close_transport
    client.receive_data(b"")
    assert list(client.events()) == []
    assert client.should_close_transport and client.close_code == 1000


def test_messages_still_arrive_while_closing():
    # §7.1.2: after sending Close, an endpoint still reads until the peer's Close.
    client = WebSocketConnection(Role.CLIENT)
    client.close(1000)
    client.receive_data(b"\x81\x02hi" + b"\x88\x02\x03\xe8")
    assert list(client.events()) == [TextMessage("hi"), CloseReceived(1000, "")]


def test_server_close_with_reason_has_exact_bytes():
    server = WebSocketConnection(Role.SERVER)
    server.close(1001, "bye")
    assert server.data_to_send() == b"\x88\x05\x03\xe9bye"
    assert server.state is State.CLOSING
    assert not server.should_close_transport


def test_server_closes_the_transport_when_the_client_answers_its_close():
    server = WebSocketConnection(Role.SERVER)
    server.close(1000)
    server.data_to_send()
    server.receive_data(close_frame_from_client(b"\x03\xe8"))
    assert list(server.events()) == [CloseReceived(1000, "")]
    assert server.state is State.CLOSED
    assert server.should_close_transport
    assert server.data_to_send() == b""


def test_close_without_a_code_sends_an_empty_close():
    server = WebSocketConnection(Role.SERVER)
    server.close(None)
    assert server.data_to_send() == b"\x88\x00"


def test_close_twice_sends_one_close():
    server = WebSocketConnection(Role.SERVER)
    server.close(1000)
    server.close(1001)
    assert server.data_to_send() == b"\x88\x02\x03\xe8"


@pytest.mark.parametrize("send", [
    lambda ws: ws.send_text("x"),
    lambda ws: ws.send_binary(b"x"),
    lambda ws: ws.send_fragment("x", fin=True),
    lambda ws: ws.send_ping(b""),
    lambda ws: ws.send_pong(b""),
    lambda ws: ws.send_frame_bytes(b"\x81\x01x"),
], ids=["send_text", "send_binary", "send_fragment", "send_ping", "send_pong", "send_frame_bytes"])
def test_sending_after_close_raises_connection_closed(send):
    server = WebSocketConnection(Role.SERVER)
    server.close(1000)
    with pytest.raises(ConnectionClosed):
        send(server)


def test_sending_after_the_peer_closed_raises_connection_closed():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(close_frame_from_client(b"\x0f\xa0"))
    list(server.events())
    with pytest.raises(ConnectionClosed) as info:
        server.send_text("x")
    assert info.value.code == 4000


def test_no_pong_is_sent_after_our_close():
    server = WebSocketConnection(Role.SERVER)
    server.close(1000)
    server.data_to_send()
    server.receive_data(encode_frame(0x9, b"ping", mask_key=RFC_KEY))
    assert server.data_to_send() == b""


# ---- the transport goes away -------------------------------------------------

def test_eof_without_close_gives_close_code_1006():
    # §7.1.5: "If _The WebSocket Connection is Closed_ and no Close control
    # frame was received by the endpoint ... the WebSocket Connection Close Code is 1006."
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(b"")
    assert list(server.events()) == []
    assert server.close_code == 1006
    assert server.state is State.CLOSED
    assert server.should_close_transport
    assert server.data_to_send() == b""


def test_eof_in_the_middle_of_a_frame_gives_1006_and_no_message():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(encode_frame(OP_TEXT, b"Hello", mask_key=RFC_KEY)[:-1])
    server.receive_data(b"")
    assert list(server.events()) == []
    assert server.close_code == 1006


def test_failed_connection_reports_1006_for_the_close_it_never_received():
    # We sent 1002; the peer sent no Close: by §7.1.5 the close code is 1006.
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(b"\x81\x00")    # unmasked
    assert failed_with(server) == 1002
    assert server.close_code == 1006


def test_sending_after_eof_raises_connection_closed():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(b"")
    list(server.events())
    with pytest.raises(ConnectionClosed) as info:
        server.send_text("x")
    assert info.value.code == 1006


def test_abort_gives_close_code_1006_and_closes_the_transport():
    # The I/O layer gives up (close timeout): no Close frame is sent.
    client = WebSocketConnection(Role.CLIENT)
    client.close(1000)
    client.data_to_send()
    client.abort()
    assert client.state is State.CLOSED
    assert client.should_close_transport
    assert client.close_code == 1006
    assert client.data_to_send() == b""
