"""rawws.handshake: the whole opening handshake without I/O, both roles.

`server_handshake(request, ServerPolicy(app, ...))` answers a parsed request
with a `Refusal` or an `Acceptance`; a `ClientHandshake` writes the request
and checks the answer. Every answer is compared byte for byte with what goes
on the wire, and the last tests run a client and a server against each other
entirely in memory.
"""
from __future__ import annotations

import socket

import pytest

from rawws.deflate import DeflateOptions, DeflateParams
from rawws.errors import HandshakeError
from rawws.handshake import (Acceptance, ClientHandshake, Established, Refusal, ServerPolicy,
                             server_handshake)
from rawws.http import Request, RequestParser, Response, parse_response_head
from rawws.net.server import WebSocketApp
from rawws.protocol import (DEFAULT_MAX_MESSAGE_SIZE, BinaryMessage, Role, TextMessage,
                            WebSocketConnection)

# §1.3's sample handshake, as tests/test_handshake.py spells it out.
from tests.test_handshake import RFC_ACCEPT, RFC_KEY, RFC_REQUEST, RFC_RESPONSE  # noqa: E402

# The 101 to a request without subprotocols or extensions.
PLAIN_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"\r\n"
)


class RfcApp(WebSocketApp):
    """The server of §1.3: speaks chat, trusts the page at http://example.com."""

    subprotocols = ("chat",)
    allowed_origins = ("http://example.com",)


class ChatLikeApp(WebSocketApp):
    """Two subprotocols, v2 preferred, one required (as the chat app has them)."""

    subprotocols = ("proto-v2", "proto-v1")
    subprotocol_required = True

    def subprotocol_refusal(self) -> str:
        return "Offer proto-v2 or proto-v1."


def parse_request(data: bytes) -> Request:
    parser = RequestParser(require_host=False)
    parser.feed(data)
    request = parser.next_request()
    assert request is not None, "incomplete request head"
    return request


def upgrade(*extra_lines: bytes, method: bytes = b"GET", version: bytes = b"HTTP/1.1",
            drop: tuple[bytes, ...] = ()) -> Request:
    """A valid upgrade request with the RFC key, plus `extra_lines`, less the `drop` headers."""
    lines = [b"Host: server.example.com", b"Upgrade: websocket", b"Connection: Upgrade",
             b"Sec-WebSocket-Key: " + RFC_KEY.encode(), b"Sec-WebSocket-Version: 13"]
    lines = [line for line in lines if line.split(b":")[0] not in drop] + list(extra_lines)
    return parse_request(b"\r\n".join([method + b" /chat " + version] + lines) + b"\r\n\r\n")


def accepted(request: Request, policy: ServerPolicy) -> Acceptance:
    outcome = server_handshake(request, policy)
    assert isinstance(outcome, Acceptance), outcome
    return outcome


def refused(request: Request, policy: ServerPolicy) -> Refusal:
    outcome = server_handshake(request, policy)
    assert isinstance(outcome, Refusal), outcome
    return outcome


def plain_text(status_line: bytes, body: bytes, *headers: bytes) -> bytes:
    """The bytes of a refusal: status, its own headers, then plain text and a close."""
    return b"\r\n".join([status_line, *headers,
                         b"Content-Type: text/plain; charset=utf-8",
                         b"Connection: close",
                         b"Content-Length: %d" % len(body),
                         b"", body])


# ---- the server: §1.3's handshake through the whole accept path ------------

def test_the_rfc_sample_request_gets_the_rfc_sample_response_byte_for_byte():
    acceptance = accepted(parse_request(RFC_REQUEST), ServerPolicy(RfcApp()))
    assert acceptance.response == RFC_RESPONSE
    assert acceptance.subprotocol == "chat"


def test_an_acceptance_carries_a_server_connection_with_the_policy_limits():
    policy = ServerPolicy(RfcApp(), max_message_size=4096, max_frame_size=1024)
    connection = accepted(parse_request(RFC_REQUEST), policy).connection
    assert connection.role is Role.SERVER
    assert connection.max_message_size == 4096
    assert connection.max_frame_size == 1024
    assert connection.deflate is None          # no offer, no compression


def test_the_policy_defaults_are_the_protocol_defaults():
    connection = accepted(upgrade(), ServerPolicy(WebSocketApp())).connection
    assert connection.max_message_size == DEFAULT_MAX_MESSAGE_SIZE
    assert connection.max_frame_size == DEFAULT_MAX_MESSAGE_SIZE


def test_no_subprotocol_offered_none_required_is_a_101_without_the_header():
    acceptance = accepted(upgrade(), ServerPolicy(WebSocketApp()))
    assert acceptance.response == PLAIN_101
    assert acceptance.subprotocol is None


def test_a_request_without_origin_is_accepted_by_default():
    # A non-browser client sends no Origin; the default hook lets it in.
    assert accepted(upgrade(), ServerPolicy(RfcApp())).response == PLAIN_101


# ---- the server's refusals, each as it goes on the wire ---------------------

def test_a_post_is_refused_with_405_and_allow_get():
    refusal = refused(upgrade(method=b"POST"), ServerPolicy(WebSocketApp()))
    assert refusal.status == 405
    assert refusal.error.reason == "a WebSocket handshake uses GET"
    assert refusal.response == plain_text(b"HTTP/1.1 405 Method Not Allowed",
                                          b"a WebSocket handshake uses GET\n", b"Allow: GET")


def test_a_missing_version_is_refused_with_426_naming_version_13():
    refusal = refused(upgrade(drop=(b"Sec-WebSocket-Version",)), ServerPolicy(WebSocketApp()))
    assert refusal.status == 426
    reason = b"unsupported or missing Sec-WebSocket-Version; this server speaks 13"
    assert refusal.response == plain_text(b"HTTP/1.1 426 Upgrade Required", reason + b"\n",
                                          b"Sec-WebSocket-Version: 13")


def test_version_8_is_refused_with_426_too():
    request = upgrade(b"Sec-WebSocket-Version: 8", drop=(b"Sec-WebSocket-Version",))
    assert refused(request, ServerPolicy(WebSocketApp())).status == 426


@pytest.mark.parametrize("changes, reason", [
    ({"version": b"HTTP/1.0"}, b"a WebSocket handshake needs HTTP/1.1"),
    ({"drop": (b"Host",)}, b"missing or repeated Host header"),
    ({"drop": (b"Upgrade",)}, b"Upgrade header does not name websocket"),
    ({"drop": (b"Connection",)}, b"Connection header does not include upgrade"),
    ({"drop": (b"Sec-WebSocket-Key",)}, b"missing or repeated Sec-WebSocket-Key header"),
    ({"drop": (b"Sec-WebSocket-Key",), "extra": (b"Sec-WebSocket-Key: c2hvcnQ=",)},
     b"Sec-WebSocket-Key is not 16 bytes in base64"),
], ids=["http/1.0", "no host", "no upgrade", "no connection", "no key", "short key"])
def test_a_malformed_request_is_refused_with_400_and_its_reason(changes, reason):
    request = upgrade(*changes.pop("extra", ()), **changes)
    refusal = refused(request, ServerPolicy(WebSocketApp()))
    assert refusal.status == 400
    assert refusal.error.reason == reason.decode()
    assert refusal.response == plain_text(b"HTTP/1.1 400 Bad Request", reason + b"\n")


def test_a_foreign_origin_is_refused_with_403():
    request = upgrade(b"Origin: http://evil.example")
    refusal = refused(request, ServerPolicy(WebSocketApp()))
    assert refusal.status == 403
    assert refusal.error.reason == "origin http://evil.example is not allowed"
    assert refusal.response == plain_text(b"HTTP/1.1 403 Forbidden",
                                          b"origin http://evil.example is not allowed\n")


def test_no_fitting_subprotocol_is_refused_with_400_and_the_apps_body():
    request = upgrade(b"Sec-WebSocket-Protocol: chat, superchat")
    refusal = refused(request, ServerPolicy(ChatLikeApp()))
    assert refusal.status == 400
    assert refusal.error.reason == "no supported subprotocol offered"   # for the log
    assert refusal.response == plain_text(b"HTTP/1.1 400 Bad Request",
                                          b"Offer proto-v2 or proto-v1.\n")


def test_the_default_subprotocol_refusal_names_the_supported_ones():
    class App(WebSocketApp):
        subprotocols = ("b", "a")
        subprotocol_required = True

    refusal = refused(upgrade(), ServerPolicy(App()))
    body = b"No supported WebSocket subprotocol offered. Supported: b, a\n"
    assert refusal.response == plain_text(b"HTTP/1.1 400 Bad Request", body)


def test_a_malformed_extensions_header_is_refused_with_400():
    refusal = refused(upgrade(b"Sec-WebSocket-Extensions: permessage-deflate;;"),
                      ServerPolicy(WebSocketApp()))
    assert refusal.status == 400
    assert refusal.error.reason.startswith("malformed Sec-WebSocket-Extensions")
    assert refusal.response.startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_with_compression_off_the_extensions_header_is_not_read():
    request = upgrade(b"Sec-WebSocket-Extensions: permessage-deflate;;")
    assert accepted(request, ServerPolicy(WebSocketApp(), compression=None)).response == PLAIN_101


def test_the_request_is_checked_before_the_apps_hooks_run():
    class Watching(WebSocketApp):
        called = False

        def check_origin(self, origin, request):
            Watching.called = True
            return True

    assert refused(upgrade(method=b"PUT"), ServerPolicy(Watching())).status == 405
    assert not Watching.called


def test_the_origin_is_checked_before_the_subprotocol():
    request = upgrade(b"Origin: http://evil.example")   # and no subprotocol
    assert refused(request, ServerPolicy(ChatLikeApp())).status == 403


# ---- the application's hooks -----------------------------------------------

class SubdomainApp(WebSocketApp):
    """An Origin policy of its own: any page under example.com, seen with its request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str]] = []

    def check_origin(self, origin, request):
        self.seen.append((origin, request.target))
        return origin is not None and origin.endswith(".example.com")


def test_the_origin_hook_decides_and_sees_the_request():
    app = SubdomainApp()
    policy = ServerPolicy(app)
    assert accepted(upgrade(b"Origin: https://www.example.com"), policy).response == PLAIN_101
    assert refused(upgrade(b"Origin: https://example.org"), policy).status == 403
    assert refused(upgrade(), policy).status == 403        # this app wants an Origin
    assert app.seen == [("https://www.example.com", "/chat"), ("https://example.org", "/chat"),
                        (None, "/chat")]


def test_allowed_origins_adds_to_the_servers_own():
    policy = ServerPolicy(RfcApp())
    assert isinstance(server_handshake(parse_request(RFC_REQUEST), policy), Acceptance)
    own = upgrade(b"Origin: http://server.example.com")
    assert isinstance(server_handshake(own, policy), Acceptance)
    assert refused(upgrade(b"Origin: http://example.org"), policy).status == 403


def test_a_hook_may_refuse_with_a_status_of_its_own():
    class Private(WebSocketApp):
        def check_origin(self, origin, request):
            if request.headers.get("Authorization") is None:
                raise HandshakeError(401, "log in first", [("WWW-Authenticate", "Bearer")])
            return True

    refusal = refused(upgrade(), ServerPolicy(Private()))
    assert refusal.response == plain_text(b"HTTP/1.1 401 Unauthorized", b"log in first\n",
                                          b"WWW-Authenticate: Bearer")
    assert isinstance(server_handshake(upgrade(b"Authorization: Bearer x"),
                                       ServerPolicy(Private())), Acceptance)


def test_a_bug_in_a_hook_propagates():
    class Broken(WebSocketApp):
        def select_subprotocol(self, offered, request):
            raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        server_handshake(upgrade(), ServerPolicy(Broken()))


def test_the_servers_preference_wins_over_the_clients_order():
    request = upgrade(b"Sec-WebSocket-Protocol: proto-v1, proto-v2")
    acceptance = accepted(request, ServerPolicy(ChatLikeApp()))
    assert acceptance.subprotocol == "proto-v2"
    assert b"\r\nSec-WebSocket-Protocol: proto-v2\r\n" in acceptance.response


def test_any_offered_subprotocol_is_found_not_only_the_first():
    request = upgrade(b"Sec-WebSocket-Protocol: other", b"Sec-WebSocket-Protocol: x, proto-v1")
    assert accepted(request, ServerPolicy(ChatLikeApp())).subprotocol == "proto-v1"


def test_a_select_hook_gets_the_offer_in_the_clients_order():
    class ClientFirst(WebSocketApp):
        def __init__(self) -> None:
            self.offers: list[list[str]] = []

        def select_subprotocol(self, offered, request):
            self.offers.append(offered)
            return offered[0] if offered else None

    app = ClientFirst()
    request = upgrade(b"Sec-WebSocket-Protocol: b, a", b"Sec-WebSocket-Protocol: c")
    assert accepted(request, ServerPolicy(app)).subprotocol == "b"
    assert app.offers == [["b", "a", "c"]]


def test_any_object_with_the_four_hooks_is_an_app():
    class Hooks:
        subprotocol_required = False

        def check_origin(self, origin, request):
            return True

        def select_subprotocol(self, offered, request):
            return "superchat" if "superchat" in offered else None

        def subprotocol_refusal(self):
            return "never"

    acceptance = accepted(parse_request(RFC_REQUEST), ServerPolicy(Hooks()))
    assert acceptance.response == RFC_RESPONSE.replace(b"Protocol: chat", b"Protocol: superchat")


# ---- permessage-deflate, agreed and declined ---------------------------------

OFFER = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"


def test_permessage_deflate_is_agreed_on_the_first_offer_it_can_honour():
    acceptance = accepted(upgrade(OFFER), ServerPolicy(WebSocketApp()))
    assert acceptance.response == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
        b"\r\n")
    deflate = acceptance.connection.deflate
    assert deflate is not None and deflate.params == DeflateParams()


def test_the_servers_deflate_options_shape_its_answer():
    policy = ServerPolicy(WebSocketApp(), compression=DeflateOptions(
        server_no_context_takeover=True, client_max_window_bits=10))
    acceptance = accepted(upgrade(OFFER), policy)
    assert (b"\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
            b"client_max_window_bits=10\r\n") in acceptance.response
    deflate = acceptance.connection.deflate
    assert deflate.params == DeflateParams(server_no_context_takeover=True,
                                           client_max_window_bits=10)
    assert deflate.options is policy.compression
    assert deflate.shared_window_bits == 15   # the server resets its window: broadcastable


def test_permessage_deflate_is_declined_when_the_server_has_it_off():
    acceptance = accepted(upgrade(OFFER), ServerPolicy(WebSocketApp(), compression=None))
    assert acceptance.response == PLAIN_101
    assert acceptance.connection.deflate is None


def test_an_offer_the_server_cannot_honour_is_declined_not_refused():
    request = upgrade(b"Sec-WebSocket-Extensions: permessage-deflate; unknown_param, x-other")
    acceptance = accepted(request, ServerPolicy(WebSocketApp()))
    assert acceptance.response == PLAIN_101
    assert acceptance.connection.deflate is None


def test_a_later_offer_is_taken_when_the_first_cannot_be():
    request = upgrade(b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=99, "
                      b"permessage-deflate; server_max_window_bits=12")
    acceptance = accepted(request, ServerPolicy(WebSocketApp()))
    assert (b"\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12\r\n"
            in acceptance.response)
    assert acceptance.connection.deflate.params.server_max_window_bits == 12


# ---- the client: its request ------------------------------------------------

def test_the_client_writes_the_rfc_sample_request():
    client = ClientHandshake("server.example.com", "/chat", subprotocols=["chat", "superchat"],
                             origin="http://example.com", key=RFC_KEY)
    assert client.request == (
        b"GET /chat HTTP/1.1\r\n"
        b"Host: server.example.com\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: chat, superchat\r\n"
        b"Origin: http://example.com\r\n"
        b"\r\n")


def test_the_client_request_offers_deflate_and_adds_extra_headers():
    client = ClientHandshake("h:9001", "/?room=1", compression=DeflateOptions(
        client_no_context_takeover=True), headers=[("Authorization", "Bearer x")], key=RFC_KEY)
    assert client.request == (
        b"GET /?room=1 HTTP/1.1\r\n"
        b"Host: h:9001\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; "
        b"client_max_window_bits\r\n"
        b"Authorization: Bearer x\r\n"
        b"\r\n")


def test_the_client_key_is_fresh_each_time():
    first, second = ClientHandshake("h"), ClientHandshake("h")
    assert first.key != second.key
    assert b"Sec-WebSocket-Key: " + first.key.encode() + b"\r\n" in first.request


def test_a_header_with_a_line_break_is_refused_before_any_bytes():
    with pytest.raises(ValueError):
        ClientHandshake("h", headers=[("X-Evil", "a\r\nInjected: yes")])


# ---- the client: its checks of the answer -----------------------------------

def rfc_client(**options) -> ClientHandshake:
    return ClientHandshake("server.example.com", "/chat", subprotocols=["chat", "superchat"],
                           key=RFC_KEY, **options)


def response(data: bytes) -> Response:
    return parse_response_head(data)


def test_the_client_accepts_the_rfc_sample_response():
    established = rfc_client(max_message_size=5000, max_frame_size=100).receive_response(
        response(RFC_RESPONSE))
    assert isinstance(established, Established)
    assert established.subprotocol == "chat"
    connection = established.connection
    assert connection.role is Role.CLIENT
    assert (connection.max_message_size, connection.max_frame_size) == (5000, 100)
    assert connection.deflate is None


def client_refusal(client: ClientHandshake, data: bytes) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        client.receive_response(response(data))
    return info.value


@pytest.mark.parametrize("data, status, reason", [
    (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", 403, "server answered 403 Forbidden"),
    (RFC_RESPONSE.replace(b"Upgrade: websocket\r\n", b""), 101, "101 without Upgrade: websocket"),
    (RFC_RESPONSE.replace(b"Connection: Upgrade\r\n", b""), 101, "101 without Connection: Upgrade"),
    (RFC_RESPONSE.replace(RFC_ACCEPT.encode(), b"x3JJHMbDL1EzLkh9GBhXDw=="), 101,
     "wrong Sec-WebSocket-Accept"),
    (RFC_RESPONSE.replace(b"Protocol: chat", b"Protocol: other"), 101,
     "server chose a subprotocol that was not offered: ['other']"),
    (RFC_RESPONSE.replace(b"Protocol: chat", b"Protocol: chat, superchat"), 101,
     "server chose a subprotocol that was not offered: ['chat', 'superchat']"),
    (RFC_RESPONSE.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
     101, "server chose an extension that was not offered"),
], ids=["403", "no upgrade", "no connection", "wrong accept", "unoffered subprotocol",
        "two subprotocols", "unoffered extension"])
def test_the_client_refuses_a_bad_answer(data, status, reason):
    error = client_refusal(rfc_client(), data)
    assert (error.status, error.reason) == (status, reason)


def test_a_subprotocol_is_refused_when_the_client_offered_none():
    error = client_refusal(ClientHandshake("h", key=RFC_KEY), RFC_RESPONSE)
    assert error.reason == "server chose a subprotocol that was not offered: ['chat']"


def with_extensions(value: bytes) -> bytes:
    return PLAIN_101.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: " + value + b"\r\n\r\n")


def test_the_client_takes_the_servers_deflate_answer():
    client = ClientHandshake("h", key=RFC_KEY, compression=DeflateOptions())
    established = client.receive_response(response(with_extensions(
        b"permessage-deflate; server_no_context_takeover; client_max_window_bits=9")))
    assert established.connection.deflate.params == DeflateParams(
        server_no_context_takeover=True, client_max_window_bits=9)


def test_the_client_goes_uncompressed_when_the_server_declines():
    client = ClientHandshake("h", key=RFC_KEY, compression=DeflateOptions())
    assert client.receive_response(response(PLAIN_101)).connection.deflate is None


@pytest.mark.parametrize("answer", [
    b"x-webkit-deflate-frame",
    b"permessage-deflate, permessage-deflate",
    b"permessage-deflate; client_max_window_bits",          # needs a value in an answer
    b"permessage-deflate; server_max_window_bits=16",
    b"permessage-deflate; unknown",
])
def test_the_client_refuses_a_deflate_answer_its_offer_did_not_allow(answer):
    client = ClientHandshake("h", key=RFC_KEY, compression=DeflateOptions())
    error = client_refusal(client, with_extensions(answer))
    assert error.status == 101
    assert error.reason.startswith("bad permessage-deflate answer")


def test_the_client_refuses_a_bigger_window_than_it_offered():
    client = ClientHandshake("h", key=RFC_KEY, compression=DeflateOptions(
        server_max_window_bits=10))
    error = client_refusal(client, with_extensions(b"permessage-deflate"))
    assert error.reason == ("bad permessage-deflate answer: "
                            "server_max_window_bits was offered and not in the answer")


# ---- a client and a server, in memory ---------------------------------------

def handshake_in_memory(client: ClientHandshake, policy: ServerPolicy,
                        first_frames: bytes = b"") -> tuple[Acceptance, Established]:
    """Request bytes -> parse -> accept -> response bytes -> parse -> the client's check."""
    parser = RequestParser()
    parser.feed(client.request + first_frames)
    request = parser.next_request()
    acceptance = accepted(request, policy)
    leftover = parser.leftover()
    if leftover:   # b"" would be the peer's EOF
        acceptance.connection.receive_data(leftover)
    return acceptance, client.receive_response(parse_response_head(acceptance.response))


def deliver(sender, receiver) -> list:
    receiver.receive_data(sender.data_to_send())
    return list(receiver.events())


def test_a_client_and_a_server_open_and_talk_in_memory():
    client = ClientHandshake("127.0.0.1:3490", "/", subprotocols=["proto-v1", "proto-v2"])
    acceptance, established = handshake_in_memory(client, ServerPolicy(ChatLikeApp()))
    assert acceptance.subprotocol == established.subprotocol == "proto-v2"
    server, ws = acceptance.connection, established.connection
    ws.send_text("Hello, Goats!")
    assert deliver(ws, server) == [TextMessage("Hello, Goats!")]
    server.send_binary(b"\x00\xff" * 100)
    assert deliver(server, ws) == [BinaryMessage(b"\x00\xff" * 100)]


def test_a_client_and_a_server_agree_on_compression_in_memory():
    client = ClientHandshake("h", compression=DeflateOptions(client_max_window_bits=12))
    policy = ServerPolicy(WebSocketApp(), compression=DeflateOptions(server_max_window_bits=11))
    acceptance, established = handshake_in_memory(client, policy)
    server, ws = acceptance.connection, established.connection
    assert server.deflate.params == ws.deflate.params == DeflateParams(
        server_max_window_bits=11, client_max_window_bits=12)
    text = "compress me " * 200
    ws.send_text(text)
    frame = ws.data_to_send()
    assert frame[0] & 0x40                      # RSV1: a compressed message (RFC 7692 §6)
    assert len(frame) < len(text) // 4
    server.receive_data(frame)
    assert list(server.events()) == [TextMessage(text)]
    server.send_text(text)
    assert deliver(server, ws) == [TextMessage(text)]


def test_a_frame_sent_with_the_request_reaches_the_server_connection():
    early = WebSocketConnection(Role.CLIENT)     # the client's first frame, written ahead
    early.send_text("early")
    acceptance, _ = handshake_in_memory(ClientHandshake("h"), ServerPolicy(WebSocketApp()),
                                        early.data_to_send())
    assert list(acceptance.connection.events()) == [TextMessage("early")]


def test_a_refused_client_gets_the_servers_status():
    client = ClientHandshake("h", subprotocols=["nope"])
    refusal = refused(parse_request(client.request), ServerPolicy(ChatLikeApp()))
    with pytest.raises(HandshakeError) as info:
        client.receive_response(parse_response_head(refusal.response.split(b"\r\n\r\n")[0]))
    assert info.value.status == 400



# ---- the socket server answers exactly as server_handshake does ---------------

@pytest.mark.parametrize("extra, method", [
    ((b"Sec-WebSocket-Protocol: proto-v1, proto-v2",), b"GET"),
    ((b"Sec-WebSocket-Protocol: proto-v1", OFFER), b"GET"),
    ((b"Sec-WebSocket-Protocol: proto-v1", b"Sec-WebSocket-Extensions: x;;"), b"GET"),
    ((b"Sec-WebSocket-Protocol: proto-v2",), b"POST"),
    ((b"Sec-WebSocket-Protocol: nope",), b"GET"),
    ((b"Sec-WebSocket-Protocol: proto-v2", b"Origin: http://evil.example"), b"GET"),
    ((b"Sec-WebSocket-Protocol: proto-v2", b"Sec-WebSocket-Version: 8"), b"GET"),
], ids=["101", "101 deflate", "400 extensions", "405", "400 subprotocol", "403", "426"])
def test_the_socket_server_sends_what_server_handshake_decides(serve, extra, method):
    app = ChatLikeApp()
    server = serve(app, max_message_size=5000)
    host = f"127.0.0.1:{server.port}".encode()
    lines = [method + b" / HTTP/1.1", b"Host: " + host, b"Upgrade: websocket",
             b"Connection: Upgrade", b"Sec-WebSocket-Key: " + RFC_KEY.encode()]
    if not any(line.startswith(b"Sec-WebSocket-Version") for line in extra):
        lines.append(b"Sec-WebSocket-Version: 13")
    data = b"\r\n".join(lines + list(extra)) + b"\r\n\r\n"
    outcome = server_handshake(parse_request(data), ServerPolicy(
        app, compression=server.compression, max_message_size=server.max_message_size,
        max_frame_size=server.max_frame_size))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while len(received) < len(outcome.response):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        if isinstance(outcome, Refusal):
            while chunk := sock.recv(65536):   # then the server closes
                received += chunk
    assert received == outcome.response
