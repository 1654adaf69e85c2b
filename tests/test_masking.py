"""rawws.masking: the fast masking functions give the bytes of the §5.3 reference.

`rawws.frames.mask` is masking as RFC 6455 §5.3 words it, one byte at a
time. Every function of `rawws.masking` is run here on the same inputs as
that reference and must give the same bytes: random lengths from 0 to
70 KiB, data starting at every alignment in memory, slices starting and
ending at every offset, random keys, and keys turned to an offset within a
payload. Each test runs on each implementation (`tests/masking_paths.py`):
pure Python, and C when it was built.
"""
from __future__ import annotations

import random

import pytest

from rawws import masking
from rawws.frames import mask as reference

from tests.masking_paths import masking_path  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("masking_path")

RFC_KEY = bytes([0x37, 0xFA, 0x21, 0x3D])      # §5.7's key
HELLO_MASKED = bytes([0x7F, 0x9F, 0x4D, 0x51, 0x58])   # "Hello" masked with it (§5.7)
MAX_LENGTH = 70 * 1024
ALIGNMENTS = range(32)    # wider than any word or vector register the C code uses


def turned(key: bytes, offset: int) -> bytes:
    """The key for payload byte `offset` (§5.3: byte i is masked with key[i % 4])."""
    shift = offset % 4
    return key[shift:] + key[:shift]


def cases(seed: int, count: int) -> list[tuple[bytes, bytes]]:
    """(data, key) pairs: every length to 70, then random lengths up to 70 KiB."""
    rng = random.Random(seed)
    lengths = list(range(71)) + [rng.randint(71, MAX_LENGTH) for _ in range(count)]
    lengths += [MAX_LENGTH, masking._CHUNK - 1, masking._CHUNK, masking._CHUNK + 1]
    return [(rng.randbytes(length), rng.randbytes(4)) for length in lengths]


def test_the_implementation_under_test_is_the_one_rawws_uses(masking_path):  # noqa: F811
    # tests/masking_paths.py swaps it into every module that holds one.
    from rawws import protocol
    assert masking.IMPLEMENTATION == masking_path.name
    assert masking.mask_in_place is masking_path.mask_in_place
    assert masking.masked_slice is masking_path.masked_slice
    assert protocol.mask_chunks is masking_path.mask_chunks


# ---- §5.3's example and the edges -------------------------------------------------

def test_the_reference_gives_the_rfc_example():
    assert reference(b"Hello", RFC_KEY) == HELLO_MASKED


def test_every_function_gives_the_rfc_example():
    assert masking.mask(b"Hello", RFC_KEY) == HELLO_MASKED
    assert masking.mask_chunks(b"Hello", RFC_KEY) == [HELLO_MASKED]
    buffer = bytearray(b"Hello")
    masking.mask_in_place(buffer, RFC_KEY)
    assert buffer == HELLO_MASKED
    assert masking.masked_slice(bytearray(b"..Hello.."), 2, 7, RFC_KEY) == HELLO_MASKED


def test_nothing_masked_is_nothing():
    assert masking.mask(b"", RFC_KEY) == b""
    assert masking.mask_chunks(b"", RFC_KEY) == []
    buffer = bytearray(b"abc")
    masking.mask_in_place(buffer, RFC_KEY, 2, 2)
    assert buffer == b"abc"
    assert masking.masked_slice(bytearray(b"abc"), 1, 1, RFC_KEY) == b""


def test_masking_twice_gives_back_the_data():
    data = random.Random(1).randbytes(5000)
    assert masking.mask(masking.mask(data, RFC_KEY), RFC_KEY) == data


def test_zero_bytes_at_either_end_survive():
    # The pure path goes through ints, which drop leading zeros.
    for length in (1, 3, 4, 9, masking._CHUNK + 3):
        assert masking.mask(bytes(length), bytes(4)) == bytes(length)
        assert b"".join(masking.mask_chunks(bytes(length), bytes(4))) == bytes(length)


def test_mask_returns_bytes_for_bytes_bytearray_and_memoryview():
    for data in (b"Hello", bytearray(b"Hello"), memoryview(b"..Hello")[2:]):
        result = masking.mask(data, RFC_KEY)
        assert type(result) is bytes and result == HELLO_MASKED


def test_the_key_may_be_a_bytearray():
    # The parser takes the key as a slice of its bytearray.
    key = bytearray(RFC_KEY)
    assert masking.mask(b"Hello", key) == HELLO_MASKED
    assert masking.masked_slice(bytearray(b"Hello"), 0, 5, key) == HELLO_MASKED
    buffer = bytearray(b"Hello")
    masking.mask_in_place(buffer, key)
    assert buffer == HELLO_MASKED


# ---- the same bytes as the reference ------------------------------------------------

@pytest.mark.parametrize("seed", [6455, 17])
def test_mask_and_mask_chunks_match_the_reference(seed):
    for data, key in cases(seed, 40):
        expected = reference(data, key)
        assert masking.mask(data, key) == expected, (len(data), key.hex())
        chunks = masking.mask_chunks(data, key)
        assert b"".join(chunks) == expected, (len(data), key.hex())
        assert all(type(chunk) is bytes for chunk in chunks)


@pytest.mark.parametrize("seed", [6455, 17])
def test_mask_in_place_matches_the_reference_and_touches_nothing_else(seed):
    rng = random.Random(seed)
    for data, key in cases(seed, 40):
        before, after = rng.randbytes(rng.randrange(9)), rng.randbytes(rng.randrange(9))
        buffer = bytearray(before + data + after)
        masking.mask_in_place(buffer, key, len(before), len(before) + len(data))
        assert buffer == before + reference(data, key) + after, (len(data), key.hex())


@pytest.mark.parametrize("seed", [6455, 17])
def test_masked_slice_matches_the_reference_and_leaves_the_rest(seed):
    rng = random.Random(seed)
    for data, key in cases(seed, 40):
        before, after = rng.randbytes(rng.randrange(9)), rng.randbytes(rng.randrange(9))
        buffer = bytearray(before + data + after)
        start, end = len(before), len(before) + len(data)
        assert masking.masked_slice(buffer, start, end, key) == reference(data, key)
        # The slice itself may be left unmasked in place; the bytes around it not touched.
        assert buffer[:start] == before and buffer[end:] == after


def test_mask_in_place_to_the_end_by_default():
    data = random.Random(2).randbytes(1000)
    buffer = bytearray(data)
    masking.mask_in_place(buffer, RFC_KEY, 3)
    assert buffer == data[:3] + reference(data[3:], RFC_KEY)


# ---- every alignment --------------------------------------------------------------

LENGTHS = [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 255, 1023,
           1024, 1025, 4099]


def test_mask_of_data_at_every_alignment():
    # A memoryview into a bigger buffer starts at any address: the C code's
    # word and vector loads must not depend on it.
    rng = random.Random(3)
    for length in LENGTHS:
        key = rng.randbytes(4)
        backing = rng.randbytes(length + 64)
        for alignment in ALIGNMENTS:
            data = memoryview(backing)[alignment:alignment + length]
            assert masking.mask(data, key) == reference(data, key), (length, alignment)


def test_mask_in_place_from_every_start_to_every_end_offset():
    rng = random.Random(4)
    for length in LENGTHS:
        key = rng.randbytes(4)
        original = rng.randbytes(length + 2 * len(ALIGNMENTS))
        for start in ALIGNMENTS:
            end = start + length + rng.randrange(len(ALIGNMENTS))
            buffer = bytearray(original)
            masking.mask_in_place(buffer, key, start, end)
            expected = original[:start] + reference(original[start:end], key) + original[end:]
            assert buffer == expected, (length, start, end)


def test_masked_slice_from_every_start_offset():
    rng = random.Random(5)
    for length in LENGTHS:
        key = rng.randbytes(4)
        original = rng.randbytes(length + len(ALIGNMENTS))
        for start in ALIGNMENTS:
            end = start + length
            got = masking.masked_slice(bytearray(original), start, end, key)
            assert got == reference(original[start:end], key), (length, start)


# ---- a payload in pieces, with the key turned ----------------------------------------

def test_a_payload_masked_in_pieces_with_turned_keys_is_masked_whole():
    # What the parser does for a frame read in pieces (PendingFrame.read,
    # StreamedFrame): the key for each piece is turned by the bytes before it.
    rng = random.Random(6)
    for _ in range(30):
        data = rng.randbytes(rng.randint(0, MAX_LENGTH))
        key = rng.randbytes(4)
        cuts = sorted(rng.randint(0, len(data)) for _ in range(rng.randint(0, 6)))
        pieces = list(zip([0] + cuts, cuts + [len(data)]))
        expected = reference(data, key)
        assert b"".join(masking.mask(data[a:b], turned(key, a)) for a, b in pieces) == expected
        buffer = bytearray(data)
        for a, b in pieces:
            masking.mask_in_place(buffer, turned(key, a), a, b)
        assert buffer == expected
        buffer = bytearray(data)
        assert b"".join(masking.masked_slice(buffer, a, b, turned(key, a))
                        for a, b in pieces) == expected


# ---- mask_chunks's pieces ------------------------------------------------------------

def test_mask_chunks_are_chunk_sized_but_the_last():
    chunk = masking._CHUNK
    sizes = [len(piece) for piece in masking.mask_chunks(bytes(3 * chunk + 1699), RFC_KEY)]
    assert sizes == [chunk, chunk, chunk, 1699]
    assert [len(piece) for piece in masking.mask_chunks(bytes(2 * chunk), RFC_KEY)] == [chunk, chunk]


# ---- the spare buffer ----------------------------------------------------------------

@pytest.fixture
def pool():
    masking._spare_buffers.clear()
    yield masking._spare_buffers
    masking._spare_buffers.clear()


def test_a_buffer_given_back_is_the_next_one_borrowed(pool):
    buffer = masking.borrow_buffer()
    assert buffer == bytearray() and buffer is not masking.borrow_buffer()
    buffer += bytes(1000)
    masking.give_back_buffer(buffer)
    assert masking.borrow_buffer() is buffer
    assert pool == []


def test_only_one_spare_is_kept(pool):
    first, second = bytearray(10), bytearray(10)
    masking.give_back_buffer(first)
    masking.give_back_buffer(second)
    assert pool == [first] and pool[0] is first
