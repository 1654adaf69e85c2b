"""RESP2, the Redis serialization protocol, with no I/O.

A client sends each command as an array of bulk strings:

    SET greeting hello   ->   *3\\r\\n$3\\r\\nSET\\r\\n$8\\r\\ngreeting\\r\\n$5\\r\\nhello\\r\\n

and the server answers each command with one reply, in order. The first byte
of a reply names its type; every line ends with CRLF:

    +OK\\r\\n                    simple string  -> str      "OK"
    -ERR unknown command\\r\\n   error          -> ReplyError (returned, not raised)
    :42\\r\\n                    integer        -> int      42
    $5\\r\\nhello\\r\\n            bulk string    -> bytes    b"hello"
    $-1\\r\\n                    null bulk      -> None
    *2\\r\\n:1\\r\\n$1\\r\\nx\\r\\n      array          -> list     [1, b"x"]   (items of any type)
    *-1\\r\\n                    null array     -> None

A bulk string carries its length first, so it may hold any bytes, CR and LF
included; simple strings, errors and integers are one line each. RESP3's
extra types (maps, sets, doubles, pushes; a connection gets them only after
asking with HELLO 3) are refused here: this client speaks RESP2.

`encode_command(*args)` turns one command into bytes. `RespParser` takes the
server's bytes in chunks of any size (`feed`) and hands out whole replies
(`next_reply`), or `NEED_DATA` until one has arrived; `None` is a reply (a
null), hence the sentinel. It keeps its progress between calls (the line
search resumes where it stopped, a bulk string's header is read once, arrays
being filled stay on a stack), so a reply trickling in a byte at a time
costs no more than one arriving whole.

A server cannot make the parser hold more than its limits allow: a bulk
string or array announcing more than `max_bulk_length` bytes or
`max_array_length` items is refused from its header, before its contents
arrive; arrays nest at most `max_depth` deep; a line (simple string, error,
integer, length) is at most `max_line_length` bytes. Any breach, and any
byte that is not RESP, raises `RespProtocolError`; the parser stays failed
(the stream has no way to resynchronise), and the connection is dropped.
"""
from __future__ import annotations

import re

from .errors import ReplyError, RespProtocolError

__all__ = ["NEED_DATA", "RespParser", "encode_command", "ReplyError", "RespProtocolError"]

CRLF = b"\r\n"

# Defaults. Redis itself refuses bulk strings over 512 MiB (proto-max-bulk-len);
# a client that keeps every reply in memory is better served by a lower bound,
# which a caller storing big values raises.
DEFAULT_MAX_BULK_LENGTH = 64 * 1024 * 1024
DEFAULT_MAX_ARRAY_LENGTH = 4 * 1024 * 1024
DEFAULT_MAX_DEPTH = 32            # XREAD's reply nests 4 deep, COMMAND's about 6
DEFAULT_MAX_LINE_LENGTH = 64 * 1024

# Integers are signed 64-bit on the wire; 19 digits hold any of them, and
# the range is checked after. Lengths are -1 (null) or not negative.
_INTEGER = re.compile(rb"-?[0-9]{1,19}")
_LENGTH = re.compile(rb"-1|[0-9]{1,19}")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

_SIMPLE, _ERROR, _INTEGER_TYPE, _BULK, _ARRAY = b"+-:$*"
_RESP3_TYPES = frozenset(b"_,#=(!%~>|")


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
"""What `RespParser.next_reply()` returns until a whole reply has arrived."""

Reply = str | bytes | int | None | list | ReplyError


# ---- encoding ------------------------------------------------------------------

def encode_command(*args: str | bytes | bytearray | memoryview | int) -> bytes:
    """One command as RESP: an array of bulk strings.

    str is sent as UTF-8, int in decimal, bytes as they are. Anything else
    (floats, bools, None) is a TypeError: Redis has one way to spell each
    argument, and the caller picks it.
    """
    if not args:
        raise ValueError("a command needs at least its name")
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode("utf-8")
        elif isinstance(arg, (bytes, bytearray, memoryview)):
            data = bytes(arg)
        elif isinstance(arg, int) and not isinstance(arg, bool):
            data = b"%d" % arg
        else:
            raise TypeError(f"a Redis argument is str, bytes or int, not {type(arg).__name__}")
        parts += (b"$%d\r\n" % len(data), data, CRLF)
    return b"".join(parts)


# ---- parsing -------------------------------------------------------------------

class RespParser:
    """Turns the server's byte stream, fed in chunks of any size, into replies."""

    def __init__(self, *, max_bulk_length: int = DEFAULT_MAX_BULK_LENGTH,
                 max_array_length: int = DEFAULT_MAX_ARRAY_LENGTH,
                 max_depth: int = DEFAULT_MAX_DEPTH,
                 max_line_length: int = DEFAULT_MAX_LINE_LENGTH) -> None:
        self.max_bulk_length = max_bulk_length
        self.max_array_length = max_array_length
        self.max_depth = max_depth
        self.max_line_length = max_line_length
        self._buffer = bytearray()
        self._scan = 0          # where the search for the next CRLF resumes
        self._bulk = -1         # a bulk string's length once its header is read, else -1
        self._stack: list[tuple[list, int]] = []   # arrays being filled: (items, count)
        self._error: RespProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet part of a reply handed out."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._error is None:
            self._buffer += data

    def next_reply(self) -> Reply | _NeedData:
        """The next whole reply, or NEED_DATA until more bytes arrive.

        Raises RespProtocolError on bytes that are not RESP or break a
        limit, and again on every later call.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._parse()
        except RespProtocolError as error:
            self._error = error
            self._buffer.clear()
            self._stack.clear()
            raise

    def _parse(self) -> Reply | _NeedData:
        buffer = self._buffer
        stack = self._stack
        while True:
            # Read one value: a scalar, or the header of an array to fill.
            if self._bulk >= 0:
                end = self._bulk
                if len(buffer) < end + 2:
                    return NEED_DATA
                if buffer[end:end + 2] != CRLF:
                    raise RespProtocolError(f"a bulk string of {end} bytes is not followed by CRLF")
                value = bytes(buffer[:end])
                del buffer[:end + 2]
                self._bulk = -1
            else:
                end = buffer.find(CRLF, self._scan)
                if end < 0:
                    # The line so far, but for a CR at the end that may get its LF.
                    if len(buffer) - 1 > self.max_line_length:
                        raise RespProtocolError(f"a line over {self.max_line_length} bytes")
                    self._scan = max(0, len(buffer) - 1)
                    return NEED_DATA
                if end > self.max_line_length:
                    raise RespProtocolError(f"a line over {self.max_line_length} bytes")
                self._scan = 0
                kind = buffer[0] if end else None
                line = bytes(buffer[1:end])
                del buffer[:end + 2]
                if kind == _BULK:
                    length = self._length(line, "bulk string", self.max_bulk_length)
                    if length >= 0:
                        self._bulk = length
                        continue
                    value = None
                elif kind == _ARRAY:
                    count = self._length(line, "array", self.max_array_length)
                    if len(stack) >= self.max_depth:
                        raise RespProtocolError(f"arrays nested more than {self.max_depth} deep")
                    if count > 0:
                        stack.append(([], count))
                        continue
                    value = None if count < 0 else []
                elif kind == _SIMPLE:
                    value = line.decode("utf-8", "replace")
                elif kind == _ERROR:
                    value = ReplyError(line.decode("utf-8", "replace"))
                elif kind == _INTEGER_TYPE:
                    value = _integer(line)
                elif kind in _RESP3_TYPES:
                    raise RespProtocolError(f"RESP3 type {chr(kind)!r} (this client speaks RESP2)")
                else:
                    shown = "an empty line" if kind is None else f"type byte {bytes((kind,))!r}"
                    raise RespProtocolError(f"{shown} where a reply should start")
            # Put it in the array being filled; a full array is a value in turn.
            while stack:
                items, count = stack[-1]
                items.append(value)
                if len(items) < count:
                    break
                stack.pop()
                value = items
            else:
                return value

    @staticmethod
    def _length(line: bytes, what: str, limit: int) -> int:
        if _LENGTH.fullmatch(line) is None:
            raise RespProtocolError(f"bad {what} length {line[:40]!r}")
        length = int(line)
        if length > limit:
            raise RespProtocolError(f"{what} of {length} over the limit of {limit}")
        return length


def _integer(line: bytes) -> int:
    if _INTEGER.fullmatch(line) is None:
        raise RespProtocolError(f"bad integer {line[:40]!r}")
    value = int(line)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise RespProtocolError(f"integer {value} outside 64 bits")
    return value
