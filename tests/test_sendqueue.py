"""rawws.net.sendqueue: a connection's unsent output, kept as the pieces it was
queued in and written with one vectored `sendmsg`.

The queue keeps references, never copies: a piece the socket took part of
stays as a memoryview on the rest of the very object queued. The last test
drives a real socketpair the way the server does (sendmsg of `head()`, then
`consume()` of what the kernel took) and checks every byte at the other end.
"""
from __future__ import annotations

import random
import select
import socket
import time

from rawws.net.sendqueue import MAX_PIECES, SendQueue


def queue_of(*pieces: bytes) -> SendQueue:
    queue = SendQueue()
    queue.extend(list(pieces))
    return queue


def queued(queue: SendQueue) -> bytes:
    """Every byte in the queue, in order (the queue must fit in one head())."""
    pieces = queue.head()
    assert len(pieces) <= MAX_PIECES
    return b"".join(pieces)


# ---- queueing ------------------------------------------------------------------

def test_a_new_queue_is_empty():
    queue = SendQueue()
    assert queue.size == 0
    assert len(queue) == 0
    assert queue.head() == []


def test_size_is_the_number_of_bytes_appended():
    queue = SendQueue()
    queue.append(b"Hello")
    queue.append(bytearray(b", "))
    queue.append(memoryview(b"world!"))
    assert queue.size == 13
    assert len(queue) == 13


def test_pieces_come_out_in_the_order_they_were_queued():
    queue = SendQueue()
    queue.append(b"one ")
    queue.extend([b"two ", b"three "])
    queue.append(b"four")
    assert queue.head() == [b"one ", b"two ", b"three ", b"four"]


def test_a_piece_is_queued_as_it_is_not_copied():
    payload = bytes(range(256)) * 256
    queue = SendQueue()
    queue.append(b"\x82\x7e\x01\x00")
    queue.append(payload)
    assert queue.head()[1] is payload


def test_empty_data_is_not_queued():
    queue = SendQueue()
    queue.append(b"")
    queue.extend([b"", b"x", bytearray(), memoryview(b"")])
    queue.append(b"")
    assert queue.head() == [b"x"]
    assert queue.size == 1


def test_a_queue_of_empty_data_only_is_empty():
    queue = queue_of(b"", b"")
    assert queue.head() == []
    assert queue.size == 0


# ---- consume: what the socket took -------------------------------------------------

def test_consume_of_whole_pieces_drops_them():
    queue = queue_of(b"abc", b"de", b"fgh")
    queue.consume(5)
    assert queue.head() == [b"fgh"]
    assert queue.size == len(queue) == 3


def test_consume_of_one_whole_piece_leaves_the_next_pieces_as_they_are():
    rest = b"defg"
    queue = queue_of(b"abc", rest)
    queue.consume(3)
    assert queue.head()[0] is rest


def test_consume_inside_a_piece_leaves_a_view_on_its_rest():
    original = bytes(range(10))
    queue = queue_of(original, b"next")
    queue.consume(3)
    piece = queue.head()[0]
    assert isinstance(piece, memoryview)
    assert piece.obj is original                     # a view on it, not a copy
    assert bytes(piece) == bytes([3, 4, 5, 6, 7, 8, 9])
    assert queued(queue) == bytes([3, 4, 5, 6, 7, 8, 9]) + b"next"
    assert queue.size == 11


def test_consume_twice_inside_a_piece_still_views_the_original():
    original = b"0123456789"
    queue = queue_of(original)
    queue.consume(3)
    queue.consume(2)
    piece = queue.head()[0]
    assert piece.obj is original
    assert bytes(piece) == b"56789"
    assert queue.size == 5


def test_consume_across_several_pieces_ends_inside_the_last():
    last = b"fghij"
    queue = queue_of(b"abc", b"de", last, b"k")
    queue.consume(7)
    pieces = queue.head()
    assert len(pieces) == 2
    assert pieces[0].obj is last and bytes(pieces[0]) == b"hij"
    assert pieces[1] == b"k"
    assert queue.size == 4


def test_consume_inside_a_queued_bytearray():
    original = bytearray(b"abcdef")
    queue = queue_of(original)
    queue.consume(4)
    assert queued(queue) == b"ef"
    assert queue.head()[0].obj is original


def test_consume_of_nothing_changes_nothing():
    first = b"abc"
    queue = queue_of(first, b"de")
    queue.consume(0)
    assert queue.head() == [b"abc", b"de"] and queue.head()[0] is first
    assert queue.size == 5


def test_consume_of_everything_empties_the_queue():
    queue = queue_of(b"abc", b"de", b"fgh")
    queue.consume(8)
    assert queue.head() == []
    assert queue.size == len(queue) == 0


def test_consume_one_byte_at_a_time_gives_every_byte_once():
    data = [b"a", b"bc", b"def", b"ghij"]
    queue = queue_of(*data)
    seen = bytearray()
    while queue.size:
        seen += bytes(queue.head()[0][:1])
        queue.consume(1)
    assert seen == b"abcdefghij"
    assert queue.head() == []


# ---- head: at most what one sendmsg takes ---------------------------------------

def test_max_pieces_is_between_the_posix_minimum_and_1024():
    # POSIX guarantees IOV_MAX >= 16 (_XOPEN_IOV_MAX); Linux has 1024.
    assert 16 <= MAX_PIECES <= 1024


def test_head_is_at_most_max_pieces():
    pieces = [bytes([index % 256]) * 3 for index in range(MAX_PIECES + 5)]
    queue = queue_of(*pieces)
    head = queue.head()
    assert len(head) == MAX_PIECES
    assert head == pieces[:MAX_PIECES]
    assert queue.size == 3 * (MAX_PIECES + 5)     # the rest is still queued


def test_head_after_consuming_the_first_max_pieces_is_the_rest():
    pieces = [index.to_bytes(2, "big") for index in range(MAX_PIECES + 5)]
    queue = queue_of(*pieces)
    queue.consume(2 * MAX_PIECES)
    assert queue.head() == pieces[MAX_PIECES:]


def test_head_of_a_short_queue_is_every_piece():
    queue = queue_of(b"a", b"b", b"c")
    assert queue.head() == [b"a", b"b", b"c"]


# ---- over a real socket ------------------------------------------------------------

def test_many_pieces_and_a_multi_megabyte_one_arrive_byte_exact_through_sendmsg():
    # 1500 small pieces (more than one sendmsg takes) around a 4 MiB one
    # (more than a socket buffer holds): every write is partial somewhere,
    # inside a small piece or inside the big one.
    rng = random.Random(6455)
    pieces = [rng.randbytes(rng.randrange(1, 300)) for _ in range(1500)]
    pieces.insert(700, rng.randbytes(4 * 1024 * 1024 + 3))
    expected = b"".join(pieces)
    queue = queue_of(*pieces)
    assert queue.size == len(expected)

    sender, receiver = socket.socketpair()
    with sender, receiver:
        sender.setblocking(False)
        receiver.setblocking(False)
        received = bytearray()
        buffer = bytearray(256 * 1024)
        writes = 0
        deadline = time.monotonic() + 10
        while len(received) < len(expected):
            assert time.monotonic() < deadline, f"{len(received)} of {len(expected)} bytes came"
            readable, writable, _ = select.select([receiver], [sender] if queue.size else [],
                                                  [], 1.0)
            if writable:
                try:
                    sent = sender.sendmsg(queue.head())
                except BlockingIOError:
                    sent = 0
                queue.consume(sent)
                writes += 1
            if readable:
                count = receiver.recv_into(buffer)
                received += memoryview(buffer)[:count]
        assert queue.size == 0 and queue.head() == []
        assert writes > 1
        assert received == expected
        sender.close()
        assert receiver.recv(1) == b""                # and nothing more
