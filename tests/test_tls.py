"""TLS (rawws.net.tls): wss:// and https:// on one port, real sockets on 127.0.0.1.

The certificates come from the session's throwaway CA (`tls_certs`,
tests/tls_certs.py). Python's `ssl` sockets speak raw bytes where a test
needs what rawws's client would never send: one-byte records, half a
record, a ClientHello and then silence, plain HTTP to the TLS port.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import ssl
import struct
import time
import urllib.request

import pytest

from chat import messages as m
from chat.room import Limits
from rawws.errors import ConnectionClosed
from rawws.frames import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, encode_frame
from rawws.handshake import build_request, make_key
from rawws.net.client import connect
from rawws.net.server import WebSocketApp
from rawws.net.tls import TLSConfigError, client_context, server_context
from rawws.tools.trace import WireTracer

try:
    from tests.conftest import RawClient
except ImportError:                      # tests/ run as a rootdir, not a package
    from conftest import RawClient

TIMEOUT = 5.0
MIB = 1024 * 1024


# ---- helpers ---------------------------------------------------------------------------------

@pytest.fixture
def tls_serve(serve, tls_certs):
    """tls_serve(app=None, **kwargs): serve() with the test certificate."""
    def start(app=None, **kwargs):
        kwargs.setdefault("ssl_context", server_context(tls_certs.cert, tls_certs.key))
        return serve(app, **kwargs)
    return start


def wss(server) -> str:
    return f"wss://127.0.0.1:{server.port}/"


def trusting(certs) -> ssl.SSLContext:
    return client_context(certs.ca)


def tls_raw(port: int, certs, *, rcvbuf: int | None = None,
            context: ssl.SSLContext | None = None) -> RawClient:
    """A RawClient (tests/conftest.py) whose socket speaks TLS, handshake done."""
    client = RawClient.__new__(RawClient)
    RawClient.__init__(client, port)
    plain = client.sock
    if rcvbuf is not None:   # a new socket, the small window set before connecting
        plain.close()
        plain = socket.socket()
        plain.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        plain.settimeout(TIMEOUT)
        plain.connect(("127.0.0.1", port))
    plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.sock = (context or trusting(certs)).wrap_socket(plain, server_hostname="127.0.0.1")
    return client


def wait_until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        time.sleep(0.01)


def masked(opcode: int, payload: bytes = b"") -> bytes:
    return encode_frame(opcode, payload, mask_key=os.urandom(4))


class Recorder(WebSocketApp):
    """Echoes, and keeps each close code its on_close saw."""

    allowed_origins = {"*"}

    def __init__(self) -> None:
        self.closes: list[int] = []

    def on_message(self, ws, message):
        if message == "close 4000":
            ws.close(4000, "asked to")
        elif isinstance(message, str):
            ws.send_text(message)
        else:
            ws.send_binary(message)

    def on_close(self, ws, code, reason):
        self.closes.append(code)


# ---- the context -------------------------------------------------------------------------------

def test_the_default_server_context_has_a_tls_1_2_floor_and_offers_http_1_1(tls_certs):
    context = server_context(tls_certs.cert, tls_certs.key)
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and all(("GCM" in name or "CHACHA20" in name) and name.startswith("ECDHE")
                         for name in tls12), tls12


def test_a_certificate_with_its_key_in_the_same_file_loads(tls_certs):
    server_context(tls_certs.combined)


@pytest.mark.parametrize("case", ["missing", "key mismatch", "not pem", "no key"])
def test_an_unusable_certificate_or_key_is_one_line_of_error(tls_certs, tmp_path, case):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cert, key = {
        "missing": (tmp_path / "nowhere.pem", None),
        "key mismatch": (tls_certs.cert, tls_certs.wrong_host_key),
        "not pem": (junk, tls_certs.key),
        "no key": (tls_certs.cert, None),
    }[case]
    with pytest.raises(TLSConfigError) as error:
        server_context(cert, key)
    assert "\n" not in str(error.value) and len(str(error.value)) < 200


# ---- rawws client and server over wss ----------------------------------------------------------

def test_the_server_url_says_https(tls_serve):
    server = tls_serve()
    assert server.url == f"https://127.0.0.1:{server.port}/"


def test_a_text_message_comes_back_over_wss(tls_serve, tls_certs):
    server = tls_serve()
    with connect(wss(server), ssl_context=trusting(tls_certs), timeout=TIMEOUT) as ws:
        ws.send_text("héllo over TLS ✓")
        assert ws.recv(timeout=TIMEOUT) == "héllo over TLS ✓"


def test_a_binary_message_comes_back_over_wss(tls_serve, tls_certs):
    server = tls_serve()
    with connect(wss(server), ssl_context=trusting(tls_certs), timeout=TIMEOUT) as ws:
        ws.send_binary(bytes(range(256)) * 4)
        assert ws.recv(timeout=TIMEOUT) == bytes(range(256)) * 4


def test_a_16_mib_message_comes_back_whole_over_wss(tls_serve, tls_certs):
    server = tls_serve(max_message_size=16 * MIB)
    payload = os.urandom(MIB) * 16
    with connect(wss(server), ssl_context=trusting(tls_certs), timeout=30,
                 max_message_size=16 * MIB) as ws:
        ws.send_binary(payload)
        echoed = ws.recv(timeout=60)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()


def test_a_ping_over_wss_gets_its_pong(tls_serve, tls_certs):
    server = tls_serve()
    with connect(wss(server), ssl_context=trusting(tls_certs), timeout=TIMEOUT) as ws:
        assert ws.ping(b"are you there", timeout=TIMEOUT) is not None


def test_a_frame_written_one_byte_per_tls_record_is_read_whole(tls_serve, tls_certs):
    server = tls_serve()
    client = tls_raw(server.port, tls_certs)
    client.upgrade()
    for byte in masked(OP_TEXT, b"one record per byte"):
        client.sock.send(bytes([byte]))   # each SSL write is a record of its own
    frame = client.recv_frame()
    assert (frame.opcode, frame.payload) == (OP_TEXT, b"one record per byte")
    client.close()


def test_several_frames_in_one_tls_record_are_all_answered(tls_serve, tls_certs):
    server = tls_serve()
    client = tls_raw(server.port, tls_certs)
    client.upgrade()
    client.sock.send(masked(OP_TEXT, b"one") + masked(OP_PING, b"two") + masked(OP_TEXT, b"three"))
    got = [client.recv_frame() for _ in range(3)]
    assert [(f.opcode, f.payload) for f in got] == [(OP_TEXT, b"one"), (OP_PONG, b"two"),
                                                    (OP_TEXT, b"three")]
    client.close()


def test_the_request_may_come_in_the_same_packet_as_the_handshakes_end(tls_serve, tls_certs):
    # TLS 1.3: the client's Finished and its first application data can arrive together.
    server = tls_serve()
    client = tls_raw(server.port, tls_certs)
    request = build_request(f"127.0.0.1:{server.port}", "/", make_key())
    client.sock.sendall(request + masked(OP_BINARY, b"\x00\x01"))
    response, _ = client.read_response()
    assert response.status == 101
    assert client.recv_frame().payload == b"\x00\x01"
    client.close()


# ---- closing -----------------------------------------------------------------------------------

def test_a_client_close_ends_with_1000_on_both_sides(tls_serve, tls_certs):
    app = Recorder()
    server = tls_serve(app)
    ws = connect(wss(server), ssl_context=trusting(tls_certs), timeout=TIMEOUT)
    ws.close(1000, "done")
    assert ws.close_code == 1000
    wait_until(lambda: app.closes == [1000], what="on_close(1000)")


def test_a_server_close_reaches_the_client_with_its_code(tls_serve, tls_certs):
    server = tls_serve(Recorder())
    with connect(wss(server), ssl_context=trusting(tls_certs), timeout=TIMEOUT) as ws:
        ws.send_text("close 4000")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT)
    assert closed.value.code == 4000


def test_the_server_sends_close_notify_before_closing_tcp(tls_serve, tls_certs):
    server = tls_serve()
    client = tls_raw(server.port, tls_certs)
    client.sock.suppress_ragged_eofs = False   # a TCP close without close_notify would raise
    client.upgrade()
    client.send_frame(OP_CLOSE, struct.pack("!H", 1000))
    assert client.recv_frame().opcode == OP_CLOSE
    assert client.sock.recv(100) == b""        # close_notify: a clean TLS end, no SSLEOFError
    client.close()


def test_a_protocol_error_over_wss_is_closed_with_1002(tls_serve, tls_certs):
    server = tls_serve()
    client = tls_raw(server.port, tls_certs)
    client.upgrade()
    client.send_frame(OP_TEXT, b"unmasked", masked=False)   # §5.1: a client must mask
    assert client.recv_close()[0] == 1002
    client.close()


def test_a_client_that_drops_tcp_is_closed_as_1006(tls_serve, tls_certs):
    app = Recorder()
    server = tls_serve(app)
    client = tls_raw(server.port, tls_certs)
    client.upgrade()
    client.sock.close()   # no Close frame, no close_notify
    wait_until(lambda: app.closes == [1006], what="on_close(1006)")
    wait_until(lambda: not server.connections, what="the connection released")


def test_a_peer_that_vanishes_mid_record_costs_nothing(tls_serve, tls_certs, caplog):
    server = tls_serve()
    client = tls_raw(server.port, tls_certs)
    client.upgrade()
    # Half of a TLS record, written under the SSL layer (a second descriptor
    # on the same socket), then a reset.
    under = socket.socket(fileno=os.dup(client.sock.fileno()))
    with caplog.at_level(logging.DEBUG, logger="rawws"):
        under.sendall(b"\x17\x03\x03\x40\x00" + os.urandom(100))   # 16 KiB announced, 100 sent
        under.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.sock.close()
        under.close()   # the last descriptor: the reset goes out
        wait_until(lambda: not server.connections, what="the connection released")
        with connect(wss(server), ssl_context=trusting(tls_certs), timeout=TIMEOUT) as ws:
            ws.send_text("still here")
            assert ws.recv(timeout=TIMEOUT) == "still here"
    assert not [r for r in caplog.records if r.levelno > logging.INFO], caplog.text


def test_shutdown_sends_close_1001_over_wss(serve, tls_certs):
    server = serve(ssl_context=server_context(tls_certs.cert, tls_certs.key))
    ws = connect(wss(server), ssl_context=trusting(tls_certs), timeout=TIMEOUT)
    server.shutdown()
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=TIMEOUT)
    assert closed.value.code == 1001


# ---- the client verifies -----------------------------------------------------------------------

def test_the_client_refuses_a_certificate_from_a_ca_it_does_not_trust(tls_serve, tls_certs):
    server = tls_serve(ssl_context=server_context(tls_certs.untrusted_cert,
                                                  tls_certs.untrusted_key))
    with pytest.raises(ssl.SSLCertVerificationError) as error:
        connect(wss(server), ssl_context=trusting(tls_certs), timeout=TIMEOUT)
    assert "unable to get local issuer" in error.value.verify_message


def test_the_client_by_default_trusts_only_the_systems_cas(tls_serve):
    server = tls_serve()
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(wss(server), timeout=TIMEOUT)


def test_the_client_refuses_a_certificate_for_another_host_name(tls_serve, tls_certs):
    server = tls_serve(ssl_context=server_context(tls_certs.wrong_host_cert,
                                                  tls_certs.wrong_host_key))
    with pytest.raises(ssl.SSLCertVerificationError) as error:
        connect(wss(server), ssl_context=trusting(tls_certs), timeout=TIMEOUT)
    assert "mismatch" in error.value.verify_message.lower()


def test_the_client_checks_the_name_in_the_url_localhost(tls_serve, tls_certs):
    server = tls_serve()
    with connect(f"wss://localhost:{server.port}/", ssl_context=trusting(tls_certs),
                 timeout=TIMEOUT) as ws:
        ws.send_text("by name")
        assert ws.recv(timeout=TIMEOUT) == "by name"


# ---- the handshake, byte level -----------------------------------------------------------------

def test_the_server_agrees_on_alpn_http_1_1(tls_serve, tls_certs):
    server = tls_serve()
    context = trusting(tls_certs)
    context.set_alpn_protocols(["h2", "http/1.1"])   # what a browser offers
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as plain:
        with context.wrap_socket(plain, server_hostname="127.0.0.1") as sock:
            assert sock.selected_alpn_protocol() == "http/1.1"
            assert sock.version() in ("TLSv1.2", "TLSv1.3")


def test_files_are_served_over_https(serve, tls_certs, tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>over TLS</title>")
    server = serve(WebSocketApp(), web_root=tmp_path,
                   ssl_context=server_context(tls_certs.cert, tls_certs.key))
    with urllib.request.urlopen(server.url, context=trusting(tls_certs), timeout=TIMEOUT) as answer:
        assert answer.status == 200
        assert b"over TLS" in answer.read()


def handshake_fails(port: int, context: ssl.SSLContext) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as plain:
        try:
            with context.wrap_socket(plain, server_hostname="127.0.0.1") as sock:
                sock.recv(1)
        except (ssl.SSLError, ConnectionError):
            return True
    return False


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_a_client_limited_to_tls_1_1_is_refused_with_one_info_line(tls_serve, tls_certs, caplog):
    server = tls_serve()
    context = trusting(tls_certs)
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")   # let this client offer TLS 1.1 at all
    with caplog.at_level(logging.DEBUG, logger="rawws"):
        assert handshake_fails(server.port, context)
        wait_until(lambda: not server.connections, what="the connection closed")
    failed = [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].levelno == logging.INFO, caplog.text
    assert "version" in failed[0].getMessage()


def test_a_client_with_no_cipher_in_common_is_refused_with_one_info_line(tls_serve, tls_certs,
                                                                         caplog):
    server = tls_serve()
    context = trusting(tls_certs)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("AES128-SHA")   # RSA key exchange, CBC: not in the server's list
    with caplog.at_level(logging.DEBUG, logger="rawws"):
        assert handshake_fails(server.port, context)
        wait_until(lambda: not server.connections, what="the connection closed")
    failed = [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].levelno == logging.INFO, caplog.text


# ---- hostile clients ---------------------------------------------------------------------------

def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_plain_http_to_the_tls_port_is_closed_with_one_info_line(tls_serve, caplog):
    server = tls_serve()
    with caplog.at_level(logging.DEBUG, logger="rawws"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = read_to_eof(sock)
        wait_until(lambda: not server.connections, what="the connection closed")
    assert not answer.startswith(b"HTTP/")   # at most a TLS alert
    lines = [r for r in caplog.records if r.name.startswith("rawws")]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO, caplog.text
    assert "plain HTTP" in lines[0].getMessage()


def test_garbage_to_the_tls_port_is_closed_and_the_server_serves_on(tls_serve, tls_certs, caplog):
    server = tls_serve()
    with caplog.at_level(logging.DEBUG, logger="rawws"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            sock.sendall(os.urandom(4096))
            read_to_eof(sock)
        with connect(wss(server), ssl_context=trusting(tls_certs), timeout=TIMEOUT) as ws:
            ws.send_text("unharmed")
            assert ws.recv(timeout=TIMEOUT) == "unharmed"
    assert not [r for r in caplog.records if r.levelno > logging.INFO], caplog.text


def client_hello(certs) -> bytes:
    """The bytes a real ClientHello takes, made by an ssl object on memory BIOs."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = trusting(certs).wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_a_client_hello_then_silence_is_dropped_at_the_handshake_timeout(tls_serve, tls_certs):
    server = tls_serve(handshake_timeout=1.0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(client_hello(tls_certs))
        started = time.monotonic()
        read_to_eof(sock)   # the ServerHello and the rest, then the close
        waited = time.monotonic() - started
    assert 0.5 < waited < TIMEOUT


def test_tcp_connections_that_never_start_tls_count_toward_the_cap(tls_serve, tls_certs):
    server = tls_serve(max_connections=3, handshake_timeout=30.0)
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
            for _ in range(3)]
    wait_until(lambda: len(server.connections) == 3, what="three connections accepted")
    with pytest.raises((ssl.SSLError, ConnectionError, ConnectionClosed, OSError)):
        connect(wss(server), ssl_context=trusting(tls_certs), timeout=TIMEOUT)
    for sock in idle:
        sock.close()


def chat_join(conn, name: str) -> None:
    conn.send_text(json.dumps({"type": m.JOIN, "payload": {"username": name}}))


def wait_for_type(conn, kind: str, timeout: float = TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(conn.recv(timeout=max(0.0, deadline - time.monotonic())))
        if message["type"] == kind:
            return message


def test_100_connections_that_never_start_tls_delay_no_chat_and_are_dropped(chat_server,
                                                                           tls_certs):
    server, _ = chat_server(ssl_context=server_context(tls_certs.cert, tls_certs.key),
                            handshake_timeout=2.0)
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
            for _ in range(100)]
    try:
        with connect(wss(server), subprotocols=[m.PROTOCOL_V2], ssl_context=trusting(tls_certs),
                     timeout=TIMEOUT) as user:
            chat_join(user, "alice")
            wait_for_type(user, m.WELCOME)
            for number in range(5):
                started = time.monotonic()
                user.send_text(json.dumps({"type": m.MESSAGE,
                                           "payload": {"message": f"round {number}"}}))
                assert wait_for_type(user, m.MESSAGE)["payload"]["message"] == f"round {number}"
                assert time.monotonic() - started < 1.0
            # The 100 end at the handshake timeout; the user stays.
            wait_until(lambda: len(server.connections) == 1, timeout=15.0,
                       what="the 100 silent connections dropped")
            for sock in idle:
                assert read_to_eof(sock) == b""
    finally:
        for sock in idle:
            sock.close()


def test_a_reader_that_stops_mid_record_is_dropped_at_the_send_buffer_cap(chat_server, tls_certs):
    server, _ = chat_server(Limits(max_message_length=60_000, rate=0),
                            ssl_context=server_context(tls_certs.cert, tls_certs.key),
                            max_write_buffer=256 * 1024)
    sleeper = tls_raw(server.port, tls_certs, rcvbuf=4096)
    sleeper.upgrade(subprotocols=[m.PROTOCOL_V1])
    sleeper.send_frame(OP_TEXT, json.dumps({"type": m.JOIN,
                                            "payload": {"username": "sleeper"}}).encode())
    sleeper.sock.recv(10)   # ten bytes of the first record's plaintext, then never again
    with connect(wss(server), subprotocols=[m.PROTOCOL_V2], ssl_context=trusting(tls_certs),
                 timeout=TIMEOUT) as talker:
        chat_join(talker, "talker")
        wait_for_type(talker, m.WELCOME)
        deadline = time.monotonic() + 30
        number = 0
        while len(server.connections) > 1:
            assert time.monotonic() < deadline, "the sleeper was never dropped"
            assert number < 2000, "2000 broadcasts (120 MB) and the sleeper is still there"
            text = f"{number:04d}" + "x" * 59_996
            talker.send_text(json.dumps({"type": m.MESSAGE, "payload": {"message": text}}))
            assert wait_for_type(talker, m.MESSAGE)["payload"]["message"] == text
            number += 1
        talker.send_text(json.dumps({"type": m.MESSAGE, "payload": {"message": "after"}}))
        assert wait_for_type(talker, m.MESSAGE)["payload"]["message"] == "after"
    sleeper.close()


# ---- the trace -----------------------------------------------------------------------------------

class Lines:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_the_trace_says_tls_and_shows_the_decrypted_bytes(tls_serve, tls_certs):
    stream = Lines()
    server = tls_serve(tracer=WireTracer(stream))
    with connect(wss(server), ssl_context=trusting(tls_certs), timeout=TIMEOUT) as ws:
        ws.send_text("traced")
        assert ws.recv(timeout=TIMEOUT) == "traced"
    wait_until(lambda: "CLOSE" in stream.text, what="the close traced")
    assert "TLS handshake done: TLSv1.3" in stream.text
    assert "GET / HTTP/1.1" in stream.text
    assert '"traced"' in stream.text


# ---- the origin over TLS -------------------------------------------------------------------------

def test_over_tls_the_chat_accepts_its_https_origin(chat_server, tls_certs):
    server, _ = chat_server(ssl_context=server_context(tls_certs.cert, tls_certs.key))
    client = tls_raw(server.port, tls_certs)
    client.upgrade(origin=f"https://127.0.0.1:{server.port}", subprotocols=[m.PROTOCOL_V2])
    client.close()


def test_over_tls_the_chat_refuses_the_http_origin_of_the_same_host(chat_server, tls_certs):
    server, _ = chat_server(ssl_context=server_context(tls_certs.cert, tls_certs.key))
    client = tls_raw(server.port, tls_certs)
    client.send(build_request(f"127.0.0.1:{server.port}", "/", make_key(),
                              subprotocols=[m.PROTOCOL_V2], origin=f"http://127.0.0.1:{server.port}"))
    response, _ = client.read_response()
    assert response.status == 403
    client.close()
