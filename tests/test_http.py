"""rawws.http: incremental request parsing, response heads, formatting (RFC 9112)."""

from __future__ import annotations

import pytest

from rawws.errors import HTTPError
from rawws.http import (
    STATUS_REASONS,
    Headers,
    Request,
    RequestParser,
    Response,
    find_head_end,
    format_response,
    parse_response_head,
)

SIMPLE_GET = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"


def parse_one(data: bytes, **limits: int) -> Request | None:
    parser = RequestParser(**limits)
    parser.feed(data)
    return parser.next_request()


def status_of(data: bytes, **limits: int) -> int:
    with pytest.raises(HTTPError) as info:
        parse_one(data, **limits)
    return info.value.status


# --- request line and headers ---------------------------------------------


def test_simple_get_is_parsed() -> None:
    assert parse_one(SIMPLE_GET) == Request(
        "GET",
        "/index.html",
        "HTTP/1.1",
        Headers([("Host", "example.com"), ("Accept", "*/*")]),
    )


def test_incomplete_head_needs_more_data() -> None:
    assert parse_one(SIMPLE_GET[:-2]) is None


def test_header_names_are_case_insensitive() -> None:
    request = parse_one(b"GET / HTTP/1.1\r\nhOsT: a\r\nX-THING: 1\r\n\r\n")
    assert request is not None
    assert request.headers.get("Host") == "a"
    assert request.headers.get("x-thing") == "1"
    assert "X-Thing" in request.headers


def test_header_name_case_is_kept_in_items() -> None:
    request = parse_one(b"GET / HTTP/1.1\r\nhOsT: a\r\n\r\n")
    assert request is not None
    assert request.headers.items() == [("hOsT", "a")]


def test_header_value_is_stripped_of_surrounding_white_space() -> None:
    request = parse_one(b"GET / HTTP/1.1\r\nHost:\t  a b \t\r\n\r\n")
    assert request is not None
    assert request.headers.get("Host") == "a b"


def test_missing_header_gives_default() -> None:
    request = parse_one(SIMPLE_GET)
    assert request is not None
    assert request.headers.get("Upgrade") is None
    assert request.headers.get("Upgrade", "none") == "none"
    assert request.headers.get_all("Upgrade") == []


def test_repeated_header_keeps_every_value_in_order() -> None:
    request = parse_one(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\n")
    assert request is not None
    assert request.headers.get("X-A") == "1"
    assert request.headers.get_all("X-A") == ["1", "2"]


def test_get_tokens_splits_strips_lowercases_and_drops_empties() -> None:
    headers = Headers([("Connection", " keep-alive, ,Upgrade ,"), ("connection", "X-Y")])
    assert headers.get_tokens("CONNECTION") == ["keep-alive", "upgrade", "x-y"]


def test_get_tokens_of_absent_header_is_empty() -> None:
    assert Headers().get_tokens("Upgrade") == []


def test_header_value_may_hold_obs_text() -> None:
    request = parse_one(b"GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xe9\r\n\r\n")
    assert request is not None
    assert request.headers.get("X-Name") == "caf\xe9"


def test_empty_header_value_is_allowed() -> None:
    request = parse_one(b"GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\n\r\n")
    assert request is not None
    assert request.headers.get("X-Empty") == ""


# --- incremental and pipelined --------------------------------------------


def test_pipelined_requests_come_out_one_by_one() -> None:
    parser = RequestParser()
    parser.feed(
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
        b"HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    targets = []
    while (request := parser.next_request()) is not None:
        targets.append((request.method, request.target))
    assert targets == [("GET", "/a"), ("HEAD", "/b"), ("GET", "/c")]


def test_request_fed_one_byte_at_a_time() -> None:
    parser = RequestParser()
    results = []
    for byte in SIMPLE_GET:
        parser.feed(bytes([byte]))
        results.append(parser.next_request())
    assert results[:-1] == [None] * (len(SIMPLE_GET) - 1)
    assert results[-1] == parse_one(SIMPLE_GET)


def test_leftover_holds_bytes_after_the_head() -> None:
    parser = RequestParser()
    parser.feed(SIMPLE_GET + b"\x81\x85frame")
    assert parser.next_request() is not None
    assert parser.leftover() == b"\x81\x85frame"


def test_leftover_is_empty_after_an_exact_head() -> None:
    parser = RequestParser()
    parser.feed(SIMPLE_GET)
    parser.next_request()
    assert parser.leftover() == b""


def test_second_pipelined_request_may_arrive_in_pieces() -> None:
    parser = RequestParser()
    parser.feed(SIMPLE_GET + b"GET /two HTTP/1.1\r\nHo")
    assert parser.next_request() is not None
    assert parser.next_request() is None
    parser.feed(b"st: h\r\n\r\n")
    request = parser.next_request()
    assert request is not None and request.target == "/two"


def test_empty_lines_before_request_line_are_ignored() -> None:
    request = parse_one(b"\r\n\n" + SIMPLE_GET)
    assert request is not None and request.target == "/index.html"


# --- line endings ---------------------------------------------------------


def test_bare_lf_line_endings_are_accepted() -> None:
    assert parse_one(SIMPLE_GET.replace(b"\r\n", b"\n")) == parse_one(SIMPLE_GET)


def test_mixed_crlf_and_lf_line_endings_are_accepted() -> None:
    request = parse_one(b"GET / HTTP/1.1\nHost: h\r\nA: b\n\r\n")
    assert request is not None
    assert request.headers.items() == [("Host", "h"), ("A", "b")]


def test_bare_cr_is_400() -> None:
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n") == 400


# --- 400 ------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"GET /",  # two parts
        b"GET  / HTTP/1.1",  # double space
        b"GET / HTTP/1.1 extra",
        b" GET / HTTP/1.1",
        b"G(T / HTTP/1.1",  # method is not a token
        b"GET /\x7f HTTP/1.1",  # control in target
        b"GET /caf\xc3\xa9 HTTP/1.1",  # non-ASCII target
    ],
)
def test_malformed_request_line_is_400(line: bytes) -> None:
    assert status_of(line + b"\r\nHost: h\r\n\r\n") == 400


@pytest.mark.parametrize(
    "version", [b"HTTP/1", b"HTTP/1.1.1", b"http/1.1", b"HTTP/x.1", b"HTTP/11", b"HTTQ/1.1"]
)
def test_malformed_version_is_400(version: bytes) -> None:
    assert status_of(b"GET / " + version + b"\r\nHost: h\r\n\r\n") == 400


def test_header_line_without_colon_is_400() -> None:
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n") == 400


def test_white_space_before_colon_is_400() -> None:
    assert status_of(b"GET / HTTP/1.1\r\nHost : h\r\n\r\n") == 400


def test_obs_fold_continuation_line_is_400() -> None:
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n 2\r\n\r\n") == 400


def test_white_space_before_first_header_is_400() -> None:
    assert status_of(b"GET / HTTP/1.1\r\n\tHost: h\r\n\r\n") == 400


def test_empty_header_name_is_400() -> None:
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n") == 400


def test_nul_in_header_value_is_400() -> None:
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n") == 400


def test_missing_host_in_http_1_1_is_400() -> None:
    assert status_of(b"GET / HTTP/1.1\r\n\r\n") == 400


def test_missing_host_is_allowed_when_not_required() -> None:
    assert parse_one(b"GET / HTTP/1.1\r\n\r\n", require_host=False) is not None


def test_missing_host_in_http_1_0_is_allowed() -> None:
    assert parse_one(b"GET / HTTP/1.0\r\n\r\n") is not None


def test_two_host_headers_is_400() -> None:
    assert status_of(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400


@pytest.mark.parametrize("value", [b"-1", b"1x", b"", b"1, 2", b"9" * 19])
def test_invalid_content_length_is_400(value: bytes) -> None:
    assert status_of(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: " + value + b"\r\n\r\n") == 400


def test_transfer_encoding_in_http_1_0_is_400() -> None:
    assert status_of(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n") == 400


def test_error_is_sticky() -> None:
    parser = RequestParser()
    parser.feed(b"BAD\r\n\r\n")
    with pytest.raises(HTTPError):
        parser.next_request()
    parser.feed(SIMPLE_GET)
    with pytest.raises(HTTPError) as info:
        parser.next_request()
    assert info.value.status == 400


# --- 414, 431, 505 ----------------------------------------------------------


def test_request_line_at_max_line_is_accepted() -> None:
    line = b"GET /" + b"a" * 86 + b" HTTP/1.1"  # 100 bytes
    assert parse_one(line + b"\r\nHost: h\r\n\r\n", max_line=100) is not None


def test_request_line_over_max_line_is_414() -> None:
    line = b"GET /" + b"a" * 87 + b" HTTP/1.1"  # 101 bytes
    assert status_of(line + b"\r\nHost: h\r\n\r\n", max_line=100) == 414


def test_long_request_line_is_414_before_its_end_arrives() -> None:
    assert status_of(b"GET /" + b"a" * 200, max_line=100) == 414


def test_header_block_at_max_header_bytes_is_accepted() -> None:
    head = b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 20 + b"\r\n\r\n"
    # "Host: h\r\n" is 9 bytes, "X: " + 20 + "\r\n" is 25: 34 in all.
    assert parse_one(head, max_header_bytes=34) is not None


def test_header_block_over_max_header_bytes_is_431() -> None:
    head = b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 20 + b"\r\n\r\n"
    assert status_of(head, max_header_bytes=33) == 431


def test_long_header_is_431_before_its_end_arrives() -> None:
    assert status_of(b"GET / HTTP/1.1\r\nX: " + b"a" * 200, max_header_bytes=100) == 431


def test_too_many_headers_is_431() -> None:
    head = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: 1\r\n" * 3 + b"\r\n"
    assert status_of(head, max_headers=3) == 431


def test_max_headers_fields_are_accepted() -> None:
    head = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: 1\r\n" * 2 + b"\r\n"
    assert parse_one(head, max_headers=3) is not None


def test_default_limits_accept_8_kib_of_headers() -> None:
    head = b"GET / HTTP/1.1\r\nHost: h\r\nCookie: " + b"c" * 8192 + b"\r\n\r\n"
    assert parse_one(head) is not None


def test_endless_empty_lines_are_400() -> None:
    assert status_of(b"\r\n" * 100, max_line=100) == 400


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"HTTP/3.0"])
def test_unsupported_version_is_505(version: bytes) -> None:
    assert status_of(b"GET / " + version + b"\r\nHost: h\r\n\r\n") == 505


def test_http_1_0_is_supported() -> None:
    request = parse_one(b"GET / HTTP/1.0\r\n\r\n")
    assert request is not None and request.version == "HTTP/1.0"


# --- bodies and keep-alive ------------------------------------------------


def test_get_has_no_body() -> None:
    request = parse_one(SIMPLE_GET)
    assert request is not None and not request.has_body


def test_zero_content_length_is_no_body() -> None:
    request = parse_one(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    assert request is not None and not request.has_body


def test_non_zero_content_length_is_a_body() -> None:
    request = parse_one(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
    assert request is not None and request.has_body


def test_transfer_encoding_is_a_body() -> None:
    request = parse_one(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert request is not None and request.has_body


def test_parser_stops_after_a_request_with_a_body() -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 28\r\n\r\n" + SIMPLE_GET)
    assert parser.next_request() is not None
    assert parser.next_request() is None  # the "request" after it is body


def test_http_1_1_keeps_alive_by_default() -> None:
    request = parse_one(SIMPLE_GET)
    assert request is not None and request.keep_alive


def test_connection_close_ends_keep_alive() -> None:
    request = parse_one(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n")
    assert request is not None and not request.keep_alive


def test_http_1_0_closes_unless_keep_alive_asked() -> None:
    plain = parse_one(b"GET / HTTP/1.0\r\n\r\n")
    asked = parse_one(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert plain is not None and not plain.keep_alive
    assert asked is not None and asked.keep_alive


# --- response heads (client side) -------------------------------------------

HANDSHAKE_RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"\r\n"
)


def test_response_head_status_line_is_parsed() -> None:
    response = parse_response_head(HANDSHAKE_RESPONSE)
    assert (response.version, response.status, response.reason) == (
        "HTTP/1.1",
        101,
        "Switching Protocols",
    )


def test_response_head_headers_are_parsed() -> None:
    response = parse_response_head(HANDSHAKE_RESPONSE)
    assert response.headers.items() == [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
    ]


def test_response_head_with_bare_lf_is_parsed() -> None:
    assert parse_response_head(HANDSHAKE_RESPONSE.replace(b"\r\n", b"\n")) == parse_response_head(
        HANDSHAKE_RESPONSE
    )


def test_response_head_without_final_empty_line_is_parsed() -> None:
    assert parse_response_head(b"HTTP/1.1 404 Not Found\r\nA: b") == Response(
        404, "Not Found", "HTTP/1.1", Headers([("A", "b")])
    )


@pytest.mark.parametrize("line", [b"HTTP/1.1 200", b"HTTP/1.1 200 "])
def test_response_with_empty_reason_is_parsed(line: bytes) -> None:
    response = parse_response_head(line + b"\r\n\r\n")
    assert (response.status, response.reason) == (200, "")


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
        b"HTTP/2.0 200 OK\r\n\r\n",
        b"HTTP/1.1 099 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"\r\n\r\n",
        b"HTTP/1.1 101 OK\r\nNo colon\r\n\r\n",
        b"HTTP/1.1 101 OK\r\nA: 1\r\n  folded\r\n\r\n",
    ],
)
def test_malformed_response_head_is_502(head: bytes) -> None:
    with pytest.raises(HTTPError) as info:
        parse_response_head(head)
    assert info.value.status == 502


def test_bytes_after_response_head_are_an_error() -> None:
    with pytest.raises(HTTPError):
        parse_response_head(HANDSHAKE_RESPONSE + b"\x81\x00")


def test_find_head_end_points_past_the_empty_line() -> None:
    assert find_head_end(HANDSHAKE_RESPONSE + b"\x81\x00") == len(HANDSHAKE_RESPONSE)


def test_find_head_end_with_bare_lf() -> None:
    assert find_head_end(b"HTTP/1.1 101 X\nA: b\n\nrest") == 21


def test_find_head_end_of_incomplete_head_is_minus_one() -> None:
    assert find_head_end(HANDSHAKE_RESPONSE[:-1]) == -1


# --- formatting -------------------------------------------------------------


def test_format_response_bytes() -> None:
    assert format_response(200, [("Content-Type", "text/plain")], b"hi") == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
    )


def test_format_response_keeps_given_content_length() -> None:
    assert format_response(200, [("Content-Length", "10")]) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    )


def test_format_101_has_no_content_length() -> None:
    assert format_response(101, [("Upgrade", "websocket"), ("Connection", "Upgrade")]) == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )


def test_format_304_has_no_content_length() -> None:
    assert format_response(304, [("ETag", '"x"')]) == (
        b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n'
    )


def test_format_response_custom_reason() -> None:
    assert format_response(400, [], b"", reason="Nope") == (
        b"HTTP/1.1 400 Nope\r\nContent-Length: 0\r\n\r\n"
    )


def test_format_response_unknown_status_has_empty_reason() -> None:
    assert format_response(599, [], b"") == b"HTTP/1.1 599 \r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize(
    "header", [("X-A", "a\r\nSet-Cookie: x"), ("X-A", "a\nb"), ("X A", "b"), ("X-A", "\x00")]
)
def test_format_response_refuses_header_injection(header: tuple[str, str]) -> None:
    with pytest.raises(ValueError):
        format_response(200, [header])


def test_format_response_round_trips_through_parse_response_head() -> None:
    data = format_response(426, [("Sec-WebSocket-Version", "13")], b"upgrade")
    end = find_head_end(data)
    response = parse_response_head(data[:end])
    assert (response.status, response.reason, response.headers.get("sec-websocket-version")) == (
        426,
        "Upgrade Required",
        "13",
    )
    assert data[end:] == b"upgrade"


def test_status_reasons_has_standard_phrases() -> None:
    assert (STATUS_REASONS[101], STATUS_REASONS[404], STATUS_REASONS[431]) == (
        "Switching Protocols",
        "Not Found",
        "Request Header Fields Too Large",
    )
