"""rawws.deflate: permessage-deflate (RFC 7692), negotiation and compressed frames byte by byte."""
from __future__ import annotations

import tracemalloc
import zlib

import pytest

from rawws.deflate import (DeflateOptions, DeflateParams, PerMessageDeflate, client_check,
                           client_offer, compress_once, server_accept)
from rawws.errors import HandshakeError
from rawws.frames import (OP_BINARY, OP_CONTINUATION, OP_PING, OP_TEXT, RSV1_BIT, FrameParser,
                          encode_frame)
from rawws.protocol import BinaryMessage, Ping, Role, TextMessage, WebSocketConnection

from tests.wire import failed_with

RFC_KEY = bytes([0x37, 0xFA, 0x21, 0x3D])
DEFAULTS = DeflateOptions()

# RFC 7692 §7.2.3: "Hello", compressed, as each example shows it on the wire.
HELLO = bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])                   # §7.2.3.1
HELLO_AGAIN_SHARED = bytes([0xF2, 0x00, 0x11, 0x00, 0x00])                    # §7.2.3.2
HELLO_STORED = bytes([0x00, 0x05, 0x00, 0xFA, 0xFF, 0x48, 0x65, 0x6C, 0x6C, 0x6F, 0x00])  # §7.2.3.3
HELLO_BFINAL = bytes([0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00])        # §7.2.3.4
HELLO_TWO_BLOCKS = bytes([0xF2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xFF, 0xFF,
                          0xCA, 0xC9, 0xC9, 0x07, 0x00])                       # §7.2.3.5


def accept(offer: str, options: DeflateOptions = DEFAULTS):
    return server_accept([offer], options)


# ---- server side negotiation: offer -> answer (§5, §7.1) --------------------

@pytest.mark.parametrize("offer, answer, params", [
    ("permessage-deflate", "permessage-deflate", DeflateParams()),
    ("permessage-deflate; client_max_window_bits", "permessage-deflate", DeflateParams()),
    ("permessage-deflate; server_no_context_takeover",
     "permessage-deflate; server_no_context_takeover", DeflateParams(server_no_context_takeover=True)),
    ("permessage-deflate; client_no_context_takeover",
     "permessage-deflate; client_no_context_takeover", DeflateParams(client_no_context_takeover=True)),
    ("permessage-deflate; server_max_window_bits=10",
     "permessage-deflate; server_max_window_bits=10", DeflateParams(server_max_window_bits=10)),
    ("permessage-deflate; server_max_window_bits=8",
     "permessage-deflate; server_max_window_bits=8", DeflateParams(server_max_window_bits=8)),
    ("permessage-deflate; client_max_window_bits=9",
     "permessage-deflate", DeflateParams(client_max_window_bits=9)),
    ('permessage-deflate; server_max_window_bits="12"',
     "permessage-deflate; server_max_window_bits=12", DeflateParams(server_max_window_bits=12)),
])
def test_server_answers_an_offer_it_can_honour(offer, answer, params):
    assert accept(offer) == (params, answer)


def test_server_takes_the_first_offer_it_can_honour():
    # The first offer repeats a parameter (§7.1: declined); the second is taken.
    offers = ("permessage-deflate; server_max_window_bits=10; server_max_window_bits=10, "
              "permessage-deflate; client_no_context_takeover")
    params, answer = accept(offers)
    assert answer == "permessage-deflate; client_no_context_takeover"


def test_server_skips_extensions_it_does_not_know():
    params, answer = accept("x-webkit-deflate-frame, permessage-deflate")
    assert answer == "permessage-deflate"


@pytest.mark.parametrize("offer", [
    "permessage-deflate; foo",                                      # unknown parameter
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",   # repeated
    "permessage-deflate; server_no_context_takeover=1",             # flag with a value
    "permessage-deflate; server_max_window_bits",                   # needs a value
    "permessage-deflate; server_max_window_bits=7",                 # outside 8..15
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=010",               # leading zero (§7.1.2.1)
    "permessage-deflate; client_max_window_bits=0x9",
    "x-unknown-extension",
])
def test_server_declines_an_offer_it_cannot_take(offer):
    assert accept(offer) is None


def test_server_refuses_a_header_that_breaks_the_grammar_with_400():
    with pytest.raises(HandshakeError) as info:
        accept('permessage-deflate; client_max_window_bits="10')
    assert info.value.status == 400


def test_server_options_add_context_resets_and_caps_to_every_answer():
    options = DeflateOptions(server_no_context_takeover=True, client_no_context_takeover=True,
                             server_max_window_bits=12, client_max_window_bits=11)
    params, answer = accept("permessage-deflate; client_max_window_bits", options)
    assert answer == ("permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                      "server_max_window_bits=12; client_max_window_bits=11")
    assert params == DeflateParams(True, True, 12, 11)


def test_server_caps_the_client_window_only_when_the_client_offered_the_parameter():
    # §7.1.2.2: without client_max_window_bits in the offer, the answer may not hold it.
    options = DeflateOptions(client_max_window_bits=11)
    params, answer = accept("permessage-deflate", options)
    assert answer == "permessage-deflate"
    assert params.client_max_window_bits == 15


# ---- client side: offer, then the answer checked against it (§7.1) ----------------

def test_client_offer_says_it_accepts_a_client_window_cap():
    assert client_offer(DEFAULTS) == "permessage-deflate; client_max_window_bits"


def test_client_offer_with_every_option():
    options = DeflateOptions(server_no_context_takeover=True, client_no_context_takeover=True,
                             server_max_window_bits=10, client_max_window_bits=12)
    assert client_offer(options) == ("permessage-deflate; server_no_context_takeover; "
                                     "client_no_context_takeover; server_max_window_bits=10; "
                                     "client_max_window_bits=12")


def test_client_without_an_answer_goes_uncompressed():
    assert client_check([], DEFAULTS) is None


@pytest.mark.parametrize("answer, params", [
    ("permessage-deflate", DeflateParams()),
    ("permessage-deflate; server_no_context_takeover", DeflateParams(server_no_context_takeover=True)),
    ("permessage-deflate; client_no_context_takeover", DeflateParams(client_no_context_takeover=True)),
    ("permessage-deflate; server_max_window_bits=9", DeflateParams(server_max_window_bits=9)),
    ("permessage-deflate; client_max_window_bits=8", DeflateParams(client_max_window_bits=8)),
])
def test_client_accepts_an_answer_its_offer_allows(answer, params):
    assert client_check([answer], DEFAULTS) == params


@pytest.mark.parametrize("answer, options", [
    ("x-other", DEFAULTS),                                              # not offered
    ("permessage-deflate, permessage-deflate", DEFAULTS),               # two answers to one offer
    ("permessage-deflate; foo", DEFAULTS),                              # unknown parameter
    ("permessage-deflate; client_max_window_bits", DEFAULTS),           # no value in an answer
    ("permessage-deflate; server_max_window_bits=16", DEFAULTS),
    ("permessage-deflate; server_max_window_bits=12", DeflateOptions(server_max_window_bits=10)),
    ("permessage-deflate", DeflateOptions(server_max_window_bits=10)),  # cap offered, not answered
    ("permessage-deflate", DeflateOptions(server_no_context_takeover=True)),
    ("permessage-deflate; client_max_window_bits=13", DeflateOptions(client_max_window_bits=12)),
])
def test_client_fails_on_an_answer_its_offer_did_not_allow(answer, options):
    with pytest.raises(HandshakeError):
        client_check([answer], options)


# ---- compressed frames, RFC 7692 §7.2.3 byte for byte ------------------------

def test_rfc_hello_compressed_without_context_takeover():
    assert compress_once(b"Hello") == HELLO


def test_rfc_hello_twice_shares_the_window_with_context_takeover():
    sender = PerMessageDeflate(DeflateParams(), is_server=True)
    assert sender.compress(b"Hello") == HELLO
    assert sender.compress(b"Hello") == HELLO_AGAIN_SHARED


def test_without_context_takeover_every_message_compresses_alike():
    sender = PerMessageDeflate(DeflateParams(server_no_context_takeover=True), is_server=True)
    assert sender.compress(b"Hello") == HELLO
    assert sender.compress(b"Hello") == HELLO


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = True) -> bytes:
    return encode_frame(opcode, payload, fin=fin, mask_key=RFC_KEY, rsv1=rsv1)


def server_with_deflate(params: DeflateParams = DeflateParams(), **kwargs) -> WebSocketConnection:
    return WebSocketConnection(Role.SERVER, deflate=PerMessageDeflate(params, is_server=True),
                               **kwargs)


def test_rfc_compressed_hello_frame_is_a_text_message():
    # §7.2.3.1: 0xc1 0x07 0xf2 0x48 0xcd 0xc9 0xc9 0x07 0x00, masked as a client sends it.
    assert encode_frame(OP_TEXT, HELLO, rsv1=True) == bytes([0xC1, 0x07]) + HELLO
    server = server_with_deflate()
    server.receive_data(client_frame(OP_TEXT, HELLO))
    assert list(server.events()) == [TextMessage("Hello")]


def test_rfc_fragmented_compressed_hello_has_rsv1_on_the_first_frame_only():
    # §7.2.3.1: 0x41 0x03 0xf2 0x48 0xcd, then 0x80 0x04 0xc9 0xc9 0x07 0x00.
    server = server_with_deflate()
    server.receive_data(client_frame(OP_TEXT, HELLO[:3], fin=False)
                        + client_frame(OP_CONTINUATION, HELLO[3:], rsv1=False))
    assert list(server.events()) == [TextMessage("Hello")]


def test_rfc_second_hello_with_a_shared_window():
    server = server_with_deflate()
    server.receive_data(client_frame(OP_TEXT, HELLO) + client_frame(OP_TEXT, HELLO_AGAIN_SHARED))
    assert list(server.events()) == [TextMessage("Hello"), TextMessage("Hello")]


def test_rfc_hello_in_a_stored_block():
    server = server_with_deflate()
    server.receive_data(client_frame(OP_TEXT, HELLO_STORED))
    assert list(server.events()) == [TextMessage("Hello")]


def test_rfc_hello_with_bfinal_then_a_new_stream_for_the_next_message():
    server = server_with_deflate()
    server.receive_data(client_frame(OP_TEXT, HELLO_BFINAL) + client_frame(OP_TEXT, HELLO))
    assert list(server.events()) == [TextMessage("Hello"), TextMessage("Hello")]


def test_rfc_hello_in_two_deflate_blocks():
    server = server_with_deflate()
    server.receive_data(client_frame(OP_TEXT, HELLO_TWO_BLOCKS))
    assert list(server.events()) == [TextMessage("Hello")]


def test_a_message_without_rsv1_is_not_inflated():
    server = server_with_deflate()
    server.receive_data(client_frame(OP_BINARY, HELLO, rsv1=False))
    assert list(server.events()) == [BinaryMessage(HELLO)]


def read_frames(data: bytes, *, masked: bool):
    parser = FrameParser(require_mask=masked, allowed_rsv_bits=RSV1_BIT)
    parser.feed(data)
    frames = []
    while (frame := parser.next_frame()) is not None:
        frames.append(frame)
    return frames


def test_server_sends_compressed_messages_with_rsv1():
    server = server_with_deflate()
    server.send_text("Hello")
    (frame,) = read_frames(server.data_to_send(), masked=False)
    assert frame.rsv1 and frame.fin and frame.payload == HELLO


def test_messages_under_min_size_go_uncompressed():
    deflate = PerMessageDeflate(DeflateParams(), is_server=True, options=DeflateOptions(min_size=6))
    server = WebSocketConnection(Role.SERVER, deflate=deflate)
    server.send_text("Hello")
    server.send_text("Hello!")
    frames = read_frames(server.data_to_send(), masked=False)
    assert [(f.rsv1, f.payload) for f in frames] == [(False, b"Hello"), (True, compress_once(b"Hello!"))]


def test_client_compresses_with_rsv1_and_masks():
    client = WebSocketConnection(Role.CLIENT, deflate=PerMessageDeflate(DeflateParams(), is_server=False))
    client.send_binary(b"Hello")
    (frame,) = read_frames(client.data_to_send(), masked=True)
    assert frame.rsv1 and frame.payload == HELLO


def test_control_frames_are_never_compressed():
    server = server_with_deflate()
    server.send_ping(b"Hello")
    server.close()
    frames = read_frames(server.data_to_send(), masked=False)
    assert [(f.opcode, f.rsv1) for f in frames] == [(OP_PING, False), (0x8, False)]


def test_ping_between_compressed_fragments_is_answered():
    server = server_with_deflate()
    server.receive_data(client_frame(OP_TEXT, HELLO[:3], fin=False)
                        + encode_frame(OP_PING, b"x", mask_key=RFC_KEY)
                        + client_frame(OP_CONTINUATION, HELLO[3:], rsv1=False))
    assert list(server.events()) == [Ping(b"x"), TextMessage("Hello")]


def test_rsv1_on_a_control_frame_fails_with_1002():
    # RFC 7692 §6.1: control frames are not compressed.
    server = server_with_deflate()
    server.receive_data(encode_frame(OP_PING, b"", mask_key=RFC_KEY, rsv1=True))
    assert failed_with(server) == 1002


def test_rsv1_on_a_continuation_frame_fails_with_1002():
    server = server_with_deflate()
    server.receive_data(client_frame(OP_TEXT, HELLO[:3], fin=False)
                        + client_frame(OP_CONTINUATION, HELLO[3:], rsv1=True))
    assert failed_with(server) == 1002


def test_rsv1_without_the_extension_fails_with_1002():
    server = WebSocketConnection(Role.SERVER)
    server.receive_data(client_frame(OP_TEXT, HELLO))
    assert failed_with(server) == 1002


def test_invalid_compressed_data_fails_with_1002():
    server = server_with_deflate()
    server.receive_data(client_frame(OP_TEXT, b"\xff\xff\xff\xff"))
    assert failed_with(server) == 1002


def test_compressed_text_that_inflates_to_invalid_utf8_fails_with_1007():
    server = server_with_deflate()
    server.receive_data(client_frame(OP_TEXT, compress_once(b"ok \xc0\xaf")))
    assert failed_with(server) == 1007


def test_client_context_is_reset_after_each_message_when_agreed():
    # The client promised to reset (client_no_context_takeover): a message that
    # refers back to the previous one cannot be inflated.
    server = server_with_deflate(DeflateParams(client_no_context_takeover=True))
    server.receive_data(client_frame(OP_TEXT, HELLO) + client_frame(OP_TEXT, HELLO))
    assert list(server.events()) == [TextMessage("Hello"), TextMessage("Hello")]
    server.receive_data(client_frame(OP_TEXT, HELLO_AGAIN_SHARED))
    assert failed_with(server) == 1002


def test_window_bits_8_is_sent_with_zlibs_9_and_reaches_back_at_most_250_bytes():
    # zlib refuses to compress raw DEFLATE with 8 bits; 9 keeps the promise of
    # a 256-byte window, since zlib never looks further back than 512 - 262.
    sender = PerMessageDeflate(DeflateParams(server_max_window_bits=8), is_server=True)
    message = bytes(range(200)) * 20
    data = sender.compress(message)
    receiver = zlib.decompressobj(-8)    # a peer holding us to a 256-byte window
    assert receiver.decompress(data + b"\x00\x00\xff\xff") == message


# ---- the bomb: the limit holds while inflating (RFC 6455 §10.4) ---------------------

def test_a_small_message_that_inflates_past_the_limit_closes_with_1009():
    bomb = compress_once(bytes(10 * 1024 * 1024))   # 10 MiB of zeros in ~10 KiB
    assert len(bomb) < 20 * 1024
    server = server_with_deflate(max_message_size=1024 * 1024)
    server.receive_data(client_frame(OP_BINARY, bomb))
    assert failed_with(server) == 1009


def test_the_bomb_costs_no_more_memory_than_the_limit():
    bomb = compress_once(bytes(64 * 1024 * 1024))   # 64 MiB of zeros in ~64 KiB
    frame = client_frame(OP_BINARY, bomb)
    server = server_with_deflate(max_message_size=1024 * 1024)
    tracemalloc.start()
    try:
        server.receive_data(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert failed_with(server) == 1009
    assert peak < 4 * 1024 * 1024   # the 1 MiB budget (+1 byte) and change, never 64 MiB


def test_a_fragmented_bomb_is_stopped_at_the_limit_across_frames():
    bomb = compress_once(bytes(4 * 1024 * 1024))
    server = server_with_deflate(max_message_size=1024 * 1024)
    pieces = [bomb[i:i + 1000] for i in range(0, len(bomb), 1000)]
    data = client_frame(OP_BINARY, pieces[0], fin=False)
    for piece in pieces[1:]:
        data += client_frame(OP_CONTINUATION, piece, fin=False, rsv1=False)
    server.receive_data(data)
    assert failed_with(server) == 1009


def test_a_message_exactly_at_the_limit_inflates():
    server = server_with_deflate(max_message_size=100_000)
    server.receive_data(client_frame(OP_BINARY, compress_once(bytes(100_000))))
    assert list(server.events()) == [BinaryMessage(bytes(100_000))]


def test_compressors_are_made_on_first_use():
    deflate = PerMessageDeflate(DeflateParams(), is_server=True)
    assert deflate._compressor is None and deflate._decompressor is None
