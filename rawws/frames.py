"""The WebSocket frame (RFC 6455 §5.2): encoding, masking and incremental parsing.

A frame on the wire:

     0               1               2               3
     0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7
    +-+-+-+-+-------+-+-------------+-------------------------------+
    |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
    |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
    |N|V|V|V|       |S|             |   (if payload len==126/127)   |
    | |1|2|3|       |K|             |                               |
    +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
    |     Extended payload length continued, if payload len == 127  |
    + - - - - - - - - - - - - - - - +-------------------------------+
    |                               | Masking-key, if MASK set to 1 |
    +-------------------------------+-------------------------------+
    | Masking-key (continued)       |          Payload Data         |
    +-------------------------------- - - - - - - - - - - - - - - - +

This module knows single frames only; messages, fragmentation and the closing
handshake live in `rawws.protocol`. `mask()` here is masking as §5.3 states
it; the parser and the encoder use the fast versions of `rawws.masking`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from . import masking
from .close import CLOSE_NO_STATUS, is_valid_close_code
from .errors import InvalidPayload, MessageTooBig, ProtocolError

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

DATA_OPCODES = frozenset({OP_CONTINUATION, OP_TEXT, OP_BINARY})
CONTROL_OPCODES = frozenset({OP_CLOSE, OP_PING, OP_PONG})
KNOWN_OPCODES = DATA_OPCODES | CONTROL_OPCODES

FIN_BIT = 0x80
RSV1_BIT = 0x40
RSV2_BIT = 0x20
RSV3_BIT = 0x10
RSV_BITS = RSV1_BIT | RSV2_BIT | RSV3_BIT
OPCODE_BITS = 0x0F
MASK_BIT = 0x80
LENGTH_BITS = 0x7F

LENGTH_16BIT = 126          # §5.2: "If 126, the following 2 bytes ... are the payload length"
LENGTH_64BIT = 127          # §5.2: "If 127, the following 8 bytes ..."
MAX_CONTROL_PAYLOAD = 125   # §5.5: control frames carry at most 125 bytes
MASK_KEY_SIZE = 4

DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
# Past this size an unmasked payload is read through a memoryview rather
# than a slice of the buffer: one full copy less.
_COPY_FREE_THRESHOLD = 4096

# A frame at least this long whose payload has not all arrived is unmasked
# piece by piece as its bytes come, straight out of each read, rather than
# gathered in the parser's buffer first (`StreamedFrame`): the buffer then
# never grows to hold a big frame, a copy less and, on a VM where fresh
# memory costs page faults, most of the cost of a big frame besides the
# unmasking itself (docs/performance.md has the figures).
STREAM_THRESHOLD = 64 * 1024
# Reads shorter than this, from a peer trickling a big frame, are gathered
# (still masked) until there are this many bytes: a piece kept per read of
# a few bytes would cost an object per read.
_STREAM_PIECE_MIN = 4096

_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")
_UINT16 = struct.Struct("!H")
_UINT64 = struct.Struct("!Q")


@dataclass(slots=True)
class Frame:
    """One parsed frame, payload already unmasked.

    Not frozen: frame objects are made on the parsing hot path, and a frozen
    dataclass's __init__ sets each field through object.__setattr__.
    """

    opcode: int
    payload: bytes
    fin: bool = True
    rsv1: bool = False
    rsv2: bool = False
    rsv3: bool = False


def mask(data: bytes | bytearray | memoryview, key: bytes | bytearray) -> bytes:
    """XOR `data` with the repeating 4-byte `key` (RFC 6455 §5.3); the same call unmasks.

    The reference, written as §5.3 states it: "Octet i of the transformed
    data ("transformed-octet-i") is the XOR of octet i of the original data
    ("original-octet-i") with octet at index i modulo 4 of the masking key
    ("masking-key-octet-j"):

        j                   = i MOD 4
        transformed-octet-i = original-octet-i XOR masking-key-octet-j"

    A client picks a fresh, unpredictable key for every frame (§5.3, §10.3),
    so that a payload it sends cannot be chosen by a script to look like
    other traffic to a proxy on the way. Masking is its own inverse.

    One byte at a time this is slow; `rawws.masking` has the same function,
    fast (in C or with big-integer tricks), tested against this one.
    """
    if len(key) != MASK_KEY_SIZE:
        raise ValueError("a masking key is exactly 4 bytes")
    return bytes(octet ^ key[i % MASK_KEY_SIZE] for i, octet in enumerate(data))


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True,
                 mask_key: bytes | None = None, rsv1: bool = False,
                 rsv2: bool = False, rsv3: bool = False) -> bytes:
    """Serialize one frame; masked when a 4-byte `mask_key` is given (clients must mask)."""
    header = frame_header(opcode, len(payload), fin=fin, mask_key=mask_key,
                          rsv1=rsv1, rsv2=rsv2, rsv3=rsv3)
    if mask_key is None:
        return header + payload
    return header + masking.mask(payload, mask_key)


def frame_header(opcode: int, length: int, *, fin: bool = True,
                 mask_key: bytes | None = None, rsv1: bool = False,
                 rsv2: bool = False, rsv3: bool = False) -> bytes:
    """A frame's bytes before its payload: flags, opcode, length and the masking key if any.

    With it a big payload can be written after its header as it is (a
    vectored write), not copied into one bytes object with it.
    """
    first = opcode | (FIN_BIT if fin else 0)
    if rsv1:
        first |= RSV1_BIT
    if rsv2:
        first |= RSV2_BIT
    if rsv3:
        first |= RSV3_BIT
    mask_flag = MASK_BIT if mask_key is not None else 0
    # §5.2: "the minimal number of bytes MUST be used to encode the length".
    if length < LENGTH_16BIT:
        header = bytes((first, mask_flag | length))
    elif length <= 0xFFFF:
        header = _HEADER_16.pack(first, mask_flag | LENGTH_16BIT, length)
    else:
        header = _HEADER_64.pack(first, mask_flag | LENGTH_64BIT, length)
    if mask_key is None:
        return header
    if len(mask_key) != MASK_KEY_SIZE:
        raise ValueError("a masking key is exactly 4 bytes")
    return header + mask_key


# The header of every unmasked, unfragmented data frame with a 7-bit length
# (§5.2), by opcode, then length: a server's short message is this header and
# its payload, one lookup instead of building two bytes (hot path).
SHORT_HEADERS: dict[int, tuple[bytes, ...]] = {
    opcode: tuple(bytes((FIN_BIT | opcode, length)) for length in range(LENGTH_16BIT))
    for opcode in (OP_TEXT, OP_BINARY)}


def encode_close_payload(code: int | None, reason: str = "") -> bytes:
    """The body of a Close frame (§5.5.1): a 2-byte code, then a UTF-8 reason."""
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent")
    body = _UINT16.pack(code) + reason.encode("utf-8")
    if len(body) > MAX_CONTROL_PAYLOAD:
        raise ValueError("close reason is longer than 123 bytes")
    return body


def decode_close_payload(payload: bytes) -> tuple[int, str]:
    """Parse a received Close frame's body into (code, reason).

    An empty body means no code was given: 1005 (§7.1.5), which is never on the wire.
    """
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        # §5.5.1: if there is a body, its first two bytes are the code.
        raise ProtocolError("close frame body of one byte")
    (code,) = _UINT16.unpack_from(payload)
    if not is_valid_close_code(code):
        # §7.4: codes outside the defined and registered ranges are invalid.
        raise ProtocolError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        # §5.5.1: the reason is UTF-8; §8.1: invalid UTF-8 fails the connection.
        raise InvalidPayload("close reason is not valid UTF-8") from None
    return code, reason


# ---- the header's rules ------------------------------------------------------
#
# Stated once, here: `FrameParser` refuses a frame for the first rule its
# header breaks, and `rawws.tools.trace` names every one it breaks.

_RSV_NAMES = ((RSV1_BIT, "RSV1"), (RSV2_BIT, "RSV2"), (RSV3_BIT, "RSV3"))


@dataclass(frozen=True, slots=True)
class HeaderViolation:
    """A rule a frame header breaks: where it shows, the rule, and the error it is.

    `byte` counts from the frame's first byte; `reason` is what the parser's
    error says (and so the reason of the Close frame that fails the
    connection); `detail` explains it to a reader of `rawws.tools.trace`.
    """

    byte: int
    rule: str                                # "RFC 6455 §5.2"
    error_type: type[ProtocolError]          # ProtocolError (1002) or MessageTooBig (1009)
    reason: str
    detail: str

    @property
    def close_code(self) -> int:
        return self.error_type.close_code

    def error(self) -> ProtocolError:
        """The exception the parser raises for it."""
        return self.error_type(self.reason)


def header_violations(first: int, second: int, length: int | None = None, *,
                      require_mask: bool | None = None, allowed_rsv_bits: int = 0,
                      payload_limit: int | None = None) -> list[HeaderViolation]:
    """Every rule the header that starts with bytes `first` and `second` breaks, in the
    order the parser checks them (it refuses a frame for the first).

    `length` is the payload length once the 16- or 64-bit form has been read;
    None checks what the first two bytes show. `require_mask`: True where
    frames must be masked (a server's side, §5.1), False where they must not,
    None not to check. `allowed_rsv_bits`: the RSV bits an extension defines
    (RSV1: permessage-deflate). `payload_limit`: the largest data-frame
    payload accepted, None for no limit.
    """
    found = []
    opcode = first & OPCODE_BITS
    is_control = opcode >= OP_CLOSE
    field = second & LENGTH_BITS
    for bit, name in _RSV_NAMES:
        if first & bit and not allowed_rsv_bits & bit:
            # §5.2: RSV bits must be 0 unless an extension defines them.
            found.append(HeaderViolation(0, "RFC 6455 §5.2", ProtocolError,
                                         "reserved bits set without a negotiated extension",
                                         f"{name} set but no extension negotiated"))
    if opcode not in KNOWN_OPCODES:
        # §5.2: opcodes 0x3-0x7 and 0xB-0xF are reserved.
        found.append(HeaderViolation(0, "RFC 6455 §5.2", ProtocolError,
                                     f"reserved opcode {opcode:#x}",
                                     f"reserved opcode {opcode:#x}"))
    masked = second & MASK_BIT != 0
    if require_mask is not None and masked != require_mask:
        # §5.1: client-to-server frames are masked, server-to-client frames are not.
        if require_mask:
            found.append(HeaderViolation(1, "RFC 6455 §5.1", ProtocolError, "frame must be masked",
                                         "MASK=0, but a client masks every frame it sends"))
        else:
            found.append(HeaderViolation(1, "RFC 6455 §5.1", ProtocolError,
                                         "frame must not be masked",
                                         "MASK=1, but a server never masks its frames"))
    if is_control and not first & FIN_BIT:
        # §5.5: control frames must not be fragmented.
        found.append(HeaderViolation(0, "RFC 6455 §5.5", ProtocolError, "fragmented control frame",
                                     "control frame with FIN=0; control frames must not be "
                                     "fragmented"))
    if is_control and field > MAX_CONTROL_PAYLOAD:
        # §5.5: control frames carry 125 bytes or less, so (§5.2: the minimal
        # form) their length is always in the 7-bit form.
        if length is None or length > MAX_CONTROL_PAYLOAD:
            size = f"over {MAX_CONTROL_PAYLOAD} bytes" if length is None else length
            detail = f"control frame payload {size} > {MAX_CONTROL_PAYLOAD}"
        else:
            form = 16 if field == LENGTH_16BIT else 64
            detail = (f"control frame length in the {form}-bit form; a control frame's "
                      f"payload is at most {MAX_CONTROL_PAYLOAD} bytes, in the 7-bit form")
        found.append(HeaderViolation(1, "RFC 6455 §5.5", ProtocolError,
                                     "control frame payload over 125 bytes", detail))
    if first & RSV1_BIT and allowed_rsv_bits & RSV1_BIT:
        # RFC 7692 §6.1: permessage-deflate's RSV1 marks a data message's first frame only.
        if is_control:
            found.append(HeaderViolation(0, "RFC 7692 §6.1", ProtocolError,
                                         "RSV1 set on a control frame",
                                         "RSV1 set on a control frame; only the first frame "
                                         "of a data message may be compressed"))
        elif opcode == OP_CONTINUATION:
            found.append(HeaderViolation(0, "RFC 7692 §6.1", ProtocolError,
                                         "RSV1 set on a continuation frame",
                                         "RSV1 set on a continuation frame; only the first "
                                         "frame of a message carries it"))
    if length is None:
        return found
    if field == LENGTH_64BIT and length >> 63:
        # §5.2: "the most significant bit MUST be 0".
        found.append(HeaderViolation(2, "RFC 6455 §5.2", ProtocolError,
                                     "64-bit payload length with the top bit set",
                                     "64-bit length with its most significant bit set"))
    if payload_limit is not None and not is_control and length > payload_limit:
        # §10.4: an endpoint may refuse frames over its limit (1009).
        reason = f"frame of {length} bytes is over the {payload_limit}-byte limit"
        found.append(HeaderViolation(1 if field < LENGTH_16BIT else 2, "RFC 6455 §10.4",
                                     MessageTooBig, reason, reason))
    return found


_length_limits_made: dict[tuple[bool, int], bytes] = {}


def _length_limits(require_mask: bool, allowed_rsv_bits: int) -> bytes:
    """For each first byte, the first 7-bit length field `header_violations` refuses after
    it, with the MASK bit as `require_mask` wants it: 0 when the first byte alone
    breaks a rule, 126 for a control frame, 128 (none) for a data frame.

    The parser's fast path is one lookup in this table (`FrameParser.next_frame`).
    It is made from the rules themselves, once for each setting, so it cannot
    state them differently; tests/test_frames.py checks it against every header.
    """
    key = (require_mask, allowed_rsv_bits)
    table = _length_limits_made.get(key)
    if table is None:
        mask_flag = MASK_BIT if require_mask else 0
        table = _length_limits_made[key] = bytes(
            next((field for field in range(LENGTH_BITS + 1)
                  if header_violations(first, mask_flag | field, require_mask=require_mask,
                                       allowed_rsv_bits=allowed_rsv_bits)),
                 LENGTH_BITS + 1)
            for first in range(256))
    return table


def _unmasked(buffer: bytes | bytearray | memoryview, start: int, end: int,
              key: bytes | bytearray | None) -> bytes:
    """Bytes [start:end) of the parser's buffer or of the read it parses, as bytes,
    XORed with `key` unless it is None.

    `key` must already be the one for the payload byte at `start` (§5.3:
    payload byte i is masked with key[i % 4]). The caller drops these bytes
    next, so `masking.masked_slice` may unmask them where they lie (in the
    parser's own bytearray only) before copying them out.
    """
    if key is not None:
        return masking.masked_slice(buffer, start, end, key)
    if end - start > _COPY_FREE_THRESHOLD:
        # Read through a view rather than a slice: one full copy less. The
        # view is released before the caller resizes the buffer.
        with memoryview(buffer) as view:
            return bytes(view[start:end])
    return bytes(buffer[start:end])


class PendingFrame:
    """The next frame of a `FrameParser`: its header has arrived, not all its payload yet.

    The parser keeps it, so a frame's header is parsed once however many
    pieces its payload comes in; it is valid until `next_frame()` returns the
    frame. `rawws.protocol` uses it to check a text frame's UTF-8 while the
    frame is still arriving (§8.1, fail fast).

    `read()` hands over the payload bytes that arrived since the last read,
    unmasked, and drops them (with the header) from the front of the parser's
    buffer; the `Frame` that `next_frame()` returns for this frame then
    carries only the bytes not read. So each payload byte is unmasked and
    copied once, read early or not, and the buffer holds only unread bytes,
    which its appends would otherwise reallocate and copy.
    """

    __slots__ = ("opcode", "fin", "rsv1", "length", "mask_key", "consumed", "_first", "_key",
                 "_buffer", "_base", "_end")

    streamed = False   # the payload waits in the parser's buffer (see StreamedFrame)

    def __init__(self, buffer: bytearray, first: int, length: int, mask_key: bytes | None,
                 start: int) -> None:
        self.opcode = first & OPCODE_BITS
        self.fin = first & FIN_BIT != 0
        self.rsv1 = first & RSV1_BIT != 0   # a compressed message's first frame (RFC 7692)
        self.length = length            # of the whole payload
        self.mask_key = mask_key        # None for an unmasked frame
        self.consumed = 0               # payload bytes handed over by read()
        self._first = first
        # §5.3: payload byte i is masked with mask_key[i % 4], so the key for
        # the next byte to read is mask_key turned by `consumed`.
        self._key = mask_key
        self._buffer = buffer           # the parser's buffer; read() drops bytes from its front
        self._base = start              # where payload byte `consumed` is in the buffer
        self._end = start + length      # where the frame ends in the buffer

    def read(self) -> bytes:
        """The payload bytes that arrived since the last read, unmasked (b"" if none)."""
        buffer = self._buffer
        end = min(len(buffer), self._end)
        start = self._base
        if end <= start:
            return b""
        key = self._key
        data = _unmasked(buffer, start, end, key)
        # Handed over: drop them and what precedes them. At the front of a
        # bytearray this is O(1), and no bytes of this frame are left behind them.
        del buffer[:end]
        self.consumed += end - start
        self._end -= end
        self._base = 0
        shift = (end - start) % MASK_KEY_SIZE
        if shift and key is not None:
            self._key = key[shift:] + key[:shift]
        return data


class StreamedFrame(PendingFrame):
    """A `PendingFrame` of at least `STREAM_THRESHOLD` bytes, unmasked as it arrives.

    The parser hands it every received byte that belongs to it (`take`)
    before keeping anything in its own buffer, so while it is incomplete
    that buffer is empty. The payload goes into a bytearray of its own,
    unmasked in place `_STREAM_PIECE_MIN` bytes or more at a time, and
    leaves it as one bytes object: by `read()`, or when the frame is whole.

    That bytearray is borrowed from a pool of one (`masking.borrow_buffer`)
    and given back with its memory, so back-to-back big frames reuse the
    same pages rather than fault in fresh ones: glibc hands memory back to
    the kernel once more than twice its mmap threshold lies free, which a
    big payload kept in pieces and then joined reached at every frame
    (docs/performance.md has the page faults counted). It grows only as
    bytes arrive: a peer announcing 16 MiB and sending
    nothing makes it allocate nothing.
    """

    __slots__ = ("_payload", "_received", "_unmasked_to", "remaining")

    streamed = True

    def __init__(self, first: int, length: int, mask_key: bytes | None) -> None:
        super().__init__(bytearray(), first, length, mask_key, 0)
        self._payload = masking.borrow_buffer()
        self._received = 0       # payload bytes in _payload
        self._unmasked_to = 0    # ... of which unmasked (the rest: a trickling peer's reads)
        self.remaining = length  # payload bytes not received yet

    def take(self, data: bytes | bytearray | memoryview) -> int:
        """Keep (and unmask) what of `data` belongs to this frame; how many bytes that was."""
        count = min(len(data), self.remaining)
        if count == 0:
            return 0
        received = self._received
        # Within its length a bytearray slice assignment copies in place; past it, it grows.
        self._payload[received:received + count] = (
            data if count == len(data) else memoryview(data)[:count])
        self._received = received + count
        self.remaining -= count
        if (self._received - self._unmasked_to >= _STREAM_PIECE_MIN or not self.remaining):
            self._unmask_received()
        return count

    def _unmask_received(self) -> None:
        key = self._key
        start = self._unmasked_to
        end = self._received
        self._unmasked_to = end
        if key is None or start == end:
            return
        masking.mask_in_place(self._payload, key, start, end)
        shift = (end - start) % MASK_KEY_SIZE
        if shift:
            # The next byte is masked with the key byte after this piece's last.
            self._key = key[shift:] + key[:shift]

    def read(self) -> bytes:
        """The payload bytes that arrived since the last read, unmasked (b"" if none)."""
        self._unmask_received()
        start = self.consumed
        end = self.consumed = self._unmasked_to
        data = b""
        if end > start:
            with memoryview(self._payload) as view:
                data = bytes(view[start:end])
        if not self.remaining:
            self._release()
        return data

    def _release(self) -> None:
        """Give the payload's buffer back to the pool, once its bytes are all read."""
        payload = self._payload
        self._payload = bytearray()
        masking.give_back_buffer(payload)


class FrameParser:
    """Turns a byte stream, fed in chunks of any size, into `Frame`s.

    Received bytes go into one bytearray; a frame is taken off its front with
    `del buffer[:n]`, which CPython does in O(1) by moving the start pointer,
    so feeding one byte at a time never copies the whole buffer.

    The header is checked as soon as its first two bytes arrive, and the
    length before the payload is buffered, so a peer announcing a 1 GiB frame
    is refused after 10 bytes, not after 1 GiB.

    A frame whose header is whole but whose payload is not is kept as
    `pending` (a `PendingFrame`): its header is not parsed again as the rest
    arrives, and the protocol can read the part of the payload received.
    """

    def __init__(self, *, require_mask: bool, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                 allowed_rsv_bits: int = 0) -> None:
        self._require_mask = require_mask
        self._allowed_rsv_bits = allowed_rsv_bits
        self._settings_changed()
        # Largest payload accepted for the next data frame; `rawws.protocol`
        # lowers it while a message is being reassembled, so a message over
        # its limit is refused from the header too.
        self.payload_limit = max_frame_size
        # Bytes kept from earlier reads: the start of a frame that a read's end cut.
        self._buffer = bytearray()
        # The read being parsed, where it lies (see `feed`), and where its next
        # frame starts; None once its frames are taken or its rest is kept.
        self._view: bytes | bytearray | memoryview | None = None
        self._offset = 0
        # The next frame when its header has arrived and not all its payload,
        # else None (read it, never set it: the parser keeps it).
        self.pending: PendingFrame | None = None

    @property
    def require_mask(self) -> bool:
        """§5.1: a server must close on an unmasked frame, a client on a masked one."""
        return self._require_mask

    @require_mask.setter
    def require_mask(self, value: bool) -> None:
        self._require_mask = value
        self._settings_changed()

    @property
    def allowed_rsv_bits(self) -> int:
        """RSV bits an extension defines (§5.2, §9): RSV1 with permessage-deflate (RFC 7692 §6)."""
        return self._allowed_rsv_bits

    @allowed_rsv_bits.setter
    def allowed_rsv_bits(self, value: int) -> None:
        self._allowed_rsv_bits = value
        self._settings_changed()

    def _settings_changed(self) -> None:
        """Make the fast path's check for these settings (see `next_frame`)."""
        self._mask_flag = MASK_BIT if self._require_mask else 0
        self._length_limits = _length_limits(self._require_mask, self._allowed_rsv_bits)

    def _check_header(self, first: int, second: int, length: int | None) -> None:
        """Raise the error for the first rule the header breaks (`header_violations`), if any."""
        found = header_violations(first, second, length, require_mask=self._require_mask,
                                  allowed_rsv_bits=self._allowed_rsv_bits,
                                  payload_limit=self.payload_limit)
        if found:
            raise found[0].error()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes received, for `next_frame()` to parse.

        When nothing of earlier reads waits, `data` is not copied: its frames
        are parsed where they lie, and only the bytes of a frame that its end
        cuts are copied into the parser's buffer. So the caller leaves `data`
        as it is until `next_frame()` has returned None (rawws's server parses
        each read before it reads into the same buffer again).
        """
        pending = self.pending
        if pending is None:
            if self._view is None and not self._buffer:
                self._view = data
                self._offset = 0
                return
            self._keep_view()   # fed twice before parsing: keep the order
        elif pending.streamed:
            # A big frame's payload goes to it first; the buffer is empty until it is whole.
            taken = pending.take(data)
            if taken == len(data):
                return
            data = memoryview(data)[taken:]
        self._buffer += data

    def _keep_view(self) -> None:
        """Copy what is left of the read being parsed into the buffer, and let the read go."""
        view = self._view
        if view is not None:
            self._view = None
            self._buffer += view[self._offset:]

    def drop_read(self) -> None:
        """Let go of the read being parsed, unparsed: nothing more is parsed (a
        Close came, a failure, the end), and the caller may reuse its buffer."""
        self._view = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned, as frames or by `pending.read()`."""
        view = self._view
        return len(self._buffer) + (len(view) - self._offset if view is not None else 0)

    def next_frame(self) -> Frame | None:
        """The next whole frame, or None until more bytes arrive.

        Raises ProtocolError (1002) or MessageTooBig (1009) on a bad header.
        """
        parts = self.next_frame_parts()
        if parts is None:
            return None
        first, payload = parts
        # fin as a comparison, not bool(): a call less per frame.
        frame = Frame(first & OPCODE_BITS, payload, first & FIN_BIT != 0)
        if first & RSV_BITS:
            frame.rsv1 = first & RSV1_BIT != 0
            frame.rsv2 = first & RSV2_BIT != 0
            frame.rsv3 = first & RSV3_BIT != 0
        return frame

    def next_frame_parts(self) -> tuple[int, bytes] | None:
        """`next_frame()` without the `Frame`: the frame's first byte (FIN, RSV1-3
        and the opcode, §5.2) and its payload, unmasked. `rawws.protocol` takes
        frames this way: an object less per message (hot path)."""
        pending = self.pending
        if pending is None:
            # The frame starts at `base` in `data`: the read where it lies, or the buffer.
            data = self._view
            if data is None:
                data = self._buffer
                base = 0
                available = len(data)
                if available < 2:
                    return None
            else:
                base = self._offset
                available = len(data) - base
                if available < 2:
                    self._keep_view()
                    return None
            first = data[base]
            second = data[base + 1]
            # The fast path, one test for every rule of the first two bytes:
            # XORed with the MASK bit this side expects, the second byte is the
            # 7-bit length, plus 128 if the masking is wrong; `_length_limits`
            # holds, for each first byte, the first length that `header_violations`
            # refuses after it (0 when the first byte breaks a rule). Only a
            # header refused here is given to the rules, to say which one.
            length = second ^ self._mask_flag
            if length >= self._length_limits[first]:
                self._check_header(first, second, None)   # raises: the table is the rules'
            start = base + 2
            if length >= LENGTH_16BIT:
                if length == LENGTH_16BIT:
                    if available < 4:
                        self._keep_view()
                        return None
                    (length,) = _UINT16.unpack_from(data, start)
                    start += 2
                else:
                    if available < 10:
                        self._keep_view()
                        return None
                    (length,) = _UINT64.unpack_from(data, start)
                    start += 8
                    # A big frame, and rare: all the rules, the top bit's (§5.2) among them.
                    self._check_header(first, second, length)
            if length > self.payload_limit:
                # Over the limit (§10.4, 1009), unless a control frame: the rules say.
                self._check_header(first, second, length)
            key = None
            if second & MASK_BIT:
                # A slice of the buffer or of the read: the masking functions take either.
                key = data[start:start + MASK_KEY_SIZE]
                start += MASK_KEY_SIZE
            end = start + length
            if end > len(data):
                return self._cut(first, length, key, start - base)
            # As _unmasked() does, without a call for the usual frame (hot path).
            payload = (masking.masked_slice(data, start, end, key) if key is not None
                       else _unmasked(data, start, end, None))
            if data is self._view:
                if end == len(data):
                    self._view = None   # every frame of the read taken
                else:
                    self._offset = end
            else:
                del data[:end]
            return first, payload
        elif pending.streamed:
            if pending.remaining:
                return None
            self.pending = None
            return pending._first, pending.read()
        # Its header was parsed and checked when it arrived.
        buffer = self._buffer
        end = pending._end
        if len(buffer) < end:
            return None
        self.pending = None
        payload = _unmasked(buffer, pending._base, end, pending._key)
        del buffer[:end]
        return pending._first, payload

    def _cut(self, first: int, length: int, key: bytes | bytearray | memoryview | None,
             start: int) -> None:
        """A frame whose end has not arrived, its payload from `start` in the buffer
        once the read's rest is kept there: it becomes `pending` once its header is whole."""
        self._keep_view()
        if key is not None and len(key) < MASK_KEY_SIZE:
            return None   # the header is parsed again once its masking key has come
        key = None if key is None else bytes(key)
        buffer = self._buffer
        if length < STREAM_THRESHOLD:
            self.pending = PendingFrame(buffer, first, length, key, start)
            return None
        streamed = self.pending = StreamedFrame(first, length, key)
        with memoryview(buffer) as view:
            streamed.take(view[start:])
        del buffer[:]
        return None
