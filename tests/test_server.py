"""rawws.net.server over real sockets: what a raw peer sees on the wire, the app's callbacks, robustness.

Raw-socket tests send what `rawws.net.client` never would (unmasked frames, bad
UTF-8, silence) and check the server's answer byte by byte: the Close code
first, then the TCP connection closed by the server.
"""
from __future__ import annotations

import os
import resource
import socket
import struct
import threading
import time

import pytest

from rawws.net.client import connect
from rawws.errors import ConnectionClosed
from rawws.frames import (OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, encode_close_payload,
                          encode_frame)
from rawws.handshake import build_request, make_key
from rawws.net.server import WebSocketApp


class RecordingApp(WebSocketApp):
    """Echoes, records every on_open/on_close, and obeys a few commands.

    "close CODE REASON" makes the server start the closing handshake;
    "raise" makes on_message raise.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.opened: list = []
        self.closes: list[tuple[object, int, str]] = []

    def on_open(self, ws) -> None:
        with self.cond:
            self.opened.append(ws)
            self.cond.notify_all()

    def on_message(self, ws, message) -> None:
        if message == "raise":
            raise RuntimeError("application bug (raised on purpose by the test)")
        if isinstance(message, str) and message.startswith("close "):
            _, code, reason = message.split(" ", 2)
            ws.close(int(code), reason)
        elif isinstance(message, str):
            ws.send_text(message)
        else:
            ws.send_binary(message)

    def on_close(self, ws, code: int, reason: str) -> None:
        with self.cond:
            self.closes.append((ws, code, reason))
            self.cond.notify_all()

    def wait_for(self, predicate, timeout: float = 5.0) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), "callback not called in time"


def ws_url(server) -> str:
    return f"ws://127.0.0.1:{server.port}/"


def masked_header(opcode: int, length: int, *, fin: bool = True) -> bytes:
    """A masked frame header announcing `length` payload bytes (64-bit form), with its key."""
    return bytes(((0x80 if fin else 0) | opcode, 0x80 | 127)) + struct.pack("!Q", length) + os.urandom(4)


# ---- protocol errors: Close with the RFC code, then TCP closed by the server ----

def test_unmasked_client_frame_gets_1002_then_tcp_close(serve, raw):
    client = raw(serve())
    client.upgrade()
    client.send_frame(OP_TEXT, b"hello", masked=False)
    code, _ = client.recv_close()
    assert code == 1002
    assert client.expect_eof() == b""


def test_invalid_utf8_gets_1007(serve, raw):
    client = raw(serve())
    client.upgrade()
    client.send_frame(OP_TEXT, b"caf\xc3")            # truncated sequence
    assert client.recv_close()[0] == 1007
    assert client.expect_eof() == b""


def test_invalid_utf8_across_fragments_gets_1007(serve, raw):
    client = raw(serve())
    client.upgrade()
    client.send_frame(OP_TEXT, b"ok", fin=False)
    client.send_frame(0x0, b"\xed\xa0\x80", fin=True)  # an encoded surrogate: never valid
    assert client.recv_close()[0] == 1007
    assert client.expect_eof() == b""


def test_oversized_message_refused_after_its_header(serve, raw):
    client = raw(serve(max_message_size=1024))
    client.upgrade()
    # Only the header of a 1 MiB frame: the server must not wait for the payload.
    client.send(masked_header(OP_BINARY, 1 << 20))
    assert client.recv_close()[0] == 1009
    assert client.expect_eof() == b""


def test_oversized_fragmented_message_gets_1009(serve, raw):
    client = raw(serve(max_message_size=1024))
    client.upgrade()
    client.send_frame(OP_BINARY, b"x" * 1000, fin=False)
    client.send(masked_header(0x0, 100))                 # 1100 bytes in all: over the limit
    assert client.recv_close()[0] == 1009
    assert client.expect_eof() == b""


@pytest.mark.parametrize("code", [999, 1005, 1006, 1016, 2000, 5000])
def test_invalid_close_code_gets_1002(serve, raw, code):
    client = raw(serve())
    client.upgrade()
    client.send_frame(OP_CLOSE, struct.pack("!H", code))
    assert client.recv_close()[0] == 1002
    assert client.expect_eof() == b""


def test_client_close_is_echoed_and_server_closes_tcp_first(serve, raw):
    client = raw(serve(linger_timeout=3.0))
    client.upgrade()
    client.send_frame(OP_CLOSE, encode_close_payload(1000, "bye"))
    assert client.recv_close()[0] == 1000
    # §7.1.1: the server closes TCP first; we have not closed anything, so the
    # EOF can only be the server's, and it comes at once, not after the linger.
    started = time.monotonic()
    assert client.sock.recv(10) == b""
    assert time.monotonic() - started < 1.0


def test_messages_in_the_same_read_as_a_close_are_still_delivered(serve, raw):
    app = RecordingApp()
    app.messages = []
    app.on_message = lambda ws, message: app.messages.append(message)
    client = raw(serve(app))
    client.upgrade()
    # One TCP write: two messages, then the Close. They came before it, so they count.
    client.sock.sendall(encode_frame(OP_TEXT, b"one", mask_key=b"abcd")
                        + encode_frame(OP_TEXT, b"two", mask_key=b"efgh")
                        + encode_frame(OP_CLOSE, encode_close_payload(1000), mask_key=b"ijkl"))
    assert client.recv_close()[0] == 1000
    app.wait_for(lambda: app.closes)
    assert app.messages == ["one", "two"]


def test_client_that_never_answers_close_is_dropped_after_close_timeout(serve, raw):
    app = RecordingApp()
    client = raw(serve(app, close_timeout=0.5))
    client.upgrade()
    client.send_frame(OP_TEXT, b"close 1000 bye")
    started = time.monotonic()
    assert client.recv_close() == (1000, "bye")
    assert client.expect_eof() == b""                  # we never sent our Close
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 3.0
    app.wait_for(lambda: app.closes)
    assert app.closes[0][1] == 1006                    # no Close came back: abnormal


def test_upgrade_and_first_frames_in_one_packet(serve, raw):
    client = raw(serve())
    first = encode_frame(OP_TEXT, b"early", mask_key=os.urandom(4))
    second = encode_frame(OP_BINARY, b"\x00\x01", mask_key=os.urandom(4))
    client.upgrade(extra=first + second)
    frame = client.recv_frame()
    assert (frame.opcode, frame.payload, frame.fin) == (OP_TEXT, b"early", True)
    frame = client.recv_frame()
    assert (frame.opcode, frame.payload) == (OP_BINARY, b"\x00\x01")


def test_ping_from_client_gets_pong_with_same_payload(serve, raw):
    client = raw(serve())
    client.upgrade()
    client.send_frame(OP_PING, b"are you there")
    frame = client.recv_frame()
    assert (frame.opcode, frame.payload) == (OP_PONG, b"are you there")


# ---- keepalive ----

def test_keepalive_client_that_answers_pings_stays_open(serve):
    server = serve(ping_interval=0.2, ping_timeout=0.2)
    with connect(ws_url(server)) as ws:
        # recv() answers the server's pings while it waits.
        with pytest.raises(TimeoutError):
            ws.recv(timeout=1.2)
        ws.send_text("still here")
        assert ws.recv(timeout=2) == "still here"


def test_keepalive_client_that_never_answers_gets_1011(serve, raw):
    client = raw(serve(ping_interval=0.2, ping_timeout=0.2, close_timeout=0.5))
    client.upgrade()
    frame = client.recv_frame()
    assert frame.opcode == OP_PING
    started = time.monotonic()
    assert client.recv_close()[0] == 1011
    assert time.monotonic() - started < 2.0
    assert client.expect_eof() == b""


def test_keepalive_pings_are_ping_interval_apart(serve, raw):
    # Pings answered at once must come every ping_interval, not every ping_timeout.
    client = raw(serve(ping_interval=0.4, ping_timeout=0.1))
    client.upgrade()
    client.sock.settimeout(0.1)
    pings = 0
    deadline = time.monotonic() + 1.3
    while time.monotonic() < deadline:
        try:
            frame = client.recv_frame()
        except TimeoutError:
            continue
        assert frame.opcode == OP_PING
        pings += 1
        client.send_frame(OP_PONG, frame.payload)
    assert 2 <= pings <= 4


# ---- opening handshake refusals, over the wire ----

def upgrade_request(port: int, *, drop: str = "", **overrides: str) -> bytes:
    headers = {"Host": f"127.0.0.1:{port}", "Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": make_key(), "Sec-WebSocket-Version": "13"}
    headers.update({name.replace("_", "-"): value for name, value in overrides.items()})
    headers.pop(drop, None)
    lines = ["GET / HTTP/1.1"] + [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def refusal(client, request: bytes):
    client.send(request)
    response, body = client.read_response()
    assert client.expect_eof() == b""                 # a refusal closes the connection
    return response, body


def test_missing_version_gets_426_with_supported_version(serve, raw):
    server = serve()
    response, _ = refusal(raw(server), upgrade_request(server.port, drop="Sec-WebSocket-Version"))
    assert response.status == 426
    assert response.headers.get("Sec-WebSocket-Version") == "13"


def test_unsupported_version_gets_426(serve, raw):
    server = serve()
    response, _ = refusal(raw(server), upgrade_request(server.port, Sec_WebSocket_Version="8"))
    assert response.status == 426
    assert response.headers.get("Sec-WebSocket-Version") == "13"


@pytest.mark.parametrize("key", ["short", "dGhlIHNhbXBsZSBub25jZQ", "!!!!!!!!!!!!!!!!!!!!!!=="])
def test_bad_key_gets_400(serve, raw, key):
    server = serve()
    response, _ = refusal(raw(server), upgrade_request(server.port, Sec_WebSocket_Key=key))
    assert response.status == 400


def test_foreign_origin_gets_403_with_default_app(serve, raw):
    server = serve(WebSocketApp())
    response, _ = refusal(raw(server), upgrade_request(server.port, Origin="http://evil.example"))
    assert response.status == 403


def test_other_port_is_a_foreign_origin(serve, raw):
    server = serve(WebSocketApp())
    response, _ = refusal(raw(server), upgrade_request(server.port, Origin="http://127.0.0.1:1"))
    assert response.status == 403


def test_no_origin_is_accepted_with_default_app(serve, raw):
    server = serve(WebSocketApp())
    raw(server).upgrade()


def test_same_origin_is_accepted_with_default_app(serve, raw):
    server = serve(WebSocketApp())
    raw(server).upgrade(origin=f"http://127.0.0.1:{server.port}")


class ProtocolApp(RecordingApp):
    subprotocols = ("proto-v2", "proto-v1")
    subprotocol_required = True


def test_required_subprotocol_none_offered_gets_400_naming_them(serve, raw):
    server = serve(ProtocolApp())
    response, body = refusal(raw(server), upgrade_request(server.port))
    assert response.status == 400
    assert b"proto-v2" in body and b"proto-v1" in body


def test_required_subprotocol_unknown_offered_gets_400(serve, raw):
    server = serve(ProtocolApp())
    request = upgrade_request(server.port, Sec_WebSocket_Protocol="chat, superchat")
    response, _ = refusal(raw(server), request)
    assert response.status == 400


def test_both_subprotocols_offered_server_preference_wins(serve):
    server = serve(ProtocolApp())
    with connect(ws_url(server), subprotocols=["proto-v1", "proto-v2"]) as ws:
        assert ws.subprotocol == "proto-v2"
    with connect(ws_url(server), subprotocols=["other", "proto-v1"]) as ws:
        assert ws.subprotocol == "proto-v1"


# ---- application callbacks ----

ENDINGS = {
    # how the connection ends: the close code on_close must see
    "client_close_frame": 1000,
    "client_eof": 1006,
    "client_rst": 1006,
    "server_ws_close": 4001,
    "server_shutdown": 1001,
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_on_close_called_once_with_the_right_code(serve, raw, ending):
    app = RecordingApp()
    server = serve(app)
    client = raw(server)
    client.upgrade()
    app.wait_for(lambda: len(app.opened) == 1)
    if ending == "client_close_frame":
        client.send_frame(OP_CLOSE, encode_close_payload(1000, "done"))
        assert client.recv_close()[0] == 1000
    elif ending == "client_eof":
        client.sock.shutdown(socket.SHUT_WR)
    elif ending == "client_rst":
        client.reset()
    elif ending == "server_ws_close":
        client.send_frame(OP_TEXT, b"close 4001 kicked")
        assert client.recv_close() == (4001, "kicked")
        client.send_frame(OP_CLOSE, encode_close_payload(4001))
    elif ending == "server_shutdown":
        server.shutdown()
        assert client.recv_close()[0] == 1001
        client.send_frame(OP_CLOSE, encode_close_payload(1001))
    app.wait_for(lambda: app.closes)
    time.sleep(0.2)   # room for a (wrong) second call
    assert len(app.closes) == 1
    ws, code, _ = app.closes[0]
    assert ws is app.opened[0]
    assert code == ENDINGS[ending]
    assert not ws.open


def test_client_close_reason_reaches_on_close(serve):
    app = RecordingApp()
    server = serve(app)
    with connect(ws_url(server)) as ws:
        ws.close(4000, "going home")
        assert ws.close_code == 4000                    # the server echoes the code
    app.wait_for(lambda: app.closes)
    assert app.closes[0][1:] == (4000, "going home")


def test_handle_refuses_to_send_after_close(serve):
    app = RecordingApp()
    server = serve(app)
    with connect(ws_url(server)):
        app.wait_for(lambda: app.opened)
    app.wait_for(lambda: app.closes)
    handle = app.opened[0]
    assert handle.send_text("late") is False
    assert handle.send_binary(b"late") is False
    assert handle.ping() is False


def test_app_exception_closes_that_connection_with_1011_only(serve):
    app = RecordingApp()
    server = serve(app)
    with connect(ws_url(server)) as bystander, connect(ws_url(server)) as victim:
        victim.send_text("raise")
        with pytest.raises(ConnectionClosed):
            victim.recv(timeout=5)
        assert victim.close_code == 1011
        bystander.send_text("unaffected")
        assert bystander.recv(timeout=5) == "unaffected"
        with connect(ws_url(server)) as newcomer:      # and the server still accepts
            newcomer.send_text("hi")
            assert newcomer.recv(timeout=5) == "hi"
    app.wait_for(lambda: len(app.closes) == 3)
    assert sorted(code for _, code, _ in app.closes) == [1000, 1000, 1011]


def test_on_open_exception_closes_with_1011(serve):
    class BrokenOpen(RecordingApp):
        def on_open(self, ws):
            super().on_open(ws)
            raise RuntimeError("on_open bug (raised on purpose by the test)")

    app = BrokenOpen()
    server = serve(app)
    with connect(ws_url(server)) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == 1011
    app.wait_for(lambda: app.closes)
    assert len(app.closes) == 1 and app.closes[0][1] == 1011


# ---- robustness ----

def test_garbage_from_one_client_does_not_disturb_another(serve, raw):
    server = serve()
    with connect(ws_url(server)) as good:
        good.send_text("before")
        assert good.recv(timeout=5) == "before"
        # Garbage instead of a handshake: an HTTP error, then the connection closes.
        noise = raw(server)
        noise.send(os.urandom(4096).replace(b"\n", b"x") + b"\r\n\r\n")
        response, _ = noise.read_response()
        assert 400 <= response.status < 500
        # Garbage after a handshake: a Close with a protocol error code, then EOF.
        for seed in range(5):
            bad = raw(server)
            bad.upgrade()
            bad.send(bytes([0x8F]) + os.urandom(2000))     # reserved opcode 0xF, then noise
            assert bad.recv_close()[0] == 1002
            assert bad.expect_eof() == b""
            good.send_text(f"during {seed}")
            assert good.recv(timeout=5) == f"during {seed}"
        good.send_binary(b"\x00" * 70000)
        assert good.recv(timeout=5) == b"\x00" * 70000


def test_client_that_never_reads_makes_the_server_stop_reading(serve, raw):
    server = serve(read_pause_bytes=256 * 1024)
    hog = raw(server, timeout=1.0)
    hog.upgrade()
    payload = os.urandom(64 * 1024)
    frame = encode_frame(OP_BINARY, payload, mask_key=os.urandom(4))
    sent = 0
    limit = 256 * 1024 * 1024
    with pytest.raises(TimeoutError):   # sendall blocks: the server stopped reading
        while sent < limit:
            hog.sock.sendall(frame)
            sent += len(frame)
    assert sent < limit
    # What the server holds for the hog is bounded by its pause threshold plus
    # one read's worth of echoes, not by what the hog sent.
    conn = next(c for c in list(server.connections) if hasattr(c.session, "protocol"))
    assert len(conn.out) < 256 * 1024 + 2 * 256 * 1024 + len(frame)
    assert conn.session.protocol._parser.buffered < 2 * 256 * 1024 + len(frame)
    # Meanwhile everyone else is served.
    with connect(ws_url(server)) as other:
        other.send_text("fine")
        assert other.recv(timeout=5) == "fine"
    hog.reset()


def test_200_concurrent_clients_echo(serve):
    server = serve()
    clients = []
    try:
        for _ in range(200):
            clients.append(connect(ws_url(server), timeout=5))
        for number, ws in enumerate(clients):
            ws.send_text(f"hello {number}")
        errors = []

        def check(number: int, ws) -> None:
            try:
                assert ws.recv(timeout=10) == f"hello {number}"
                ws.send_binary(number.to_bytes(2, "big"))
                assert ws.recv(timeout=10) == number.to_bytes(2, "big")
            except Exception as error:  # reported below, from the test's thread
                errors.append((number, error))

        threads = [threading.Thread(target=check, args=(n, ws)) for n, ws in enumerate(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
        assert not errors
        assert len(server.websockets) == 200
    finally:
        for ws in clients:
            ws.close(timeout=2)


def test_half_closed_peer_that_never_reads_does_not_spin(serve):
    # A peer sends a big message, then shuts its write side and never reads the
    # echo: the server must neither busy-loop on the EOF nor keep the
    # connection forever (it gets linger_timeout to flush, then it is dropped).

    # (read_pause_bytes high: the EOF is read while the echo is still pending)
    server = serve(max_message_size=16 * 1024 * 1024, linger_timeout=1.5,
                   read_pause_bytes=64 * 1024 * 1024)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    try:
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(build_request(f"127.0.0.1:{server.port}", "/", make_key()))
        assert sock.recv(4096).startswith(b"HTTP/1.1 101 ")
        sock.sendall(encode_frame(OP_BINARY, os.urandom(8 * 1024 * 1024), mask_key=os.urandom(4)))
        time.sleep(0.3)
        sock.shutdown(socket.SHUT_WR)
        time.sleep(0.1)
        before = resource.getrusage(resource.RUSAGE_SELF)
        time.sleep(0.5)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        assert cpu < 0.2, f"server used {cpu:.2f} s of CPU in 0.5 s while idle"
        deadline = time.monotonic() + 5
        while server.connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not server.connections
    finally:
        sock.close()


def test_origin_with_an_endless_port_is_refused_not_left_hanging(serve, raw):
    server = serve(WebSocketApp())
    client = raw(server)
    client.send(build_request(f"127.0.0.1:{server.port}", "/", make_key(),
                              origin="http://127.0.0.1:" + "9" * 5000))
    response, _ = client.read_response()
    assert response.status == 403


def test_server_listens_on_ipv6_loopback_when_given_an_ipv6_host(serve):
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6")
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError as error:
        pytest.skip(f"no IPv6 loopback on this machine: {error}")
    server = serve(host="::1")
    with connect(f"ws://[::1]:{server.port}/") as ws:
        ws.send_text("six")
        assert ws.recv(timeout=5) == "six"
