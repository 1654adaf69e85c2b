"""chat.app: the handshake policy (Origin, subprotocols) and the wiring of
connections to the room, with fake requests and handles; no sockets."""
import json

import pytest

from chat import messages as m
from chat.app import REFUSAL_BODY, ChatApp
from rawws.origin import parse_origin as normalize_origin
from chat.room import Room


class FakeHeaders:
    def __init__(self, **headers):
        self._h = {k.lower(): v for k, v in headers.items()}

    def get(self, name, default=None):
        return self._h.get(name.lower(), default)


class FakeRequest:
    def __init__(self, host="127.0.0.1:3490", scheme="http"):
        self.headers = FakeHeaders(Host=host) if host is not None else FakeHeaders()
        self.scheme = scheme


class FakeWS:
    shared_deflate_bits = None   # no permessage-deflate: plain frames

    def __init__(self, subprotocol):
        self.subprotocol = subprotocol
        self.remote = ("127.0.0.1", 50000)
        self.path = "/"
        self.open = True
        self.received = []
        self.closed = None

    def send_text(self, text):
        self.received.append(json.loads(text))
        return True

    def send_frame_bytes(self, frame):
        self.received.append(json.loads(frame[2:].decode()))   # short frames in these tests
        return True

    def close(self, code=1000, reason=""):
        self.closed = (code, reason)
        self.open = False


# --- origins ------------------------------------------------------------------------------

@pytest.mark.parametrize("origin, expected", [
    ("http://localhost:3490", ("http", "localhost", 3490)),
    ("HTTP://LocalHost:3490", ("http", "localhost", 3490)),
    ("http://example.com", ("http", "example.com", 80)),
    ("https://example.com", ("https", "example.com", 443)),
    ("http://example.com/", ("http", "example.com", 80)),
    ("http://[::1]:3490", ("http", "[::1]", 3490)),
    ("http://[::1]", ("http", "[::1]", 80)),
])
def test_normalize_origin(origin, expected):
    assert normalize_origin(origin) == expected


@pytest.mark.parametrize("origin", [
    "null", "", "localhost:3490", "http://", "http://host:", "http://host:port",
    "http://host:99999", "http://evil@localhost:3490", "http://host/path", "http://[::1",
    "http://host:\u0663",
])
def test_normalize_origin_refuses_what_is_not_an_origin(origin):
    assert normalize_origin(origin) is None


def test_no_origin_header_is_accepted():
    assert ChatApp().check_origin(None, FakeRequest())


@pytest.mark.parametrize("origin, host", [
    ("http://127.0.0.1:3490", "127.0.0.1:3490"),
    ("http://LOCALHOST:3490", "localhost:3490"),
    ("http://localhost:3490", "LocalHost:3490"),
    ("http://example.com", "example.com"),
    ("http://example.com:80", "example.com"),
    ("http://example.com", "example.com:80"),
    ("http://[::1]:3490", "[::1]:3490"),
])
def test_the_servers_own_origin_is_accepted(origin, host):
    assert ChatApp().check_origin(origin, FakeRequest(host))


@pytest.mark.parametrize("origin, host", [
    ("http://evil.example", "127.0.0.1:3490"),
    ("http://127.0.0.1:3491", "127.0.0.1:3490"),
    ("https://127.0.0.1:3490", "127.0.0.1:3490"),
    ("http://127.0.0.1", "127.0.0.1:3490"),
    ("null", "127.0.0.1:3490"),
    ("http://127.0.0.1:3490", None),
])
def test_any_other_origin_is_refused(origin, host):
    assert not ChatApp().check_origin(origin, FakeRequest(host))


def test_over_tls_the_servers_own_origin_is_its_https_origin():
    assert ChatApp().check_origin("https://127.0.0.1:3490", FakeRequest(scheme="https"))
    assert ChatApp().check_origin("https://chat.example", FakeRequest("chat.example", "https"))
    assert not ChatApp().check_origin("http://127.0.0.1:3490", FakeRequest(scheme="https"))


def test_allowed_origin_adds_an_origin_compared_as_an_origin():
    app = ChatApp(allowed_origins=["https://Chat.Example.com"])
    assert app.check_origin("https://chat.example.com:443", FakeRequest())
    assert app.check_origin("http://127.0.0.1:3490", FakeRequest())   # its own still ok
    assert not app.check_origin("https://other.example.com", FakeRequest())


def test_allowed_origin_star_accepts_any_origin():
    app = ChatApp(allowed_origins=["*"])
    assert app.check_origin("http://evil.example", FakeRequest())
    assert app.check_origin("null", FakeRequest())


def test_allowed_origin_null_can_be_listed_explicitly():
    assert ChatApp(allowed_origins=["null"]).check_origin("null", FakeRequest())


# --- subprotocols ------------------------------------------------------------------------------

def test_subprotocols_are_required_v2_first():
    app = ChatApp()
    assert app.subprotocol_required
    assert app.subprotocols == (m.PROTOCOL_V2, m.PROTOCOL_V1)


@pytest.mark.parametrize("offered, chosen", [
    ([m.PROTOCOL_V1, m.PROTOCOL_V2], m.PROTOCOL_V2),
    ([m.PROTOCOL_V2, m.PROTOCOL_V1], m.PROTOCOL_V2),
    (["chat", m.PROTOCOL_V1], m.PROTOCOL_V1),
    (["chat", "superchat"], None),
    ([], None),
])
def test_select_subprotocol_prefers_v2(offered, chosen):
    assert ChatApp().select_subprotocol(offered, FakeRequest()) == chosen


def test_refusal_body_names_both_protocols():
    body = ChatApp().subprotocol_refusal()
    assert body == REFUSAL_BODY
    assert m.PROTOCOL_V1 in body and m.PROTOCOL_V2 in body


# --- wiring ------------------------------------------------------------------------------------

def test_connections_reach_the_room_with_their_version():
    app = ChatApp(room=Room())
    v1, v2 = FakeWS(m.PROTOCOL_V1), FakeWS(m.PROTOCOL_V2)
    app.on_open(v1)
    app.on_open(v2)
    assert app.room.member(v1).version == 1 and app.room.member(v2).version == 2


def test_text_and_binary_messages_go_to_the_room():
    app = ChatApp()
    ws = FakeWS(m.PROTOCOL_V2)
    app.on_open(ws)
    app.on_message(ws, '{"type": "chat-join", "payload": {"username": "a"}}')
    app.on_message(ws, b"\x00")
    assert [msg["type"] for msg in ws.received] == [m.WELCOME, m.JOIN, m.ERROR]
    assert ws.received[-1]["payload"]["code"] == m.BINARY_UNSUPPORTED


def test_on_close_leaves_the_room_once():
    app = ChatApp()
    a, b = FakeWS(m.PROTOCOL_V2), FakeWS(m.PROTOCOL_V1)
    for ws, name in ((a, "a"), (b, "b")):
        app.on_open(ws)
        app.on_message(ws, json.dumps({"type": "chat-join", "payload": {"username": name}}))
    b.received.clear()
    app.on_close(a, 1000, "")
    app.on_close(a, 1006, "")
    assert b.received == [{"type": "chat-leave", "payload": {"username": "a"}}]
    assert len(app.room) == 1


def test_a_connection_without_a_chat_subprotocol_is_closed_1008():
    app = ChatApp()
    ws = FakeWS(None)
    app.on_open(ws)
    assert ws.closed[0] == 1008 and len(app.room) == 0


def test_bad_input_logs_no_traceback(caplog):
    app = ChatApp()
    ws = FakeWS(m.PROTOCOL_V2)
    app.on_open(ws)
    with caplog.at_level("DEBUG", logger="chat"):
        for text in ("{", "[" * 100_000, '{"type": 1}', '{"type": "x", "payload": {}}'):
            app.on_message(ws, text)
    assert all(record.exc_info is None for record in caplog.records)
    assert [msg["payload"]["code"] for msg in ws.received] == [
        m.BAD_JSON, m.BAD_JSON, m.BAD_ENVELOPE, m.UNKNOWN_TYPE]
