"""rawws.handshake: the opening handshake, both sides (RFC 6455 §1.3, §4).

Requests are written as the bytes a client puts on the wire and parsed by
`rawws.http.RequestParser`, as the server does; responses are parsed by
`rawws.http.parse_response_head`, as the client does.
"""
from __future__ import annotations

import base64

import pytest

from rawws.errors import HandshakeError
from rawws.handshake import (accept_key, accept_response, build_request, check_response,
                             is_upgrade_request, make_key, offered_subprotocols, refusal_response,
                             validate_request)
from rawws.http import Request, RequestParser, Response, parse_response_head

# §1.3: the sample nonce and the Sec-WebSocket-Accept it gives.
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

# §1.3: "The handshake from the client looks as follows".
RFC_REQUEST = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)

# §1.3: "The handshake from the server looks as follows".
RFC_RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"Sec-WebSocket-Protocol: chat\r\n"
    b"\r\n"
)


def parse_request(data: bytes, **options: bool) -> Request:
    parser = RequestParser(**options)
    parser.feed(data)
    request = parser.next_request()
    assert request is not None, "incomplete request head"
    return request


def request_with(*header_lines: bytes, request_line: bytes = b"GET /chat HTTP/1.1") -> Request:
    """An upgrade request with exactly these header lines."""
    return parse_request(b"\r\n".join((request_line,) + header_lines) + b"\r\n\r\n",
                         require_host=False)


GOOD_HEADERS = (
    b"Host: server.example.com",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    b"Sec-WebSocket-Version: 13",
)


def without(name: bytes) -> tuple[bytes, ...]:
    return tuple(line for line in GOOD_HEADERS if not line.startswith(name + b":"))


def replacing(name: bytes, *lines: bytes) -> tuple[bytes, ...]:
    return without(name) + lines


def refusal(request: Request) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        validate_request(request)
    return info.value


# ---- §1.3 the sample handshake ---------------------------------------------

def test_rfc_sample_key_gives_the_rfc_accept():
    assert accept_key(RFC_KEY) == RFC_ACCEPT


def test_rfc_sample_request_is_valid_and_yields_its_key():
    assert validate_request(parse_request(RFC_REQUEST)) == RFC_KEY


def test_rfc_sample_request_is_an_upgrade_request():
    assert is_upgrade_request(parse_request(RFC_REQUEST))


def test_rfc_sample_request_offers_chat_then_superchat():
    assert offered_subprotocols(parse_request(RFC_REQUEST)) == ["chat", "superchat"]


def test_accept_response_for_the_rfc_sample_has_the_rfc_bytes():
    assert accept_response(RFC_KEY, "chat") == RFC_RESPONSE


def test_accept_response_without_a_subprotocol():
    assert accept_response(RFC_KEY) == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"\r\n"
    )


def test_client_accepts_the_rfc_sample_response():
    response = parse_response_head(RFC_RESPONSE)
    assert check_response(response, RFC_KEY, ["chat", "superchat"]) == "chat"


# ---- §4.2.1 what the server accepts -----------------------------------------

def test_connection_keep_alive_upgrade_is_accepted():
    # Firefox sends "Connection: keep-alive, Upgrade"; §4.2.1 item 4 asks only
    # that the list include the token "Upgrade".
    request = request_with(*replacing(b"Connection", b"Connection: keep-alive, Upgrade"))
    assert validate_request(request) == RFC_KEY


@pytest.mark.parametrize("value", [b"websocket", b"WebSocket", b"WEBSOCKET"])
def test_upgrade_token_is_case_insensitive(value):
    request = request_with(*replacing(b"Upgrade", b"Upgrade: " + value))
    assert validate_request(request) == RFC_KEY


def test_connection_token_is_case_insensitive():
    request = request_with(*replacing(b"Connection", b"Connection: upgrade"))
    assert validate_request(request) == RFC_KEY


def test_header_names_are_case_insensitive():
    request = request_with(b"host: a", b"upgrade: websocket", b"connection: upgrade",
                           b"sec-websocket-key: " + RFC_KEY.encode(), b"sec-websocket-version: 13")
    assert validate_request(request) == RFC_KEY


def test_plain_http_request_is_not_an_upgrade_request():
    assert not is_upgrade_request(parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"))


# ---- §4.2.1 what the server refuses, and with which status --------------------

def test_method_other_than_get_is_refused_with_405():
    error = refusal(request_with(*GOOD_HEADERS, request_line=b"POST /chat HTTP/1.1"))
    assert error.status == 405
    assert ("Allow", "GET") in error.headers


def test_http_1_0_is_refused_with_400():
    # §4.1: "The method of the request MUST be GET, and the HTTP version MUST be at least 1.1."
    assert refusal(request_with(*GOOD_HEADERS, request_line=b"GET /chat HTTP/1.0")).status == 400


def test_missing_host_is_refused_with_400():
    assert refusal(request_with(*without(b"Host"))).status == 400


def test_missing_upgrade_is_refused_with_400():
    assert refusal(request_with(*without(b"Upgrade"))).status == 400


def test_upgrade_to_another_protocol_is_refused_with_400():
    assert refusal(request_with(*replacing(b"Upgrade", b"Upgrade: h2c"))).status == 400


def test_missing_connection_upgrade_is_refused_with_400():
    assert refusal(request_with(*without(b"Connection"))).status == 400


def test_connection_without_the_upgrade_token_is_refused_with_400():
    assert refusal(request_with(*replacing(b"Connection", b"Connection: keep-alive"))).status == 400


def test_missing_version_is_refused_with_426_naming_version_13():
    # §4.2.2 item 4: "... MUST abort the WebSocket handshake ... and instead send
    # an appropriate HTTP error code (such as 426 Upgrade Required) and a
    # |Sec-WebSocket-Version| header field indicating the version(s) the server
    # is capable of understanding."
    error = refusal(request_with(*without(b"Sec-WebSocket-Version")))
    assert error.status == 426
    assert ("Sec-WebSocket-Version", "13") in error.headers


def test_version_8_is_refused_with_426_naming_version_13():
    error = refusal(request_with(*replacing(b"Sec-WebSocket-Version", b"Sec-WebSocket-Version: 8")))
    assert error.status == 426
    assert ("Sec-WebSocket-Version", "13") in error.headers


def test_426_refusal_carries_the_version_header_on_the_wire():
    error = refusal(request_with(*replacing(b"Sec-WebSocket-Version", b"Sec-WebSocket-Version: 8")))
    response = refusal_response(error)
    assert response.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in response


def test_missing_key_is_refused_with_400():
    assert refusal(request_with(*without(b"Sec-WebSocket-Key"))).status == 400


@pytest.mark.parametrize("key", [
    pytest.param(b"not base64 at all!", id="not base64"),
    pytest.param(b"dGhlIHNhbXBsZSBub25jZQ", id="padding missing"),
    pytest.param(base64.b64encode(bytes(15)), id="15 bytes"),
    pytest.param(base64.b64encode(bytes(17)), id="17 bytes"),
    pytest.param(b"", id="empty"),
])
def test_key_that_is_not_16_bytes_in_base64_is_refused_with_400(key):
    # §4.2.1 item 5: the key, "when decoded, is 16 bytes in length".
    assert refusal(request_with(*replacing(b"Sec-WebSocket-Key",
                                           b"Sec-WebSocket-Key: " + key))).status == 400


def test_two_keys_are_refused_with_400():
    other = base64.b64encode(bytes(range(16)))
    request = request_with(*GOOD_HEADERS, b"Sec-WebSocket-Key: " + other)
    assert refusal(request).status == 400


def test_two_keys_in_one_header_are_refused_with_400():
    other = base64.b64encode(bytes(range(16)))
    request = request_with(*replacing(b"Sec-WebSocket-Key",
                                      b"Sec-WebSocket-Key: " + RFC_KEY.encode() + b", " + other))
    assert refusal(request).status == 400


# ---- §4.1 item 10 subprotocols ------------------------------------------------

def test_offered_subprotocols_keep_their_order_and_case_across_header_lines():
    request = request_with(*GOOD_HEADERS, b"Sec-WebSocket-Protocol: v2.Chat, v1.chat",
                           b"Sec-WebSocket-Protocol: MQTT")
    assert offered_subprotocols(request) == ["v2.Chat", "v1.chat", "MQTT"]


def test_no_subprotocol_header_offers_none():
    assert offered_subprotocols(request_with(*GOOD_HEADERS)) == []


# ---- §4.1 the client's side -----------------------------------------------------

def test_build_request_is_a_valid_upgrade_request():
    wire = build_request("server.example.com", "/chat", RFC_KEY,
                         subprotocols=["chat", "superchat"], origin="http://example.com")
    assert wire.startswith(b"GET /chat HTTP/1.1\r\n")
    assert wire.endswith(b"\r\n\r\n")
    request = parse_request(wire)
    assert validate_request(request) == RFC_KEY
    assert request.headers.get("Host") == "server.example.com"
    assert request.headers.get("Upgrade") == "websocket"
    assert request.headers.get("Connection") == "Upgrade"
    assert request.headers.get("Sec-WebSocket-Key") == RFC_KEY
    assert request.headers.get("Sec-WebSocket-Version") == "13"
    assert request.headers.get("Origin") == "http://example.com"
    assert offered_subprotocols(request) == ["chat", "superchat"]


def test_build_request_has_the_rfc_sample_lines():
    wire = build_request("server.example.com", "/chat", RFC_KEY,
                         subprotocols=["chat", "superchat"], origin="http://example.com")
    assert sorted(wire.split(b"\r\n")) == sorted(RFC_REQUEST.split(b"\r\n"))


def test_build_request_leaves_out_headers_it_was_not_given():
    request = parse_request(build_request("h", "/", RFC_KEY))
    assert "Origin" not in request.headers
    assert "Sec-WebSocket-Protocol" not in request.headers


def test_build_request_adds_extra_headers():
    request = parse_request(build_request("h", "/", RFC_KEY, extra_headers=[("X-Token", "abc")]))
    assert request.headers.get("X-Token") == "abc"


def test_build_request_refuses_header_injection():
    with pytest.raises(ValueError):
        build_request("h", "/", RFC_KEY, extra_headers=[("X-Evil", "a\r\nInjected: yes")])


def test_make_key_is_16_random_bytes_in_base64():
    key = make_key()
    assert len(base64.b64decode(key, validate=True)) == 16
    assert make_key() != key
    assert validate_request(parse_request(build_request("h", "/", key))) == key


def response_with(*header_lines: bytes, status_line: bytes = b"HTTP/1.1 101 Switching Protocols"
                  ) -> Response:
    return parse_response_head(b"\r\n".join((status_line,) + header_lines) + b"\r\n\r\n")


GOOD_RESPONSE_HEADERS = (b"Upgrade: websocket", b"Connection: Upgrade",
                         b"Sec-WebSocket-Accept: " + RFC_ACCEPT.encode())


def check_refusal(response: Response, offered: list[str] = ()) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        check_response(response, RFC_KEY, offered)
    return info.value


def test_client_accepts_a_101_without_subprotocol():
    assert check_response(response_with(*GOOD_RESPONSE_HEADERS), RFC_KEY) is None


def test_client_accepts_a_101_from_accept_response():
    response = parse_response_head(accept_response(RFC_KEY, "superchat"))
    assert check_response(response, RFC_KEY, ["chat", "superchat"]) == "superchat"


def test_client_refuses_a_wrong_accept():
    response = response_with(b"Upgrade: websocket", b"Connection: Upgrade",
                             b"Sec-WebSocket-Accept: " + base64.b64encode(bytes(20)))
    check_refusal(response)


def test_client_refuses_an_accept_for_another_key():
    other_key = base64.b64encode(bytes(16)).decode()
    response = response_with(b"Upgrade: websocket", b"Connection: Upgrade",
                             b"Sec-WebSocket-Accept: " + accept_key(other_key).encode())
    check_refusal(response)


def test_client_refuses_a_missing_accept():
    check_refusal(response_with(b"Upgrade: websocket", b"Connection: Upgrade"))


def test_client_refuses_a_status_other_than_101_and_keeps_it():
    error = check_refusal(response_with(b"Content-Length: 0", status_line=b"HTTP/1.1 403 Forbidden"))
    assert error.status == 403


def test_client_refuses_a_200():
    error = check_refusal(response_with(*GOOD_RESPONSE_HEADERS, status_line=b"HTTP/1.1 200 OK"))
    assert error.status == 200


def test_client_refuses_a_101_without_upgrade_websocket():
    check_refusal(response_with(b"Connection: Upgrade",
                                b"Sec-WebSocket-Accept: " + RFC_ACCEPT.encode()))


def test_client_refuses_a_101_without_connection_upgrade():
    check_refusal(response_with(b"Upgrade: websocket",
                                b"Sec-WebSocket-Accept: " + RFC_ACCEPT.encode()))


def test_client_refuses_a_subprotocol_it_did_not_offer():
    # §4.1: "If the response includes a |Sec-WebSocket-Protocol| header field
    # and this header field indicates the use of a subprotocol that was not
    # present in the client's handshake ... the client MUST _Fail the WebSocket Connection_."
    response = response_with(*GOOD_RESPONSE_HEADERS, b"Sec-WebSocket-Protocol: mqtt")
    check_refusal(response, ["chat", "superchat"])


def test_client_refuses_a_subprotocol_when_it_offered_none():
    check_refusal(response_with(*GOOD_RESPONSE_HEADERS, b"Sec-WebSocket-Protocol: chat"))


def test_client_refuses_two_subprotocols():
    response = response_with(*GOOD_RESPONSE_HEADERS, b"Sec-WebSocket-Protocol: chat, superchat")
    check_refusal(response, ["chat", "superchat"])


def test_client_refuses_an_extension_it_did_not_offer():
    # §4.1: "The use of an extension not present in the client's handshake ...
    # MUST _Fail the WebSocket Connection_." This client offers none.
    response = response_with(*GOOD_RESPONSE_HEADERS, b"Sec-WebSocket-Extensions: permessage-deflate")
    check_refusal(response)
