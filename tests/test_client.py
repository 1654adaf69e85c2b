"""rawws.net.client against the echo server (in-process, over 127.0.0.1)."""
from __future__ import annotations

import os

import pytest

from rawws.net.client import connect
from rawws.echo import ECHO_MAX_MESSAGE_SIZE, EchoApp
from rawws.errors import ConnectionClosed, HandshakeError
from rawws.protocol import CloseReceived, Pong


@pytest.fixture
def echo_url(serve):
    server = serve(EchoApp(), max_message_size=ECHO_MAX_MESSAGE_SIZE)
    return f"ws://127.0.0.1:{server.port}/"


@pytest.fixture
def ws(echo_url):
    with connect(echo_url, timeout=5) as connection:
        yield connection


@pytest.mark.parametrize("text", ["hello", "", "héllo wörld ✓ 𝄞 日本語", "x" * 5000])
def test_text_round_trip(ws, text):
    ws.send_text(text)
    reply = ws.recv(timeout=5)
    assert type(reply) is str and reply == text


@pytest.mark.parametrize("data", [b"\x00\x01\x02\xff", b"", bytes(range(256)) * 4])
def test_binary_round_trip(ws, data):
    ws.send_binary(data)
    reply = ws.recv(timeout=5)
    assert type(reply) is bytes and reply == data


def test_send_picks_the_frame_type(ws):
    ws.send("text")
    ws.send(b"bytes")
    assert ws.recv(timeout=5) == "text"
    assert ws.recv(timeout=5) == b"bytes"


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 65537, 1024 * 1024])
def test_lengths_at_the_encoding_boundaries(ws, size):
    # 125/126 and 65535/65536 are where the 7-bit, 16-bit and 64-bit lengths switch (§5.2).
    data = os.urandom(size)
    ws.send_binary(data)
    assert ws.recv(timeout=10) == data
    text = "é" * (size // 2) + "a" * (size % 2)           # `size` bytes of UTF-8
    ws.send_text(text)
    assert ws.recv(timeout=10) == text


def test_16_mib_message(ws):
    data = os.urandom(ECHO_MAX_MESSAGE_SIZE)
    ws.send_binary(data)
    assert ws.recv(timeout=30) == data


def test_over_the_echo_limit_is_refused_with_1009(ws):
    ws.send_binary(bytes(ECHO_MAX_MESSAGE_SIZE + 1))
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=30)
    assert closed.value.code == 1009
    assert ws.close_code == 1009


def test_fragmented_send_is_echoed_as_one_message(ws):
    ws.send_fragment("Hel", fin=False)
    ws.send_fragment("lo, ", fin=False)
    ws.send_fragment("wörld", fin=True)
    assert ws.recv(timeout=5) == "Hello, wörld"
    ws.send_fragment(b"\x01", fin=False)
    ws.send_fragment(b"", fin=False)
    ws.send_fragment(b"\x02\x03", fin=True)
    assert ws.recv(timeout=5) == b"\x01\x02\x03"


def test_fragmented_send_with_ping_in_between(ws):
    ws.send_fragment("a", fin=False)
    ws.ping(b"mid")                                   # §5.5: control frames may interleave
    ws.send_fragment("b", fin=True)
    assert isinstance(ws.recv_event(timeout=5), Pong)
    assert ws.recv(timeout=5) == "ab"


def test_ping_round_trip(ws):
    rtt = ws.ping(b"payload", timeout=5)
    assert rtt is not None and 0 <= rtt < 5


def test_ping_keeps_messages_that_arrive_meanwhile(ws):
    ws.send_text("first")
    assert ws.ping(b"p", timeout=5) is not None
    assert ws.recv(timeout=5) == "first"


def test_close_with_code_and_reason(echo_url):
    ws = connect(echo_url)
    ws.close(4321, "all done ✓")
    # The echo server answers with the same code (§5.5.1).
    assert ws.close_code == 4321
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=1)
    with pytest.raises(ConnectionClosed):
        ws.send_text("too late")


def test_close_event_is_reported_then_connection_closed(ws):
    ws.send_text("x")
    assert ws.recv(timeout=5) == "x"
    ws.close()
    assert ws.close_code == 1000
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=1)
    assert closed.value.code == 1000


def test_subprotocol_offered_but_none_chosen(echo_url):
    with connect(echo_url, subprotocols=["chat", "superchat"]) as ws:
        assert ws.subprotocol is None
        assert "Sec-WebSocket-Protocol" not in ws.response.headers
        ws.send_text("still works")
        assert ws.recv(timeout=5) == "still works"


def test_any_path_and_query(serve):
    server = serve(EchoApp())
    with connect(f"ws://127.0.0.1:{server.port}/some/path?x=1&y=2") as ws:
        ws.send_text("ok")
        assert ws.recv(timeout=5) == "ok"


def test_any_origin_accepted_by_echo(echo_url):
    with connect(echo_url, origin="http://elsewhere.example") as ws:
        ws.send_text("ok")
        assert ws.recv(timeout=5) == "ok"


def test_recv_timeout_raises_timeout_error_and_connection_survives(ws):
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.2)
    with pytest.raises(TimeoutError):
        ws.recv_event(timeout=0)
    ws.send_text("after")
    assert ws.recv(timeout=5) == "after"


def test_server_close_is_seen_as_close_received(serve):
    server = serve(EchoApp())
    ws = connect(f"ws://127.0.0.1:{server.port}/")
    server.shutdown()
    event = ws.recv_event(timeout=5)
    assert isinstance(event, CloseReceived) and event.code == 1001
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.code == 1001
    ws.close()


def test_refused_handshake_raises_handshake_error_with_status(serve):
    from rawws.net.server import WebSocketApp

    server = serve(WebSocketApp())
    with pytest.raises(HandshakeError) as refused:
        connect(f"ws://127.0.0.1:{server.port}/", origin="http://evil.example")
    assert refused.value.status == 403


def test_upgrade_on_a_file_path_is_a_websocket(serve, tmp_path):
    (tmp_path / "index.html").write_text("<p>hi</p>")
    server = serve(EchoApp(), web_root=tmp_path)
    # The upgrade is answered by the WebSocket layer, never with a file.
    with connect(f"ws://127.0.0.1:{server.port}/index.html") as ws:
        ws.send_text("ws, not a file")
        assert ws.recv(timeout=5) == "ws, not a file"


def test_connect_refused_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]          # bound, never listening
        with pytest.raises(OSError):
            connect(f"ws://127.0.0.1:{port}/", timeout=2)


def test_only_ws_and_wss_urls():
    with pytest.raises(ValueError):
        connect("http://127.0.0.1:1/")
    with pytest.raises(ValueError):
        connect("https://127.0.0.1:1/")
