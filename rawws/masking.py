"""Fast masking (RFC 6455 §5.3) for the hot paths, and the spare buffer big frames use.

`rawws.frames.mask` is the reference: octet i XOR key octet i mod 4, one
byte at a time, as the RFC words it. The functions here give the same bytes,
faster (tests/test_masking.py compares them with the reference):

    mask(data, key) -> bytes                     masked copy of a payload
    mask_chunks(data, key) -> list[bytes]        the same, in pieces to send as they are
    mask_in_place(buffer, key, start=0, end=None)  XOR a bytearray's slice where it lies
    masked_slice(buffer, start, end, key) -> bytes   a payload out of the parser's buffer

In each, `key` is the key for the first byte handed over: a caller that
masks a payload in pieces turns the key by the length of what came before.

They come in two implementations with the same signatures:

- **C** (`rawws/_speedups.c`): XOR a machine word (or a vector register) at
  a time. `pip install` builds it when a C compiler is there; it is optional.
- **pure Python**: the same results from big-integer and `bytes.translate`
  tricks, which run in C inside the interpreter (comments below say which).

The C one is used when it was built, unless the environment variable
`RAWWS_PURE_PYTHON` is set (to anything but "" or "0"). `IMPLEMENTATION`
names the one in use; docs/performance.md has what each measures.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from importlib import import_module
from operator import xor
from typing import NamedTuple

log = logging.getLogger("rawws.masking")

MASK_KEY_SIZE = 4


# ---- pure Python ----------------------------------------------------------------

# Payloads are XORed in chunks of this many bytes: a key int the size of a
# chunk stays in the CPU's cache, one the size of a big payload does not.
_CHUNK = 32 * 1024
# A 1 in every 4th byte of a chunk: key * _KEY_REPEAT is the key repeated
# over a whole chunk, as an int (a multiplication instead of converting
# the repeated key's bytes).
_KEY_REPEAT = int.from_bytes(b"\x01\x00\x00\x00" * (_CHUNK // 4), "little")
# From this size a payload in the parser's buffer is unmasked where it lies,
# then copied out once (`_masked_slice`).
_IN_PLACE_MIN = 1024

# Looked up once: `int.from_bytes` in a call makes a bound method each time.
_from_bytes = int.from_bytes


def _mask(data: bytes | bytearray | memoryview, key: bytes) -> bytes:
    """Payload and repeated key as two ints, one XOR, back to bytes.

    Python's big integers XOR a machine word at a time in C; chunked past
    `_CHUNK` bytes (`_mask_chunks`).
    """
    length = len(data)
    if length > _CHUNK:
        return b"".join(_mask_chunks(data, key))
    if length == 0:
        return b""
    repeated_key = (key * (length // MASK_KEY_SIZE + 1))[:length]
    masked = _from_bytes(data, "little") ^ _from_bytes(repeated_key, "little")
    return masked.to_bytes(length, "little")


def _mask_chunks(data: bytes | bytearray | memoryview, key: bytes) -> list[bytes]:
    """`_mask` as pieces of `_CHUNK` bytes (the last one shorter), XORed with one key int.

    A caller that can use the pieces as they are (a client queueing a big
    frame for a vectored write) saves joining them.
    """
    length = len(data)
    chunk = _CHUNK
    from_bytes = _from_bytes
    key_int = from_bytes(key, "little") * _KEY_REPEAT
    with memoryview(data) as view:
        whole = length - length % chunk   # chunks are multiples of 4: the key stays aligned
        parts = [(from_bytes(view[start:start + chunk], "little") ^ key_int).to_bytes(chunk, "little")
                 for start in range(0, whole, chunk)]
        if whole < length:
            rest = length - whole
            rest_key = key_int & ((1 << (8 * rest)) - 1)   # the key over `rest` bytes
            parts.append((from_bytes(view[whole:], "little") ^ rest_key).to_bytes(rest, "little"))
    return parts


def _mask_in_place(buffer: bytearray, key: bytes, start: int = 0, end: int | None = None) -> None:
    """Four strided passes: every fourth byte, from `start + lane`, through a translate table.

    Byte i is XORed with key[i % 4], so all the bytes of one lane get the
    same key byte: `bytes.translate` with a table that XORs by it does a
    lane in C, and the slice assignment writes it back where it was.
    """
    if end is None:
        end = len(buffer)
    for lane, key_byte in enumerate(key):
        first = start + lane
        buffer[first:end:MASK_KEY_SIZE] = buffer[first:end:MASK_KEY_SIZE].translate(
            _xor_table(key_byte))


_xor_tables: dict[int, bytes] = {}


def _xor_table(key_byte: int) -> bytes:
    """The bytes.translate table that XORs every byte with `key_byte` (made once, kept)."""
    table = _xor_tables.get(key_byte)
    if table is None:
        table = _xor_tables[key_byte] = bytes(value ^ key_byte for value in range(256))
    return table


def _masked_slice(buffer: bytes | bytearray | memoryview, start: int, end: int,
                  key: bytes | bytearray | memoryview) -> bytes:
    """buffer[start:end] XOR key, as bytes; in a bytearray, a slice of `_IN_PLACE_MIN`
    bytes or more is unmasked where it lies first, so the caller must not need it
    masked again (the parser's buffer; a read it parses where it lies is left as it is)."""
    size = end - start
    if size >= _IN_PLACE_MIN and type(buffer) is bytearray:
        _mask_in_place(buffer, key, start, end)
        with memoryview(buffer) as view:   # read through a view: no slice copy
            return bytes(view[start:end])
    if size <= MASK_KEY_SIZE:
        # Tiny payloads, and a peer trickling bytes: XOR them one by one.
        return bytes(map(xor, buffer[start:end], key))
    return _mask(buffer[start:end], bytes(key))


# ---- the two implementations -----------------------------------------------------

class Implementation(NamedTuple):
    """One set of the masking functions, under the name `IMPLEMENTATION` takes."""

    name: str
    mask: Callable[[bytes | bytearray | memoryview, bytes], bytes]
    mask_chunks: Callable[[bytes | bytearray | memoryview, bytes], list[bytes]]
    mask_in_place: Callable[..., None]
    masked_slice: Callable[[bytearray, int, int, bytes | bytearray], bytes]


PURE_PYTHON = Implementation("pure Python", _mask, _mask_chunks, _mask_in_place, _masked_slice)


def accelerated() -> Implementation | None:
    """The C implementation, or None when `rawws._speedups` was not built."""
    try:
        speedups = import_module("rawws._speedups")
    except ImportError:
        return None
    c_masked_slice = speedups.masked_slice

    def mask_chunks(data: bytes | bytearray | memoryview, key: bytes) -> list[bytes]:
        # The same pieces as the pure path's: no piece is a big allocation
        # of its own (which glibc would map and unmap at every frame).
        length = len(data)
        return [c_masked_slice(data, start, min(start + _CHUNK, length), key)
                for start in range(0, length, _CHUNK)]

    return Implementation("C", speedups.mask, mask_chunks, speedups.mask_in_place,
                          c_masked_slice)


def _choose() -> Implementation:
    if os.environ.get("RAWWS_PURE_PYTHON", "") not in ("", "0"):
        return PURE_PYTHON
    return accelerated() or PURE_PYTHON


ACTIVE = _choose()
IMPLEMENTATION = ACTIVE.name
mask = ACTIVE.mask
mask_chunks = ACTIVE.mask_chunks
mask_in_place = ACTIVE.mask_in_place
masked_slice = ACTIVE.masked_slice
log.debug("masking in %s", IMPLEMENTATION)


# ---- the spare payload buffer -------------------------------------------------------

# A big frame still arriving (`rawws.frames.StreamedFrame`) is unmasked in
# a bytearray borrowed from here and given back with its memory, so frames
# one after another reuse the same pages instead of faulting fresh ones in.
# At most one spare for the process, of at most this many bytes; list.pop
# and list.append are atomic, so clients in several threads can share it.
_SPARE_BUFFER_MAX = 16 * 1024 * 1024
_spare_buffers: list[bytearray] = []


def borrow_buffer() -> bytearray:
    """The spare buffer if there is one (with its memory), else a new empty bytearray."""
    try:
        return _spare_buffers.pop()
    except IndexError:
        return bytearray()


def give_back_buffer(buffer: bytearray) -> None:
    """Keep `buffer` as the spare, unless there is one already or it is too big to keep."""
    if len(buffer) <= _SPARE_BUFFER_MAX and not _spare_buffers:
        _spare_buffers.append(buffer)
