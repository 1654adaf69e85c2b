"""The memory budget, sans-IO: `MemoryBudget` and what a `WebSocketConnection`
reserves from it, byte by byte (rawws/budget.py, docs/security.md)."""
from __future__ import annotations

import os

import pytest

from rawws.budget import DEFAULT_MAX_MEMORY, MemoryBudget
from rawws.frames import (OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_TEXT, FrameParser,
                          decode_close_payload, encode_frame)
from rawws.protocol import BinaryMessage, Role, State, TextMessage, WebSocketConnection

MIB = 1024 * 1024
KEY = b"\x01\x02\x03\x04"


def masked(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    return encode_frame(opcode, payload, fin=fin, mask_key=KEY)


def server(budget: MemoryBudget, max_message_size: int = 16 * MIB) -> WebSocketConnection:
    return WebSocketConnection(Role.SERVER, max_message_size=max_message_size, budget=budget)


def feed(conn: WebSocketConnection, data: bytes) -> list:
    conn.receive_data(data)
    return list(conn.events())


def sent_close(conn: WebSocketConnection) -> tuple[int, str]:
    parser = FrameParser(require_mask=False)
    parser.feed(conn.data_to_send())
    frame = parser.next_frame()
    assert frame.opcode == OP_CLOSE
    return decode_close_payload(frame.payload)


# ---- the budget alone ---------------------------------------------------------------------

def test_the_default_fits_a_small_machine():
    assert DEFAULT_MAX_MEMORY == 128 * MIB <= 256 * MIB


def test_reserve_counts_up_to_the_receive_limit_and_not_one_byte_more():
    budget = MemoryBudget(100, output_reserve=20)
    assert budget.receive_limit == 80
    assert budget.reserve(79)
    assert budget.reserve(1)
    assert budget.used == 80 and budget.available == 0
    assert not budget.reserve(1)
    assert budget.used == 80 and budget.refused == 1
    budget.release(30)
    assert budget.used == 50 and budget.available == 30
    assert not budget.reserve(31)
    assert budget.reserve(30)
    assert budget.used == 80


def test_charges_are_never_refused_and_past_the_limit_it_is_exceeded():
    budget = MemoryBudget(100, output_reserve=20)
    budget.charge(100)
    assert not budget.exceeded
    budget.charge(1)
    assert budget.exceeded and budget.used == 101
    assert not budget.reserve(0) or budget.used == 101   # nothing fits while over
    budget.charge(-1)
    assert not budget.exceeded
    budget.release(100)
    assert budget.used == 0


def test_the_default_output_reserve_is_an_eighth():
    budget = MemoryBudget(800)
    assert budget.output_reserve == 100 and budget.receive_limit == 700


@pytest.mark.parametrize("limit, reserve", [(0, None), (-1, None), (100, 100), (100, -1)])
def test_a_budget_needs_a_positive_limit_and_a_smaller_reserve(limit, reserve):
    with pytest.raises(ValueError):
        MemoryBudget(limit, output_reserve=reserve)


def test_make_room_is_asked_before_a_refusal_and_what_it_frees_is_used():
    asked = []

    def make_room(size, owner):
        asked.append((size, owner))
        budget.release(50)

    budget = MemoryBudget(100, output_reserve=0, make_room=make_room)
    assert budget.reserve(90)
    assert budget.reserve(30, "me")        # 120 > 100: room is made (40), then it fits
    assert asked == [(30, "me")] and budget.used == 70
    assert budget.reserve(30)              # fits: make_room is not asked
    assert len(asked) == 1


# ---- what a connection reserves -----------------------------------------------------------

def test_a_whole_message_in_one_read_reserves_nothing():
    budget = MemoryBudget(MIB)
    conn = server(budget)
    assert feed(conn, masked(OP_TEXT, b"hello")) == [TextMessage("hello")]
    assert budget.used == 0 and conn.held_bytes == 0


def test_a_cut_frame_is_reserved_at_its_announced_length_then_given_back():
    budget = MemoryBudget(MIB)
    conn = server(budget)
    payload = os.urandom(1000)
    frame = masked(OP_BINARY, payload)   # 2 + 2 (length) + 4 (key) = 8 header bytes
    assert feed(conn, frame[:8 + 10]) == []
    # The announced 1000 bytes, and the 18 the parser's buffer holds of the frame.
    assert conn.held_bytes == budget.used == 1000 + 18
    assert feed(conn, frame[18:500]) == []
    assert budget.used == 1000 + 500
    assert feed(conn, frame[500:]) == [BinaryMessage(payload)]
    assert conn.held_bytes == budget.used == 0


def test_a_fragmented_message_holds_its_pieces_until_its_last_frame():
    budget = MemoryBudget(MIB)
    conn = server(budget)
    assert feed(conn, masked(OP_BINARY, b"a" * 100, fin=False)) == []
    assert budget.used == 100
    assert feed(conn, masked(OP_CONTINUATION, b"b" * 50, fin=False)) == []
    assert budget.used == 150
    assert feed(conn, masked(OP_CONTINUATION, b"c", fin=True)) == [
        BinaryMessage(b"a" * 100 + b"b" * 50 + b"c")]
    assert budget.used == 0


def test_a_big_frame_is_refused_from_its_header_with_1009_and_nothing_is_held():
    budget = MemoryBudget(MIB, output_reserve=0)
    conn = server(budget)
    header_and_some = masked(OP_BINARY, bytes(16 * MIB))[:14 + 100]
    assert feed(conn, header_and_some) == []
    assert conn.state is State.CLOSED
    code, reason = sent_close(conn)
    assert code == 1009 and "try again later" in reason
    assert budget.used == 0 and budget.refused == 1 and conn.held_bytes == 0
    assert feed(conn, bytes(1000)) == []   # what follows is not read, nor held
    assert budget.used == 0


def test_a_trickled_big_binary_frame_is_reserved_once_however_it_comes():
    budget = MemoryBudget(64 * MIB)
    conn = server(budget)
    payload = os.urandom(256 * 1024)
    frame = masked(OP_BINARY, payload)
    feed(conn, frame[:20])
    reserved = budget.used
    assert 256 * 1024 <= reserved < 256 * 1024 + 64
    for start in range(20, len(frame) - 1, 4096):   # trickled, read by read
        assert feed(conn, frame[start:min(start + 4096, len(frame) - 1)]) == []
        assert budget.used == reserved
    assert feed(conn, frame[-1:]) == [BinaryMessage(payload)]
    assert budget.used == 0


def test_a_message_that_grows_past_the_budget_is_refused_at_the_read_that_passes_it():
    budget = MemoryBudget(1000, output_reserve=0)
    conn = server(budget)
    for _ in range(9):
        assert feed(conn, masked(OP_BINARY if not conn.held_bytes else OP_CONTINUATION,
                                 b"x" * 100, fin=False)) == []
    assert budget.used == 900
    assert feed(conn, masked(OP_CONTINUATION, b"x" * 101, fin=False)) == []
    assert conn.state is State.CLOSED and sent_close(conn)[0] == 1009
    assert budget.used == 0


def test_two_connections_share_one_budget():
    budget = MemoryBudget(100_000, output_reserve=0)
    first, second = server(budget), server(budget)
    big = masked(OP_BINARY, bytes(70_000))
    feed(first, big[:1000])
    assert budget.used == 70_000   # a streamed frame: its announced length, no buffer
    feed(second, big[:1000])   # does not fit beside the first
    assert second.state is State.CLOSED and sent_close(second)[0] == 1009
    feed(first, big[1000:])
    assert budget.used == 0
    third = server(budget)      # now it fits
    assert feed(third, big[:1000]) == [] and third.state is State.OPEN
    assert feed(third, big[1000:]) == [BinaryMessage(bytes(70_000))]
    assert budget.used == 0


@pytest.mark.parametrize("ending", ["abort", "eof"])
def test_a_connection_that_ends_mid_frame_gives_back_what_it_held(ending):
    budget = MemoryBudget(64 * MIB)
    conn = server(budget)
    feed(conn, masked(OP_TEXT, "é".encode() * 1000, fin=False))
    feed(conn, masked(OP_CONTINUATION, bytes(200_000))[:5000])   # a big frame arriving
    assert budget.used > 200_000
    if ending == "abort":   # the I/O layer gave up: a close timeout, a broken socket
        conn.abort()
    else:                   # TCP closed mid-frame: 1006
        feed(conn, b"")
    assert conn.state is State.CLOSED
    assert budget.used == 0 and conn.held_bytes == 0


def test_a_peer_close_between_fragments_gives_back_the_message():
    budget = MemoryBudget(MIB)
    conn = server(budget)
    feed(conn, masked(OP_BINARY, b"a" * 500, fin=False))
    assert budget.used == 500
    events = feed(conn, masked(OP_CLOSE, b"\x03\xe8"))
    assert conn.state is State.CLOSED and events[-1].code == 1000
    assert budget.used == 0


def test_a_protocol_error_mid_message_gives_back_the_message():
    budget = MemoryBudget(MIB)
    conn = server(budget)
    feed(conn, masked(OP_BINARY, b"a" * 500, fin=False))
    feed(conn, masked(OP_TEXT, b"new message inside the old", fin=True))   # 1002
    assert conn.state is State.CLOSED and sent_close(conn)[0] == 1002
    assert budget.used == 0


def test_a_text_frame_read_early_counts_its_pieces_and_its_frame():
    budget = MemoryBudget(64 * MIB)
    conn = server(budget)
    text = "ab" * 50_000   # 100,000 bytes: a streamed frame, checked as it arrives
    frame = masked(OP_TEXT, text.encode())
    feed(conn, frame[:50_000])
    # The frame at its announced length, and the text decoded so far beside it.
    assert budget.used >= 100_000 + 50_000 - 14
    assert feed(conn, frame[50_000:]) == [TextMessage(text)]
    assert budget.used == 0


def test_without_a_budget_nothing_is_counted():
    conn = WebSocketConnection(Role.SERVER)
    feed(conn, masked(OP_BINARY, bytes(5000))[:100])
    assert conn.held_bytes == 0


def test_frames_waiting_in_a_queue_stay_the_objects_that_were_sent():
    # A broadcast queues the same frame to every peer; a peer behind on
    # reading gets it as it is (join=False), not joined into a copy of its own.
    conn = WebSocketConnection(Role.SERVER)
    first, second = encode_frame(OP_TEXT, b"one"), encode_frame(OP_TEXT, b"two")
    conn.send_frame_bytes(first)
    conn.send_frame_bytes(second)
    pieces = conn.buffers_to_send(join=False)
    assert pieces[0] is first and pieces[1] is second
    conn.send_frame_bytes(first)
    conn.send_frame_bytes(second)
    assert conn.buffers_to_send() == [first + second]   # joined for one write, as before
