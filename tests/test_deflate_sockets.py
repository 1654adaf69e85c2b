"""permessage-deflate over real sockets on 127.0.0.1: echo, client, chat broadcast, CLIs."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import zlib

import pytest

from chat import messages as m
from chat.__main__ import CHAT_COMPRESSION
from rawws.net.client import connect
from rawws.deflate import DeflateOptions, DeflateParams, compress_once
from rawws.errors import HandshakeError
from rawws.frames import OP_BINARY, OP_TEXT, RSV1_BIT, encode_frame
from rawws.handshake import accept_key

OFFER = [("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]


def compressed_frame(opcode: int, payload: bytes) -> bytes:
    return encode_frame(opcode, compress_once(payload), mask_key=os.urandom(4), rsv1=True)


def test_client_and_server_agree_and_echo_compressed_messages(serve):
    server = serve()
    with connect(f"ws://127.0.0.1:{server.port}/", compression=True) as ws:
        assert ws.compression == DeflateParams()
        for message in ["Hello", "é" * 5000, os.urandom(70_000), b"\x00" * 1_000_000]:
            ws.send(message)
            assert ws.recv(timeout=5) == message


def test_server_echo_frames_are_compressed_with_rsv1(serve, raw):
    server = serve()
    client = raw(server)
    response = client.upgrade(headers=OFFER)
    assert response.headers.get_all("Sec-WebSocket-Extensions") == ["permessage-deflate"]
    client.frames.allowed_rsv_bits = RSV1_BIT
    client.send(compressed_frame(OP_TEXT, b"Hello"))
    frame = client.recv_frame()
    assert (frame.opcode, frame.rsv1, frame.payload) == (OP_TEXT, True, compress_once(b"Hello"))


def test_server_with_compression_off_ignores_the_offer(serve, raw):
    server = serve(compression=None)
    client = raw(server)
    response = client.upgrade(headers=OFFER)
    assert response.headers.get_all("Sec-WebSocket-Extensions") == []
    with connect(f"ws://127.0.0.1:{server.port}/", compression=True) as ws:
        assert ws.compression is None
        ws.send_text("plain")
        assert ws.recv(timeout=5) == "plain"


def test_a_compressed_bomb_closes_with_1009_and_the_server_goes_on(serve, raw):
    server = serve(max_message_size=64 * 1024)
    client = raw(server)
    client.upgrade(headers=OFFER)
    client.send(compressed_frame(OP_BINARY, bytes(32 * 1024 * 1024)))   # ~32 KiB on the wire
    assert client.recv_close()[0] == 1009
    with connect(f"ws://127.0.0.1:{server.port}/", compression=True) as ws:
        ws.send_text("still here")
        assert ws.recv(timeout=5) == "still here"


def one_shot_server(response_headers: str) -> tuple[int, threading.Thread]:
    """A listener that answers one handshake with a 101 carrying `response_headers`."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def answer() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096)
                key = re.search(rb"Sec-WebSocket-Key: (\S+)", request).group(1).decode()
                conn.sendall((f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                              f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n"
                              f"{response_headers}\r\n").encode())
                conn.recv(4096)   # until the client hangs up

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


@pytest.mark.parametrize("answer", [
    "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=16\r\n",
    "Sec-WebSocket-Extensions: x-unknown\r\n",
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=13\r\n",
])
def test_client_fails_the_handshake_on_an_answer_it_did_not_offer(answer):
    port, thread = one_shot_server(answer)
    options = DeflateOptions(client_max_window_bits=12)
    with pytest.raises(HandshakeError):
        connect(f"ws://127.0.0.1:{port}/", compression=options, timeout=5)
    thread.join(5)


def test_client_without_compression_refuses_any_extension_answer():
    port, thread = one_shot_server("Sec-WebSocket-Extensions: permessage-deflate\r\n")
    with pytest.raises(HandshakeError):
        connect(f"ws://127.0.0.1:{port}/", timeout=5)
    thread.join(5)


# ---- the chat: one compression per broadcast ---------------------------------

@pytest.fixture
def chat(chat_server):
    """The chat with the compression options `python -m chat` uses."""
    return chat_server(compression=CHAT_COMPRESSION)[0]


def chat_raw(raw, server, protocol, headers=()):
    client = raw(server)
    response = client.upgrade(subprotocols=[protocol], headers=list(headers))
    client.frames.allowed_rsv_bits = RSV1_BIT
    return client, response


def test_chat_answers_with_both_context_resets(chat, raw):
    _, response = chat_raw(raw, chat, m.PROTOCOL_V2, OFFER)
    assert response.headers.get_all("Sec-WebSocket-Extensions") == [
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"]


def send_json(client, kind, compressed, **payload):
    text = json.dumps({"type": kind, "payload": payload}).encode()
    if compressed:
        client.send(compressed_frame(OP_TEXT, text))
    else:
        client.send_frame(OP_TEXT, text)


def next_of_type(client, kind):
    """The next chat message of `kind`, as (frame, decoded JSON)."""
    while True:
        frame = client.recv_frame()
        payload = frame.payload
        if frame.rsv1:
            payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
        message = json.loads(payload)
        if message["type"] == kind:
            return frame, message


def test_a_broadcast_is_compressed_once_for_every_deflate_peer(chat, raw):
    alice, _ = chat_raw(raw, chat, m.PROTOCOL_V2, OFFER)
    bob, _ = chat_raw(raw, chat, m.PROTOCOL_V2, OFFER)
    plain, _ = chat_raw(raw, chat, m.PROTOCOL_V2)          # offers no compression
    for client, name in ((alice, "alice"), (bob, "bob"), (plain, "plain")):
        send_json(client, "chat-join", client is not plain, username=name)
        next_of_type(client, "chat-welcome")
    send_json(alice, "chat-message", True, message="Hello, Goats! " * 20)
    frames = [next_of_type(client, "chat-message") for client in (alice, bob, plain)]
    (a_frame, a_msg), (b_frame, b_msg), (p_frame, p_msg) = frames
    assert a_frame.rsv1 and b_frame.rsv1 and not p_frame.rsv1
    assert a_frame.payload == b_frame.payload          # the very same compressed bytes
    assert len(a_frame.payload) < len(p_frame.payload)
    assert a_msg == b_msg == p_msg
    assert a_msg["payload"]["message"] == ("Hello, Goats! " * 20).strip()


def start_cli(*args):
    process = subprocess.Popen([sys.executable, "-m", *args, "--port", "0"],
                               stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    port = int(re.search(r":(\d+)/", line).group(1))
    return process, port


@pytest.mark.parametrize("module, protocols", [("rawws.echo", ()), ("chat", (m.PROTOCOL_V2,))])
@pytest.mark.parametrize("flag, expected", [((), True), (("--no-compression",), False)])
def test_cli_servers_compress_by_default_and_no_compression_turns_it_off(module, protocols, flag,
                                                                          expected):
    process, port = start_cli(module, *flag)
    try:
        with connect(f"ws://127.0.0.1:{port}/", subprotocols=list(protocols),
                     compression=True) as ws:
            assert (ws.compression is not None) == expected
    finally:
        process.terminate()
        process.wait(10)
