"""rawws.net.broadcast: one message to many connections, encoded once per wire form."""
from __future__ import annotations

import logging

import pytest

from rawws.net.broadcast import broadcast
from rawws.net.client import connect
from rawws.net.server import DeflateOptions, WebSocketApp
from rawws.protocol import encode_shared_frame


# ---- the frame: the same bytes for every peer ---------------------------------------

def test_a_text_message_is_the_rfcs_unmasked_hello_frame():
    # RFC 6455 §5.7: "A single-frame unmasked text message".
    assert encode_shared_frame("Hello") == bytes.fromhex("810548656c6c6f")


def test_a_binary_message_gets_the_binary_opcode():
    assert encode_shared_frame(b"\x00\xff") == b"\x82\x02\x00\xff"


def test_a_compressed_message_is_the_rfc_7692_example():
    # RFC 7692 §7.2.3.1: "Hello" compressed, RSV1 set, the 00 00 ff ff tail removed.
    assert encode_shared_frame("Hello", 15) == bytes.fromhex("c107f248cdc9c90700")


# ---- the loop: fakes record what they are handed --------------------------------------

class Peer:
    def __init__(self, bits=None, open=True, fail=False):
        self.shared_deflate_bits = bits
        self.open = open
        self.fail = fail
        self.frames = []

    def send_frame_bytes(self, frame):
        if self.fail:
            raise RuntimeError("broken handle")
        if not self.open:
            return False
        self.frames.append(frame)
        return True


def test_every_plain_peer_is_handed_the_very_same_bytes_object():
    peers = [Peer() for _ in range(5)]
    assert broadcast(peers, "hi") == 5
    assert all(peer.frames[0] is peers[0].frames[0] for peer in peers)
    assert peers[0].frames[0] == b"\x81\x02hi"


def test_peers_that_take_a_shared_compressed_frame_get_one_and_the_others_the_plain_one():
    plain, deflate_a, deflate_b = Peer(), Peer(bits=15), Peer(bits=15)
    broadcast([plain, deflate_a, deflate_b], "Hello")
    assert plain.frames == [encode_shared_frame("Hello")]
    assert deflate_a.frames[0] is deflate_b.frames[0]
    assert deflate_a.frames[0] == encode_shared_frame("Hello", 15)


def test_each_window_size_is_its_own_wire_form():
    small, big = Peer(bits=9), Peer(bits=15)
    broadcast([small, big], "x" * 300)
    assert small.frames[0] == encode_shared_frame("x" * 300, 9)
    assert big.frames[0] == encode_shared_frame("x" * 300, 15)


def test_a_closing_peer_is_skipped_and_not_counted():
    peers = [Peer(), Peer(open=False), Peer()]
    assert broadcast(peers, "hi") == 2
    assert peers[1].frames == []


def test_a_handle_that_raises_is_reported_and_the_others_still_get_the_message():
    broken = Peer(fail=True)
    peers = [Peer(), broken, Peer()]
    failures = []
    assert broadcast(peers, "hi", on_error=lambda ws, error: failures.append((ws, error))) == 2
    assert [ws for ws, _ in failures] == [broken]
    assert isinstance(failures[0][1], RuntimeError)
    assert peers[0].frames and peers[2].frames


def test_without_on_error_a_failure_is_logged(caplog):
    with caplog.at_level(logging.ERROR, logger="rawws.server"):
        assert broadcast([Peer(fail=True), Peer()], "hi") == 1
    assert "broadcast: send to" in caplog.text


def test_nothing_is_encoded_for_no_peers(monkeypatch):
    import rawws.net.broadcast as module
    monkeypatch.setattr(module, "encode_shared_frame", lambda *args: pytest.fail("encoded"))
    assert broadcast([], "hi") == 0


# ---- on real sockets ------------------------------------------------------------------

class Relay(WebSocketApp):
    """Every message goes to every open WebSocket, the sender too."""

    def __init__(self):
        self.server = None

    def on_message(self, ws, message):
        broadcast(self.server.websockets, message)


@pytest.mark.parametrize("compression", [None, DeflateOptions(server_no_context_takeover=True)])
def test_a_broadcast_reaches_plain_and_compressing_clients_alike(serve, compression):
    app = Relay()
    server = serve(app, compression=compression)
    app.server = server
    url = f"ws://127.0.0.1:{server.port}/"
    with connect(url, compression=True, timeout=10) as first, \
            connect(url, compression=False, timeout=10) as second:
        first.ping(b"sync", timeout=10)
        second.ping(b"sync", timeout=10)   # both are open on the server by now
        first.send_text("to everyone " * 20)
        assert first.recv(timeout=10) == "to everyone " * 20
        assert second.recv(timeout=10) == "to everyone " * 20
        second.send_binary(b"\x00\x01")
        assert first.recv(timeout=10) == b"\x00\x01"
        assert second.recv(timeout=10) == b"\x00\x01"
