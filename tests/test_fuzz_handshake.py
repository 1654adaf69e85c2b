"""Fuzzing the opening handshake, both sides, and the frame parser on its own.

Mutations of valid input (flipped bits, truncations, inserted HTTP bytes,
repeats, huge lengths) and random bytes, cut into random reads, go through
the same sans-IO steps the server and the client take:

* server: `RequestParser` -> `is_upgrade_request` -> `validate_request` ->
  Origin policy -> subprotocol choice -> permessage-deflate offer
  (`rawws.deflate.server_accept`) -> `accept_response`, whose bytes the
  client side must then accept;
* client: `find_head_end` -> `parse_response_head` -> `check_response` ->
  `rawws.deflate.client_check`;
* `FrameParser` alone, in both masking modes.

The only outcomes allowed are a result of the documented type, a clean
error (HTTPError / HandshakeError with its status, ProtocolError with 1002
or 1009), or waiting for more bytes; never another exception, and never a
different outcome for the same bytes cut differently. Seeded and bounded
like tests/test_fuzz.py, with the same FUZZ_* knobs (`make fuzz`).
"""
from __future__ import annotations

import random

import pytest

from rawws.deflate import DeflateOptions, client_check, client_offer, server_accept
from rawws.errors import HandshakeError, HTTPError, ProtocolError
from rawws.frames import OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_TEXT, Frame, FrameParser
from rawws.handshake import (accept_key, accept_response, check_response, is_upgrade_request,
                             offered_subprotocols, validate_request)
from rawws.http import Request, RequestParser, Response, find_head_end, parse_response_head
from rawws.origin import OriginPolicy
from tests.test_fuzz import (HTTP_BYTES, SEEDS, deadline_runs, insert_tokens, mutate,
                             mutate_head, random_chunks, random_frame)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="          # RFC 6455 §1.3's sample key
SERVER_SUBPROTOCOLS = ("chat", "superchat", "beej-chat-protocol-v2")

UPGRADES = [
    # RFC 6455 §1.3's request, and variations a real client sends.
    f"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
    f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nOrigin: http://example.com\r\n"
    f"Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n",
    f"GET / HTTP/1.1\r\nHost: 127.0.0.1:3490\r\nConnection: keep-alive, Upgrade\r\n"
    f"Upgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n"
    f"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    f"Sec-WebSocket-Protocol: beej-chat-protocol-v2\r\nOrigin: http://127.0.0.1:3490\r\n\r\n",
    f"GET /x?y=1 HTTP/1.1\r\nHost: [::1]:80\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
    f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: "
    f"permessage-deflate; server_no_context_takeover; server_max_window_bits=10, "
    f"permessage-deflate; client_max_window_bits=\"12\", x-unknown\r\n\r\n",
    f"GET / HTTP/1.1\nHost: a\nUpgrade: websocket\nConnection: Upgrade\n"
    f"Sec-WebSocket-Key: {KEY}\nSec-WebSocket-Version: 13\n\n",
]
UPGRADES = [text.encode("latin-1") for text in UPGRADES]
# Bytes that matter to a handshake, for insertions.
HANDSHAKE_BYTES = HTTP_BYTES + [b",", b";", b"=", b"\"", b"Upgrade: websocket\r\n",
                                b"Sec-WebSocket-Version: 13\r\n", b"Sec-WebSocket-Key: AAAA\r\n",
                                b"Sec-WebSocket-Extensions: permessage-deflate;;\r\n",
                                b"server_max_window_bits=99999999999999999999", b"\xc3\xa9"]


def mutate_handshake(rng: random.Random, data: bytes) -> bytes:
    if rng.random() < 0.6:
        return mutate_head(rng, data)
    return insert_tokens(rng, data, HANDSHAKE_BYTES)


# ---- the server side ---------------------------------------------------------------------

def server_outcome(request: Request, label: str) -> tuple:
    """What the server makes of one request head, step by step as rawws.net.server does."""
    if request.method == "HEAD" or not is_upgrade_request(request):
        return ("file", request.method, request.target)
    try:
        key = validate_request(request)
    except HandshakeError as error:
        assert 400 <= error.status <= 499, f"{label}: status {error.status}"
        return ("refused", error.status)
    except Exception as error:   # noqa: BLE001 - the point: nothing else may escape
        pytest.fail(f"{label}: validate_request raised {error!r}")
    try:
        allowed = OriginPolicy(None).allows(request.headers.get("Origin"), request.headers.get("Host"))
        offered = offered_subprotocols(request)
        try:
            agreed = server_accept(request.headers.get_all("Sec-WebSocket-Extensions"),
                                   DeflateOptions())
        except HandshakeError as error:
            assert error.status == 400, label
            return ("refused", 400)
    except Exception as error:   # noqa: BLE001
        pytest.fail(f"{label}: the handshake checks raised {error!r}")
    assert isinstance(allowed, bool), label
    assert all(isinstance(name, str) and name and "," not in name for name in offered), label
    chosen = next((name for name in SERVER_SUBPROTOCOLS if name in offered), None)
    extension_headers = [("Sec-WebSocket-Extensions", agreed[1])] if agreed else []
    answer = accept_response(key, chosen, extension_headers)
    # The client side must accept what the server answers.
    end = find_head_end(answer)
    assert end == len(answer), label
    response = parse_response_head(answer)
    assert check_response(response, key, offered, extensions_offered=agreed is not None) == chosen
    if agreed is not None:
        params = client_check(response.headers.get_all("Sec-WebSocket-Extensions"),
                              DeflateOptions(client_max_window_bits=agreed[0].client_max_window_bits,
                                             server_max_window_bits=15))
        assert params is not None, label
    return ("open", key, allowed, chosen, agreed[1] if agreed else None)


def serve_requests(chunks: list[bytes], label: str) -> list[tuple]:
    parser = RequestParser()
    outcomes: list[tuple] = []
    for chunk in chunks:
        parser.feed(chunk)
        while True:
            try:
                request = parser.next_request()
            except HTTPError as error:
                assert 400 <= error.status <= 599, label
                return outcomes + [("http error", error.status)]
            except Exception as error:   # noqa: BLE001
                pytest.fail(f"{label}: next_request raised {error!r}")
            if request is None:
                break                         # waiting for more bytes
            outcome = server_outcome(request, label)
            outcomes.append(outcome)
            if outcome[0] in ("open", "refused"):
                return outcomes               # the connection is a WebSocket now, or closing
    return outcomes


def test_the_unmutated_upgrades_open():
    for index, data in enumerate(UPGRADES):
        (outcome,) = serve_requests([data], f"upgrade {index}")
        assert outcome[0] == "open" and outcome[1] == KEY, outcome


@pytest.mark.parametrize("seed", SEEDS)
def test_mutated_upgrade_requests_open_or_are_refused_cleanly(seed):
    rng = random.Random(seed)
    opened = refused = 0
    for case in deadline_runs():
        data = mutate_handshake(rng, rng.choice(UPGRADES))
        label = f"seed {seed} case {case}: {data[:400]!r}"
        whole = serve_requests([data], label)
        cut = serve_requests(random_chunks(rng, data), label + ", cut")
        assert cut == whole, label
        kinds = [outcome[0] for outcome in whole]
        opened += "open" in kinds
        refused += "refused" in kinds or "http error" in kinds
    # The mutations reach every outcome, not only the parser's errors.
    assert opened and refused


@pytest.mark.parametrize("seed", SEEDS)
def test_random_bytes_before_a_handshake_are_refused_or_wait(seed):
    rng = random.Random(seed)
    for case in deadline_runs():
        data = rng.randbytes(rng.randint(1, 600))
        if rng.random() < 0.5:
            data = rng.choice(UPGRADES)[:rng.randint(0, 60)] + data
        label = f"seed {seed} case {case} (random bytes)"
        assert serve_requests(random_chunks(rng, data), label) == serve_requests([data], label)


# ---- the client side ---------------------------------------------------------------------

RESPONSES = [
    accept_response(KEY),
    accept_response(KEY, "chat"),
    accept_response(KEY, "superchat", [("Sec-WebSocket-Extensions",
                                        "permessage-deflate; server_max_window_bits=12")]),
    f"HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\n"
    f"Sec-WebSocket-Accept: {accept_key(KEY)}\nSec-WebSocket-Extensions: permessage-deflate; "
    f"client_max_window_bits=10; server_no_context_takeover\n\n".encode("latin-1"),
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\n",
    b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n\r\n",
]


def client_outcome(data: bytes, offered: list[str], options: DeflateOptions | None,
                   label: str) -> tuple:
    """What the client makes of the server's answer: the subprotocol and deflate
    parameters, a refusal with a status, or None while the head is unfinished."""
    end = find_head_end(data)
    if end == -1:
        return ("waiting",)
    try:
        response = parse_response_head(data[:end])
        assert isinstance(response, Response), label
        subprotocol = check_response(response, KEY, offered, extensions_offered=options is not None)
        params = None
        if options is not None:
            params = client_check(response.headers.get_all("Sec-WebSocket-Extensions"), options)
    except HTTPError as error:   # HandshakeError included
        assert 100 <= error.status <= 999, label
        return ("refused", error.status)
    except Exception as error:   # noqa: BLE001
        pytest.fail(f"{label}: the client's checks raised {error!r}")
    assert subprotocol is None or subprotocol in offered, label
    return ("open", subprotocol, params)


@pytest.mark.parametrize("seed", SEEDS)
def test_mutated_responses_open_or_fail_the_client_cleanly(seed):
    rng = random.Random(seed)
    outcomes = set()
    for case in deadline_runs():
        data = mutate_handshake(rng, rng.choice(RESPONSES)) if rng.random() < 0.9 else \
            rng.randbytes(rng.randint(1, 300))
        offered = rng.choice(([], ["chat"], ["chat", "superchat"]))
        options = rng.choice((None, DeflateOptions(),
                              DeflateOptions(server_no_context_takeover=True,
                                             client_max_window_bits=12)))
        label = f"seed {seed} case {case}: {data[:400]!r}"
        outcome = client_outcome(data, offered, options, label)
        outcomes.add(outcome[0])
    assert {"open", "refused"} <= outcomes


def test_the_client_offer_is_accepted_by_the_server_side():
    for options in (DeflateOptions(), DeflateOptions(server_no_context_takeover=True),
                    DeflateOptions(client_max_window_bits=9, server_max_window_bits=10)):
        params, answer = server_accept([client_offer(options)], DeflateOptions())
        assert client_check([answer], options) is not None


# ---- the frame parser alone ----------------------------------------------------------------

def parse_frames(chunks: list[bytes], require_mask: bool, limit: int, label: str) -> list:
    """Every frame in order, then the close code of the error that stopped the parser."""
    parser = FrameParser(require_mask=require_mask, max_frame_size=limit)
    frames: list = []
    for chunk in chunks:
        parser.feed(chunk)
        while True:
            try:
                frame = parser.next_frame()
            except ProtocolError as error:   # MessageTooBig included
                assert error.close_code in (1002, 1009), label
                return frames + [error.close_code]
            except Exception as error:   # noqa: BLE001
                pytest.fail(f"{label}: next_frame raised {error!r}")
            if frame is None:
                break
            assert isinstance(frame, Frame) and isinstance(frame.payload, bytes), label
            assert len(frame.payload) <= limit or frame.opcode >= OP_CLOSE, label
            if frame.opcode >= OP_CLOSE:
                assert frame.fin and len(frame.payload) <= 125, label
            frames.append((frame.opcode, frame.fin, frame.payload))
    return frames


def huge_length_header(rng: random.Random, masked: bool) -> bytes:
    opcode = rng.choice((OP_TEXT, OP_BINARY, OP_CONTINUATION, OP_PING))
    length = rng.choice((126, 65535, 65536, 2 ** 31, 2 ** 32 + 1, 2 ** 62, 2 ** 63 - 1,
                         2 ** 63, 2 ** 64 - 1))
    head = bytes((0x80 | opcode, (0x80 if masked else 0) | 127)) + length.to_bytes(8, "big")
    return head + (rng.randbytes(4) if masked else b"") + rng.randbytes(rng.randint(0, 20))


@pytest.mark.parametrize("require_mask", [True, False], ids=["server", "client"])
@pytest.mark.parametrize("seed", SEEDS)
def test_the_frame_parser_gives_frames_an_error_or_waits(seed, require_mask):
    rng = random.Random(seed)
    for case in deadline_runs():
        pieces = []
        for _ in range(rng.randint(1, 5)):
            if rng.random() < 0.15:
                pieces.append(huge_length_header(rng, require_mask))
            else:
                pieces.append(random_frame(rng, require_mask))
        data = b"".join(pieces)
        if rng.random() < 0.5:
            data = mutate(rng, data)
        limit = rng.choice((1 << 20, 1000, 125, 0))
        label = f"seed {seed} case {case} (limit {limit})"
        whole = parse_frames([data], require_mask, limit, label)
        cut = parse_frames(random_chunks(rng, data), require_mask, limit, label + ", cut")
        assert cut == whole, label
