"""One WebSocket connection after the handshake, as a sans-IO state machine.

Bytes from the peer go into `receive_data()`; `events()` parses them and
hands out what happened, one event at a time; bytes for the peer come out
of `buffers_to_send()` (or `data_to_send()`). Nothing here touches a socket
or a clock, so every rule of RFC 6455 §5-§8 can be tested byte by byte.
Timers (keepalive, close timeout) belong to the I/O layer.

`events()` is a generator: a frame is parsed only when the previous event
has been taken, so whatever the application sends in answer to message N
is queued before frame N+1 is even read. A Close or a bad frame that came
after messages in the same read is therefore answered after the replies to
those messages (§5.5.1, §7.1.7), with nothing more for the driver to call.

Every change of `state` is one line of `TRANSITIONS`; this diagram lists
the same edges (tests/test_protocol.py checks that they agree):

    OPEN     --send_close-->     CLOSING   close(): our Close is out (§7.1.2), the peer's awaited
    OPEN     --receive_close-->  CLOSED    the peer's Close, answered at once (§5.5.1)
    CLOSING  --receive_close-->  CLOSED    the peer's answer to our Close
    OPEN     --fail-->           CLOSED    a protocol error: Close sent, reading stops (§7.1.7)
    CLOSING  --fail-->           CLOSED
    OPEN     --eof-->            CLOSED    TCP closed with no Close frame: code 1006 (§7.1.5)
    CLOSING  --eof-->            CLOSED
    OPEN     --abort-->          CLOSED    the I/O layer gave up (close timeout, a broken socket)
    CLOSING  --abort-->          CLOSED

When to close TCP is one rule, `should_close_transport` (§7.1.1): the
server closes it once CLOSED; a client once CLOSED and the server's TCP
close has come (or it failed the connection, or gave up with `abort()`).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from .close import CLOSE_ABNORMAL, CLOSE_NO_STATUS, CLOSE_NORMAL
from .deflate import PerMessageDeflate, compress_once
from .errors import ConnectionClosed, InvalidPayload, MessageTooBig, ProtocolError
from .frames import (FIN_BIT, LENGTH_16BIT, MAX_CONTROL_PAYLOAD, OP_BINARY, OP_CLOSE,
                     OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, OPCODE_BITS, RSV1_BIT,
                     SHORT_HEADERS, FrameParser, PendingFrame, decode_close_payload,
                     encode_close_payload, encode_frame, frame_header)
from .masking import mask_chunks
from .utf8 import Utf8Decoder

if TYPE_CHECKING:
    from .budget import MemoryBudget

DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024

# §10.4: a peer may try to exhaust our memory "by sending a long stream of
# small frames that are a part of a fragmented message". A message's bytes
# are bounded by max_message_size and kept so that a small frame costs no
# object of its own (`_keep`); the number of frames is capped as well, so empty
# continuations cannot keep a message open forever: at most one frame for
# every FRAGMENT_BYTES bytes of the size limit (16384 frames for 1 MiB), and
# never fewer than MIN_MAX_FRAGMENTS. Frame number max_fragments + 1 fails
# the connection with 1009.
FRAGMENT_BYTES = 64
MIN_MAX_FRAGMENTS = 64
# `_keep`: pieces of a message this long or longer are kept as they come,
# shorter ones are joined _SMALL_BATCH at a time.
_WHOLE_PIECE = 1024
_SMALL_BATCH = 64
# A payload this long is queued apart from its frame's header (`buffers_to_send`):
# below it, copying the two into one bytes object costs less than a piece more.
VECTORED_MIN = 16 * 1024


class Role(Enum):
    SERVER = "server"
    CLIENT = "client"


class State(Enum):
    OPEN = "open"
    CLOSING = "closing"   # our Close frame is sent, the peer's has not come
    CLOSED = "closed"     # no more frames are read or sent


# The states by their own names, for the per-message paths: on Python 3.11
# `State.OPEN` is looked up through EnumType.__getattr__, ~60 ns against ~10
# for a global (3.12 dropped that hook), and a message tests the state often.
OPEN = State.OPEN
CLOSING = State.CLOSING
CLOSED = State.CLOSED


class Cause(Enum):
    """What moves a connection from one state to another."""

    SEND_CLOSE = "send_close"
    RECEIVE_CLOSE = "receive_close"
    FAIL = "fail"
    EOF = "eof"
    ABORT = "abort"


# Every transition of WebSocketConnection.state; the module docstring draws them.
TRANSITIONS: dict[tuple[State, Cause], State] = {
    (State.OPEN, Cause.SEND_CLOSE): State.CLOSING,
    (State.OPEN, Cause.RECEIVE_CLOSE): State.CLOSED,
    (State.CLOSING, Cause.RECEIVE_CLOSE): State.CLOSED,
    (State.OPEN, Cause.FAIL): State.CLOSED,
    (State.CLOSING, Cause.FAIL): State.CLOSED,
    (State.OPEN, Cause.EOF): State.CLOSED,
    (State.CLOSING, Cause.EOF): State.CLOSED,
    (State.OPEN, Cause.ABORT): State.CLOSED,
    (State.CLOSING, Cause.ABORT): State.CLOSED,
}


@dataclass(slots=True)
class TextMessage:
    data: str


@dataclass(slots=True)
class BinaryMessage:
    data: bytes


@dataclass(slots=True)
class Ping:
    payload: bytes


@dataclass(slots=True)
class Pong:
    payload: bytes


@dataclass(slots=True)
class CloseReceived:
    """The peer's Close frame; `code` is 1005 when it carried no code (§7.1.5)."""

    code: int
    reason: str


Event = TextMessage | BinaryMessage | Ping | Pong | CloseReceived


def encode_shared_frame(message: str | bytes, deflate_bits: int | None = None) -> bytes:
    """A server's frame for a whole message, the same bytes for every peer (no mask, §5.1).

    With `deflate_bits`, the payload is compressed from a fresh window of
    that size (RFC 7692 §7.2.1), for peers that agreed to
    server_no_context_takeover; `WebSocketConnection.send_frame_bytes` queues it.
    """
    if isinstance(message, str):
        opcode, payload = OP_TEXT, message.encode("utf-8")
    else:
        opcode, payload = OP_BINARY, bytes(message)
    if deflate_bits is None:
        return encode_frame(opcode, payload)
    # RFC 7692 §6: RSV1 marks a compressed message.
    return encode_frame(opcode, compress_once(payload, deflate_bits), rsv1=True)


class _MaskKeys:
    """Unpredictable 4-byte masking keys (§5.3), drawn from os.urandom in batches."""

    __slots__ = ("_pool", "_offset")
    _BATCH = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._offset = 0

    def next(self) -> bytes:
        if self._offset >= len(self._pool):
            self._pool = os.urandom(self._BATCH)
            self._offset = 0
        key = self._pool[self._offset:self._offset + 4]
        self._offset += 4
        return key


class WebSocketConnection:
    """The protocol state of one WebSocket connection, for either role.

    The I/O layer feeds `receive_data()`, hands each event of `events()` to
    the application as it comes, writes what `buffers_to_send()` returns,
    and closes TCP once `should_close_transport` is true (see the module
    docstring for `state` and that rule).

    Limits (§10.4): `max_message_size` bytes per message after reassembly,
    `max_frame_size` bytes per frame (by default the same), both checked
    from a frame's header; at most `max_fragments` frames per message.

    `deflate`: the permessage-deflate state when the handshake agreed on it
    (RFC 7692, `rawws.deflate`); messages are then compressed on the way out
    and inflated on the way in, the size limit applying to inflated bytes.

    `budget`: a `rawws.budget.MemoryBudget` shared by many connections, or
    None. With one, what this connection holds of messages being received
    (`held_bytes`: a frame still arriving, counted at its announced length
    from its header; a fragmented message's pieces so far) is reserved from
    it once per read, at the end of `events()`; a read after which it does
    not fit fails the connection with 1009 (a "try again later" reason), and
    whatever the connection held is given back once it is CLOSED.
    """

    def __init__(self, role: Role, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 max_frame_size: int | None = None, max_fragments: int | None = None,
                 deflate: PerMessageDeflate | None = None,
                 budget: MemoryBudget | None = None) -> None:
        self.role = role
        self.budget = budget
        self.held_bytes = 0   # reserved from the budget for what is being received
        self.state = OPEN
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size if max_frame_size is not None else max_message_size
        self.max_fragments = (max_fragments if max_fragments is not None
                              else max(MIN_MAX_FRAGMENTS, max_message_size // FRAGMENT_BYTES))
        # §10.4: no frame may exceed either limit, checked from its header.
        self._idle_payload_limit = min(self.max_frame_size, max_message_size)
        # §5.1: servers receive masked frames and send unmasked ones; clients the reverse.
        self._parser = FrameParser(require_mask=role is Role.SERVER,
                                   max_frame_size=self._idle_payload_limit)
        self.deflate = deflate
        if deflate is not None:
            # RFC 7692 §6: the extension gives RSV1 its meaning, "compressed".
            self._parser.allowed_rsv_bits = RSV1_BIT
        self._mask_keys = _MaskKeys() if role is Role.CLIENT else None
        self._outgoing: list[bytes] = []
        self._vectored = False   # a big payload is queued as a piece of its own
        # The message being reassembled (§5.4): its opcode, its frames so
        # far, its payload bytes so far, and its pieces (bytes, or the str
        # each text piece decoded to) in two lists, joined at the end
        # (`_keep`). Pieces of a frame still arriving that were read early
        # (`_check_arriving_text`) are among them.
        self._message_opcode: int | None = None
        self._message_frames = 0
        self._message_size = 0
        self._message_parts: list = []
        self._message_small: list = []
        self._message_compressed = False   # RSV1 on its first frame (RFC 7692 §6)
        # The text message's UTF-8 check (§8.1), from its first byte read.
        self._utf8: Utf8Decoder | None = None
        # The message being sent in fragments, if any.
        self._sending_opcode: int | None = None
        self.close_sent: int | None = None       # code we sent, once we did
        self.close_received: int | None = None   # code the peer sent, once it did
        self.close_reason = ""
        self.failure: ProtocolError | None = None
        self.eof_received = False    # the transport's end of stream came
        self._aborted = False

    def _move(self, cause: Cause) -> None:
        """Change `state` as TRANSITIONS says; a cause with no edge from here changes nothing."""
        self.state = TRANSITIONS.get((self.state, cause), self.state)

    @property
    def should_close_transport(self) -> bool:
        """§7.1.1: True once the I/O layer should close TCP, after writing what is queued.

        The server closes it first, as soon as the connection is CLOSED. A
        client waits for the server's close (EOF), unless it failed the
        connection (§7.1.7) or gave up with `abort()`.
        """
        if self.state is not CLOSED:
            return False
        return (self.role is Role.SERVER or self.eof_received or self.failure is not None
                or self._aborted)

    # ---- what the peer sent -------------------------------------------

    @property
    def close_code(self) -> int:
        """The connection close code of §7.1.5: the peer's, or 1006 if none came."""
        return self.close_received if self.close_received is not None else CLOSE_ABNORMAL

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the transport; b"" means the peer closed it (EOF).

        Nothing is parsed here: `events()` does that, one frame at a time,
        where the bytes lie (`FrameParser.feed`), so leave them unchanged
        until `events()` has run to its end.
        """
        if not data:
            self.eof_received = True
            return
        if self.state is CLOSED or self.close_received is not None:
            return  # §7.1.7 / §1.4: nothing after a failure or the peer's Close is processed
        self._parser.feed(data)

    @property
    def bytes_unparsed(self) -> int:
        """Bytes received that `events()` has not turned into events yet."""
        return self._parser.buffered

    def events(self) -> Iterator[Event]:
        """Parse what was received and yield its events, one frame at a time.

        Stops at the peer's Close (§1.4: what follows it is discarded) and at
        the first protocol error, which fails the connection (§7.1.7). An EOF
        that was received is acted on once every frame before it is read.
        """
        parser = self._parser
        next_frame_parts = parser.next_frame_parts
        while self.close_received is None and self.failure is None:
            try:
                # Nothing left to parse (as `buffered` and `pending` say): no
                # call, the usual case once a read's last frame is taken (hot path).
                parts = (next_frame_parts() if parser._view is not None or parser._buffer
                         or parser.pending is not None else None)
                if parts is None:
                    pending = parser.pending
                    if pending is not None and pending.opcode <= OP_TEXT:
                        # Only when a text or continuation frame is cut: a
                        # whole frame never pays for this.
                        self._check_arriving_text(pending)
                    # Once per read: the budget hears what is held now. A
                    # read of whole messages holds nothing: three tests.
                    if self.budget is not None and (pending is not None or self._message_size
                                                    or self.held_bytes):
                        self._settle_budget(pending)
                    break
                # The frame's first byte (FIN, RSV1-3, opcode: §5.2) and its payload.
                # (RSV1 on a control or continuation frame, RFC 7692 §6.1, is
                # refused by the parser from the header: frames.header_violations.)
                first, payload = parts
                opcode = first & OPCODE_BITS
                if opcode >= OP_CLOSE:
                    event = self._receive_control(opcode, payload)
                elif (first & FIN_BIT and opcode and self._message_opcode is None
                      and self._utf8 is None):
                    # The usual message, whole in one frame, none of it read
                    # early (§5.4, §5.6): nothing to reassemble.
                    if first & RSV1_BIT:   # RFC 7692 §6: RSV1, compressed
                        payload = self._inflate(payload, True)
                    event = (TextMessage(payload.decode("utf-8")) if opcode == OP_TEXT
                             else BinaryMessage(payload))
                else:
                    event = self._receive_data_frame(first, payload)
            except ProtocolError as error:
                self._fail(error)
                break
            except UnicodeDecodeError:
                # §8.1: "MUST _Fail the WebSocket Connection_" on invalid UTF-8.
                self._fail(InvalidPayload("invalid UTF-8 in text message"))
                break
            if event is not None:
                yield event
        if self.eof_received and self.state is not CLOSED:
            # §7.1.5: a TCP close with no Close frame means code 1006.
            self._move(Cause.EOF)
            self._let_go()

    def _settle_budget(self, pending: PendingFrame | None) -> None:
        """Reserve from the budget, or give back, the change in what is held.

        Held: the message being reassembled (`_message_size`) and the frame
        still arriving, at its announced length (plus what the parser's
        buffer holds of it), so a frame that would not fit is refused from
        its header, before its payload is received.
        """
        held = self._message_size
        if pending is not None:
            held += pending.length + self._parser.buffered
        change = held - self.held_bytes
        if change > 0:
            if not self.budget.reserve(change, self):
                self._fail(MessageTooBig(
                    "the server's memory budget is full: try again later"))
                return
        elif change:
            self.budget.release(-change)
        self.held_bytes = held

    def _let_go(self) -> None:
        """CLOSED, or nothing more is read: drop what is held of messages being
        received, and give its reservation back to the budget. (Without a
        budget nothing changes: what is held goes with the connection.)"""
        self._parser.drop_read()   # nor is the rest of the read being parsed
        if self.budget is None:
            return
        if self._message_opcode is not None or self._parser.pending is not None:
            self._message_opcode = None
            self._message_frames = 0
            self._message_size = 0
            self._message_parts = []
            self._message_small = []
            self._utf8 = None
            # Nothing more is parsed: a fresh parser lets the old one's
            # buffers go (a big frame's, a cut frame's).
            self._parser = FrameParser(require_mask=self._parser.require_mask,
                                       max_frame_size=self._idle_payload_limit)
        if self.held_bytes:
            self.budget.release(self.held_bytes)
            self.held_bytes = 0

    def _receive_data_frame(self, first: int, payload: bytes) -> Event | None:
        """A data frame (§5.6), by its first byte and payload, into the message being
        reassembled: the message once whole. (A whole message in one frame never
        comes here: `events()` makes it.)"""
        opcode = first & OPCODE_BITS
        fin = first & FIN_BIT != 0
        compressed = first & RSV1_BIT != 0   # RFC 7692 §6: RSV1 marks a compressed message
        if opcode == OP_CONTINUATION:
            if self._message_opcode is None:
                # §5.4: a continuation frame continues a message that was started.
                raise ProtocolError("continuation frame with no message in progress")
            opcode = self._message_opcode
        elif self._message_opcode is not None:
            # §5.4: fragments of one message are not interleaved with another's.
            raise ProtocolError("new data frame while a fragmented message is open")
        else:
            self._message_opcode = opcode
            self._message_compressed = compressed
            if opcode == OP_TEXT and self._utf8 is None:
                self._utf8 = Utf8Decoder()   # else _check_arriving_text made it

        self._message_frames += 1
        if self._message_frames > self.max_fragments:
            raise MessageTooBig(f"message in more than {self.max_fragments} frames")
        if self._message_compressed:
            payload = self._inflate(payload, fin)
        self._message_size += len(payload)
        if self._message_size > self.max_message_size:
            # Refused from the frame's header already (payload_limit); kept
            # so the limit does not rest on the parser alone.
            raise MessageTooBig(f"message over the {self.max_message_size}-byte limit")
        if self._utf8 is not None:
            # §8.1: fail fast, as soon as the bytes that make the text invalid arrive.
            self._keep(self._utf8.decode(payload, fin))
        else:
            self._keep(payload)
        if fin:
            parts = self._message_parts
            parts += self._message_small
            self._message_opcode = None
            self._message_frames = 0
            self._message_size = 0
            self._message_parts = []
            self._message_small = []
            self._message_compressed = False
            self._utf8 = None
            self._parser.payload_limit = self._idle_payload_limit
            if opcode == OP_TEXT:
                return TextMessage("".join(parts))
            return BinaryMessage(b"".join(parts))
        if not self._message_compressed:
            # The next fragment may not push the message over its limit (§10.4).
            # (A compressed one's inflated size is bounded by _inflate instead.)
            self._parser.payload_limit = min(self.max_frame_size,
                                             self.max_message_size - self._message_size)
        return None

    def _inflate(self, payload: bytes, fin: bool) -> bytes:
        """A compressed frame's payload, inflated within what the message may still grow."""
        budget = self.max_message_size - self._message_size
        data = self.deflate.decompress(payload, budget)
        if fin:
            # RFC 7692 §7.2.2: append 0x00 0x00 0xff 0xff to the message's end.
            data += self.deflate.finish(budget - len(data))
        return data

    def _keep(self, piece: bytes | str) -> None:
        """Add a piece to the message being reassembled: a frame's payload or part
        of it, as bytes, or for a text message the str it decoded to.

        A piece of 1 KiB (or 1 Ki characters) or more is kept as it is: one
        list entry (~40-80 bytes) for at least 1 KiB. Shorter ones, tiny
        frames or the reads of a trickling peer (§10.4), wait in a second
        list and are joined into one piece _SMALL_BATCH at a time; empty
        ones are dropped. So the list holds at most one entry per 64 bytes
        of the message, and at most 63 pieces wait: not one object per frame
        or read. The message is joined once, at its end. (Growing one
        bytearray instead copies it at each reallocation: measured +9% on
        1 MiB text frames read in 256 KiB pieces.)
        """
        small = self._message_small
        if len(piece) >= _WHOLE_PIECE:
            if small:    # they came first
                self._message_parts.append(piece[:0].join(small))   # b"" or "", as the pieces
                small.clear()
            self._message_parts.append(piece)
        elif piece:
            small.append(piece)
            if len(small) == _SMALL_BATCH:
                self._message_parts.append(piece[:0].join(small))
                small.clear()

    def _check_arriving_text(self, pending: PendingFrame) -> None:
        """§8.1 fail fast inside one frame: check the newly arrived bytes of a text frame.

        A text frame cut by the transport (Autobahn 6.4.3-6.4.4 send one frame
        in chops) is checked as each piece arrives, not once it is whole. The
        bytes new since the last check are read from the parser (unmasked, and
        then left out of the frame it returns), checked by the message's
        incremental decoder and their text added to the message (`_keep`), so
        the work stays linear in the frame's size and a peer trickling bytes
        costs no object per read. (Compressed messages are checked as each
        frame is inflated, not inside a frame.)
        """
        message_opcode = self._message_opcode
        if self._message_compressed or pending.rsv1:
            return        # compressed bytes are checked once inflated
        if pending.opcode == OP_TEXT:
            if message_opcode is not None:
                return    # a new message inside another: refused (1002) once it is whole
        elif message_opcode != OP_TEXT:
            return        # a continuation of a binary message, or of none (1002 later)
        piece = pending.read()
        if not piece:
            return
        decoder = self._utf8
        if decoder is None:    # the first frame of a text message
            decoder = self._utf8 = Utf8Decoder()
        # The frame's header was checked against the message's limit, so its
        # bytes read early cannot take the message over it.
        self._message_size += len(piece)
        self._keep(decoder.decode(piece))

    def _receive_control(self, opcode: int, payload: bytes) -> Event:
        # §5.5: control frames may come between the fragments of a message
        # and are handled at once.
        if opcode == OP_PING:
            if self.state is OPEN:
                # §5.5.2: answer with a Pong carrying the same payload.
                self._queue_frame(OP_PONG, payload)
            return Ping(payload)
        if opcode == OP_PONG:
            # §5.5.3: a Pong may be unsolicited; it is reported, never answered.
            return Pong(payload)
        return self._receive_close(payload)

    def _receive_close(self, payload: bytes) -> CloseReceived:
        code, reason = decode_close_payload(payload)
        self.close_received = code
        self.close_reason = reason
        if self.state is OPEN:
            # §5.5.1: answer a Close with a Close, typically echoing the code.
            # Replies to the messages before it are queued already: each was
            # handed out, and answered, before this frame was parsed.
            echoed = None if code == CLOSE_NO_STATUS else code
            self._queue_frame(OP_CLOSE, encode_close_payload(echoed))
            self.close_sent = code
        self._move(Cause.RECEIVE_CLOSE)
        self._let_go()   # §1.4: nothing after a Close is read; a message it cut is dropped
        return CloseReceived(code, reason)

    def _fail(self, error: ProtocolError) -> None:
        """§7.1.7 Fail the WebSocket Connection: send a Close, stop reading, drop TCP."""
        self.failure = error
        if self.close_sent is None:
            reason = error.reason.encode("utf-8")[:123].decode("utf-8", "ignore")
            self._queue_frame(OP_CLOSE, encode_close_payload(error.close_code, reason))
            self.close_sent = error.close_code
        self._move(Cause.FAIL)
        self._let_go()

    # ---- what we send -------------------------------------------------

    def data_to_send(self) -> bytes:
        """The bytes to write to the transport since the last call."""
        if not self._outgoing:
            return b""
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        self._vectored = False
        return data

    def buffers_to_send(self, join: bool = True) -> list[bytes]:
        """`data_to_send()` as a list of pieces, in order, for a vectored write.

        A big payload is its own piece, after its frame's header, as the
        application gave it: writing the pieces with `socket.sendmsg` spares
        the copy that joining them takes. When no such payload is queued, the
        frames come joined into one piece, which one `send` writes faster
        than a vector of many; with join=False they come as they were queued
        (for output that will wait in a send queue: a broadcast's frame, the
        same bytes for every peer, stays shared instead of being copied into
        each peer's own piece).
        """
        outgoing = self._outgoing
        if not outgoing:
            return []
        self._outgoing = []
        if self._vectored:
            self._vectored = False
        elif len(outgoing) > 1 and join:
            outgoing = [b"".join(outgoing)]
        return outgoing

    def _queue_frame(self, opcode: int, payload: bytes, fin: bool = True,
                     rsv1: bool = False) -> None:
        mask_key = self._mask_keys.next() if self._mask_keys is not None else None
        if len(payload) < VECTORED_MIN:
            self._outgoing.append(encode_frame(opcode, payload, fin=fin, mask_key=mask_key,
                                               rsv1=rsv1))
            return
        # A big payload is not copied after its header: see buffers_to_send().
        self._vectored = True
        self._outgoing.append(frame_header(opcode, len(payload), fin=fin, mask_key=mask_key,
                                           rsv1=rsv1))
        if mask_key is None:
            self._outgoing.append(payload)
        else:
            self._outgoing += mask_chunks(payload, mask_key)

    def send_message(self, opcode: int, payload: bytes) -> None:
        """Queue a whole message in one frame (§5.6): OP_TEXT with its UTF-8 bytes, or
        OP_BINARY; compressed when permessage-deflate is on. (`send_text` and
        `send_binary` in one call: a server's handle sends this way, hot path.)"""
        if self.state is not OPEN or self._sending_opcode is not None:
            self._check_whole_message()   # raises, saying why
        deflate = self.deflate
        if deflate is not None and len(payload) >= deflate.options.min_size:
            # RFC 7692 §6: RSV1 on the (first) frame of a compressed message.
            self._queue_frame(opcode, deflate.compress(payload), rsv1=True)
        elif self._mask_keys is None and (length := len(payload)) < LENGTH_16BIT:
            # A server's short message, the most common frame there is: FIN
            # and the opcode, then the length in 7 bits (§5.2), no mask (§5.1).
            self._outgoing.append(SHORT_HEADERS[opcode][length] + payload)
        else:
            self._queue_frame(opcode, payload)

    def _check_can_send_data(self) -> None:
        if self.state is not OPEN:
            # §5.5.1: after sending a Close frame, no more data frames.
            raise ConnectionClosed(self.close_code, self.close_reason)

    def send_text(self, text: str) -> None:
        self.send_message(OP_TEXT, text.encode("utf-8"))

    def send_binary(self, data: bytes) -> None:
        self.send_message(OP_BINARY, bytes(data))

    def send_frame_bytes(self, frame: bytes) -> None:
        """Send a frame encoded elsewhere: a broadcast encodes once for many connections.

        Only for servers, whose frames are unmasked and so the same for every peer.
        With permessage-deflate, the frame is either uncompressed (RSV1 clear;
        it leaves the compression context alone) or compressed with a fresh
        window (`encode_shared_frame`), which only a connection that agreed
        to server_no_context_takeover may be sent.
        """
        # Hot path (a broadcast calls it once per recipient): one combined
        # test, the reasons sorted out only when it fails.
        if self.state is not OPEN or self._sending_opcode is not None or self._mask_keys:
            if self.role is not Role.SERVER:
                raise ValueError("a client masks each frame with its own key")
            self._check_whole_message()
        if type(frame) is not bytes:
            frame = bytes(frame)   # queued by reference: a bytearray changed later would go out changed
        self._outgoing.append(frame)

    def _check_whole_message(self) -> None:
        self._check_can_send_data()
        if self._sending_opcode is not None:
            # §5.4: a message's fragments are not interleaved with another message.
            raise ValueError("a fragmented message is being sent; finish it first")

    def send_fragment(self, data: bytes | str, *, fin: bool) -> None:
        """Stream a message in pieces (§5.4); str pieces make a text message.

        The first call opens the message and sets its type; the call with
        fin=True ends it. A text message's pieces must each be whole str
        values; they are encoded one by one. Streamed messages are sent
        uncompressed even with permessage-deflate (RFC 7692 §6 lets a sender
        choose, message by message).
        """
        self._check_can_send_data()
        is_text = isinstance(data, str)
        payload = data.encode("utf-8") if is_text else bytes(data)
        if self._sending_opcode is None:
            self._sending_opcode = OP_TEXT if is_text else OP_BINARY
            opcode = self._sending_opcode
        else:
            if (self._sending_opcode == OP_TEXT) != is_text:
                raise ValueError("every piece of a message has the message's type")
            opcode = OP_CONTINUATION
        self._queue_frame(opcode, payload, fin=fin)
        if fin:
            self._sending_opcode = None

    def send_ping(self, payload: bytes = b"") -> None:
        self._check_can_send_data()
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError("a ping payload is at most 125 bytes (§5.5)")
        self._queue_frame(OP_PING, bytes(payload))

    def send_pong(self, payload: bytes = b"") -> None:
        self._check_can_send_data()
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError("a pong payload is at most 125 bytes (§5.5)")
        self._queue_frame(OP_PONG, bytes(payload))

    def close(self, code: int | None = CLOSE_NORMAL, reason: str = "") -> None:
        """Start the closing handshake (§7.1.2); does nothing once it has started."""
        if self.state is not OPEN:
            return
        self._queue_frame(OP_CLOSE, encode_close_payload(code, reason))
        self.close_sent = code if code is not None else CLOSE_NO_STATUS
        self._sending_opcode = None
        self._move(Cause.SEND_CLOSE)

    def abort(self) -> None:
        """The transport is gone or given up on (close timeout): CLOSED, code 1006."""
        self._aborted = True
        self._move(Cause.ABORT)
        self._let_go()
