"""Reading the protocol: annotated frames, and a tap that prints bytes as they cross the wire.

Three layers, each usable alone:

- `parse_header()` and `annotate_frame()`: pure functions. One frame's bytes
  in, its header fields (RFC 6455 §5.2) and payload (hex, unmasked, as text)
  out as lines of text, with every rule the frame breaks named by byte and
  section. A header's rules are the parser's own (`check_header()` asks
  `rawws.frames.header_violations`), so the annotator refuses what the parser
  refuses. `python -m rawws.tools.decode` prints them.
- `FrameAnnotator`: the frames of one direction in order, carrying what
  spans frames (the message being fragmented, §5.4; a character split
  between frames; the permessage-deflate inflater, RFC 7692).
- `WireTracer` and `ConnectionTap`: `--trace`. The server and client hand the
  tap every byte exactly as it is received from or sent to the socket; the
  tap prints the HTTP handshake heads, then the frames. It parses the bytes
  itself, a passive observer with no link to the protocol object, so it
  shows bytes the protocol refuses too.

A trace looks like this (`<-` received by this process, `->` sent by it):

    [c1 <-] FIN=1 RSV=000 op=0x1 TEXT MASK=1 len=5 (7-bit) key=37fa213d
    [c1 <-]   masked   7f 9f 4d 51 58
    [c1 <-]   unmasked 48 65 6c 6c 6f
    [c1 <-]   text     "Hello"
"""
from __future__ import annotations

import sys
import threading
import unicodedata
import zlib
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import TextIO

from ..close import (CLOSE_ABNORMAL, CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_INVALID_PAYLOAD,
                    CLOSE_MANDATORY_EXTENSION, CLOSE_MESSAGE_TOO_BIG, CLOSE_NO_STATUS, CLOSE_NORMAL,
                    CLOSE_POLICY_VIOLATION, CLOSE_PROTOCOL_ERROR, CLOSE_TLS_HANDSHAKE,
                    CLOSE_UNSUPPORTED_DATA, is_valid_close_code)
from ..deflate import EMPTY_BLOCK_TAIL
from ..frames import (FIN_BIT, LENGTH_16BIT, LENGTH_64BIT, LENGTH_BITS, MASK_BIT, MASK_KEY_SIZE,
                      MAX_CONTROL_PAYLOAD, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG,
                      OP_TEXT, OPCODE_BITS, RSV1_BIT, RSV2_BIT, RSV3_BIT, HeaderViolation,
                      header_violations)
from ..http import Headers, content_length
from ..masking import mask

OPCODE_NAMES = {
    OP_CONTINUATION: "CONTINUATION",
    OP_TEXT: "TEXT",
    OP_BINARY: "BINARY",
    OP_CLOSE: "CLOSE",
    OP_PING: "PING",
    OP_PONG: "PONG",
}

# §7.4.1: what each defined close code means.
CLOSE_CODE_NAMES = {
    CLOSE_NORMAL: "normal closure",
    CLOSE_GOING_AWAY: "going away",
    CLOSE_PROTOCOL_ERROR: "protocol error",
    CLOSE_UNSUPPORTED_DATA: "unsupported data",
    1004: "reserved",
    CLOSE_NO_STATUS: "no status code; never sent",
    CLOSE_ABNORMAL: "closed abnormally; never sent",
    CLOSE_INVALID_PAYLOAD: "invalid payload data",
    CLOSE_POLICY_VIOLATION: "policy violation",
    CLOSE_MESSAGE_TOO_BIG: "message too big",
    CLOSE_MANDATORY_EXTENSION: "mandatory extension",
    CLOSE_INTERNAL_ERROR: "internal error",
    CLOSE_TLS_HANDSHAKE: "TLS handshake failure; never sent",
}

DEFAULT_HEX_LIMIT = 16      # payload bytes shown as hex in a trace: one line
DEFAULT_TEXT_LIMIT = 200    # payload bytes decoded for the text column
HEX_PER_LINE = 16
LABEL_WIDTH = 9             # "unmasked " and its peers line up
INDENT = "  "
MAX_HTTP_HEAD = 64 * 1024   # a longer head is not buffered by the tap
_ELLIPSIS = "\u2026"


class IncompleteFrame(Exception):
    """The bytes end before the frame does; the message says what is missing."""


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule a frame breaks: the byte where it shows, what is wrong, and the rule."""

    byte: int
    text: str
    rule: str
    warning: bool = False
    violation: HeaderViolation | None = None   # the header rule it is, as the parser states it

    def __str__(self) -> str:
        kind = "warning" if self.warning else "error"
        return f"{kind}: byte {self.byte}: {self.text} ({self.rule})"


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """The fields of one frame header (§5.2), as the bytes say, valid or not."""

    offset: int             # where the frame starts in the bytes it was read from
    fin: bool
    rsv1: bool
    rsv2: bool
    rsv3: bool
    opcode: int
    masked: bool
    length: int             # of the payload
    length_form: int        # 7, 16 or 64: which length encoding was used
    mask_key: bytes | None
    size: int               # header bytes, masking key included

    @property
    def is_control(self) -> bool:
        """§5.5: opcodes 0x8-0xF are control frames (0xB-0xF reserved ones)."""
        return self.opcode >= OP_CLOSE

    @property
    def end(self) -> int:
        """Where the frame ends in the bytes it was read from."""
        return self.offset + self.size + self.length

    @property
    def first_byte(self) -> int:
        """FIN, RSV1-3 and the opcode, as on the wire."""
        return (FIN_BIT * self.fin | RSV1_BIT * self.rsv1 | RSV2_BIT * self.rsv2
                | RSV3_BIT * self.rsv3 | self.opcode)

    @property
    def second_byte(self) -> int:
        """MASK and the 7-bit length field (126 or 127 for the longer forms), as on the wire."""
        field = {16: LENGTH_16BIT, 64: LENGTH_64BIT}.get(self.length_form, self.length)
        return MASK_BIT * self.masked | field


def header_size(first_two: bytes | bytearray) -> int:
    """The whole header's size, masking key included, from its first two bytes."""
    second = first_two[1]
    length = second & LENGTH_BITS
    size = 2 + (2 if length == LENGTH_16BIT else 8 if length == LENGTH_64BIT else 0)
    return size + (MASK_KEY_SIZE if second & MASK_BIT else 0)


def parse_header(data: bytes | bytearray, start: int = 0) -> FrameHeader:
    """The header of the frame at `data[start:]`, whatever its fields say.

    Raises IncompleteFrame when the bytes end inside the header. Nothing is
    refused here: `check_header()` names the rules a header breaks.
    """
    have = len(data) - start
    if have < 2:
        raise IncompleteFrame(f"incomplete: a frame header needs at least 2 bytes, have {have}")
    first = data[start]
    second = data[start + 1]
    length = second & LENGTH_BITS
    form = 7
    pos = start + 2
    if length == LENGTH_16BIT:
        # §5.2: "If 126, the following 2 bytes interpreted as a 16-bit
        # unsigned integer are the payload length."
        if have < 4:
            raise IncompleteFrame(f"incomplete: header says 16-bit length (len=126), "
                                  f"need 4 bytes, have {have}")
        length = int.from_bytes(data[pos:pos + 2], "big")
        form = 16
        pos += 2
    elif length == LENGTH_64BIT:
        # §5.2: "If 127, the following 8 bytes interpreted as a 64-bit unsigned integer".
        if have < 10:
            raise IncompleteFrame(f"incomplete: header says 64-bit length (len=127), "
                                  f"need 10 bytes, have {have}")
        length = int.from_bytes(data[pos:pos + 8], "big")
        form = 64
        pos += 8
    key = None
    if second & MASK_BIT:
        need = pos - start + MASK_KEY_SIZE
        if have < need:
            raise IncompleteFrame(f"incomplete: MASK=1, the header needs {need} bytes with its "
                                  f"masking key (bytes {pos}-{pos + 3}), have {have}")
        key = bytes(data[pos:pos + MASK_KEY_SIZE])
        pos += MASK_KEY_SIZE
    return FrameHeader(offset=start, fin=bool(first & FIN_BIT), rsv1=bool(first & RSV1_BIT),
                       rsv2=bool(first & RSV2_BIT), rsv3=bool(first & RSV3_BIT),
                       opcode=first & OPCODE_BITS, masked=key is not None, length=length,
                       length_form=form, mask_key=key, size=pos - start)


def partial_header(data: bytes | bytearray, start: int = 0) -> FrameHeader | None:
    """The header fields the bytes so far show, for a header cut before its end:
    None until its length is whole; the masking key, if not all there, is None.
    So the rules a header breaks can be named even when the frame is incomplete."""
    have = len(data) - start
    if have < 2:
        return None
    second = data[start + 1]
    length = second & LENGTH_BITS
    size = {LENGTH_16BIT: 4, LENGTH_64BIT: 10}.get(length, 2)
    if have < size:
        return None
    try:
        return parse_header(data, start)
    except IncompleteFrame:    # only the masking key is missing
        padded = bytes(data[start:start + size]) + bytes(MASK_KEY_SIZE)
        header = parse_header(padded)
        return FrameHeader(offset=start, fin=header.fin, rsv1=header.rsv1, rsv2=header.rsv2,
                           rsv3=header.rsv3, opcode=header.opcode, masked=True,
                           length=header.length, length_form=header.length_form,
                           mask_key=None, size=header.size)


def opcode_name(opcode: int) -> str:
    """TEXT, PING...; §5.2 reserves 0x3-0x7 (data) and 0xB-0xF (control)."""
    if opcode in OPCODE_NAMES:
        return OPCODE_NAMES[opcode]
    return "reserved-control" if opcode >= OP_CLOSE else "reserved-data"


def header_line(header: FrameHeader) -> str:
    """One line with every header field: FIN, RSV1-3, opcode, MASK, length and its form, key."""
    rsv = f"{header.rsv1:d}{header.rsv2:d}{header.rsv3:d}"
    line = (f"FIN={header.fin:d} RSV={rsv} op={header.opcode:#x} {opcode_name(header.opcode)} "
            f"MASK={header.masked:d} len={header.length} ({header.length_form}-bit)")
    if header.mask_key is not None:
        line += f" key={header.mask_key.hex()}"
    return line


def check_header(header: FrameHeader, *, allow_rsv1: bool = False, sender: str | None = None,
                 max_frame_size: int | None = None) -> list[Finding]:
    """Every rule the header breaks, as `FrameParser` states them (`header_violations`),
    then a warning for a length not in its minimal form, which receivers accept.

    `allow_rsv1` once permessage-deflate is negotiated; `sender` ("client" or
    "server") to check the masking rule of §5.1; `max_frame_size` to check a
    receiver's limit (§10.4).
    """
    at = header.offset
    require_mask = {"client": True, "server": False}.get(sender or "")
    found = [Finding(at + violation.byte, violation.detail, violation.rule, violation=violation)
             for violation in header_violations(header.first_byte, header.second_byte,
                                                header.length, require_mask=require_mask,
                                                allowed_rsv_bits=RSV1_BIT if allow_rsv1 else 0,
                                                payload_limit=max_frame_size)]
    minimal = 7 if header.length < LENGTH_16BIT else 16 if header.length <= 0xFFFF else 64
    if header.length_form != minimal:
        # §5.2: "the minimal number of bytes MUST be used", a rule for the sender.
        found.append(Finding(at + 1, f"length {header.length} sent in the "
                                     f"{header.length_form}-bit form; the minimal form is "
                                     f"{minimal}-bit", "RFC 6455 §5.2", warning=True))
    return found


# ---- showing bytes and text ------------------------------------------------

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def printable(text: str, keep: str = "") -> str:
    """Text made safe to print: control and format characters (an escape
    sequence could drive the terminal) written as escapes, and so is `\\`,
    so that every escape shown is one. The characters in `keep` stay as they
    are: the chat client keeps a message's newlines, tabs and backslashes."""
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        if ch in keep:
            out.append(ch)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif unicodedata.category(ch) in _ESCAPED_CATEGORIES:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def hex_lines(label: str, data: bytes, total: int, limit: int | None) -> list[str]:
    """`data` (the start of `total` bytes) as hex, 16 bytes a line, at most
    `limit` bytes, with "… (N more bytes)" for the rest."""
    shown = data if limit is None else data[:limit]
    rest = total - len(shown)
    lines = []
    for start in range(0, max(len(shown), 1), HEX_PER_LINE):
        chunk = shown[start:start + HEX_PER_LINE].hex(" ")
        lines.append(f"{(label if start == 0 else ''):<{LABEL_WIDTH}}{chunk}".rstrip())
    if rest:
        lines[-1] += f" {_ELLIPSIS} ({rest} more bytes)"
    return lines


def text_line(label: str, text: str, rest: int) -> str:
    """`label "text"`, with "… (N more bytes)" when the text was cut."""
    line = f'{label:<{LABEL_WIDTH}}"{printable(text)}'
    return line + (f'{_ELLIPSIS}" ({rest} more bytes)' if rest else '"')


def _rotated(key: bytes, offset: int) -> bytes:
    """The key for payload byte `offset` onwards: §5.3 masks byte i with key[i % 4]."""
    turn = offset % MASK_KEY_SIZE
    return key[turn:] + key[:turn]


class _Inflater:
    """The receiving side of permessage-deflate (RFC 7692 §7.2.2), for reading only.

    One raw-deflate stream per direction, kept across messages: that reads
    both context takeover and no_context_takeover senders (a message that
    refers to no earlier data inflates the same), and a 15-bit window reads
    any smaller one. Only the first `keep` inflated bytes of a message are
    kept; the rest is inflated (the stream needs it) and counted.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.stream = zlib.decompressobj(-zlib.MAX_WBITS)
        self.kept = bytearray()
        self.total = 0
        self.error: str | None = None

    def feed(self, data: bytes) -> None:
        if self.error is not None or not data:
            return
        try:
            out = self.stream.decompress(data, max(1, self.keep - len(self.kept)))
            self._count(out)
            while self.stream.unconsumed_tail:
                self._count(self.stream.decompress(self.stream.unconsumed_tail, 64 * 1024))
        except zlib.error as error:
            self.error = str(error)

    def _count(self, out: bytes) -> None:
        self.total += len(out)
        room = self.keep - len(self.kept)
        if room > 0:
            self.kept += out[:room]

    def end_message(self) -> tuple[bytes, int, str | None]:
        """The message's first inflated bytes, their total count, and any error; then reset."""
        self.feed(EMPTY_BLOCK_TAIL)   # RFC 7692 §7.2.2
        result = bytes(self.kept), self.total, self.error
        self.kept = bytearray()
        self.total = 0
        return result


class FrameAnnotator:
    """Annotates the frames of one direction, in order.

    What spans frames is carried here: the opcode of a fragmented message
    (§5.4: continuation frames are text if the message is), the start of a
    character split between two frames, whether the message is compressed
    (RFC 7692), and the inflater. For each frame: `annotate()` with the
    header and the first payload bytes (at least `needed(header)` of them),
    then `rest()` with any payload bytes not given to annotate, then
    `finish()`.
    """

    def __init__(self, *, sender: str | None = None, deflate: bool = False,
                 hex_limit: int | None = DEFAULT_HEX_LIMIT,
                 text_limit: int | None = DEFAULT_TEXT_LIMIT) -> None:
        self.sender = sender
        self.deflate = deflate
        self.hex_limit = hex_limit
        self.text_limit = text_limit
        self.message_opcode: int | None = None   # of the fragmented message in progress
        self.compressed = False                   # that message has RSV1 on its first frame
        self.carry = b""                          # a character's first bytes from the last frame
        self.text_exact = True                    # False once part of the message was not decoded
        self.inflater = _Inflater(self._keep_limit()) if deflate else None
        self.errors = 0                           # rules broken so far (warnings aside)
        self._payload_seen = 0

    def _keep_limit(self) -> int:
        limits = [limit for limit in (self.hex_limit, self.text_limit) if limit is not None]
        return max(limits) if len(limits) == 2 else 1 << 62

    def enable_deflate(self) -> None:
        """permessage-deflate was negotiated: RSV1 marks a compressed message."""
        self.deflate = True
        if self.inflater is None:
            self.inflater = _Inflater(self._keep_limit())

    def needed(self, header: FrameHeader) -> int:
        """Payload bytes `annotate()` shows: all of a valid control frame, else up to the limits."""
        if header.length <= MAX_CONTROL_PAYLOAD:
            return header.length
        return min(header.length, self._keep_limit())

    def annotate(self, header: FrameHeader, payload: bytes) -> list[str]:
        """The header line, the payload lines and the findings for one frame.

        `payload` is the payload as on the wire (still masked), all of it or
        at least its first `needed(header)` bytes.
        """
        lines: list[str] = []
        findings = check_header(header, allow_rsv1=self.deflate, sender=self.sender)
        findings += self._check_sequence(header)
        if header.rsv1 and header.opcode in (OP_TEXT, OP_BINARY):
            self.compressed = True   # RFC 7692 §6: RSV1 on a message's first frame
        data = payload
        if header.mask_key is not None and header.length:
            data = mask(payload, header.mask_key)
            lines += hex_lines("masked", payload, header.length, self.hex_limit)
            lines += hex_lines("unmasked", data, header.length, self.hex_limit)
        elif header.length:
            lines += hex_lines("payload", data, header.length, self.hex_limit)
        kind = self._kind(header)
        if kind == "compressed":
            how = "inflated when the message ends" if self.inflater else "not decoded"
            lines.append(f"{'deflate':<{LABEL_WIDTH}}compressed (RSV1, permessage-deflate); {how}")
            if self.inflater is not None:
                self.inflater.feed(data)
        elif kind == "text":
            lines += self._text(header, data, findings)
        elif kind == "close":
            lines += self._close(header, data, findings)
        elif kind == "control-text" and header.length:
            # A Ping's payload is any bytes (§5.5.2); shown as text when it is plain text.
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            if text is not None and printable(text) == text:
                lines.append(text_line("text", text, header.length - len(data)))
        self._payload_seen = len(payload)
        lines += [str(finding) for finding in findings]
        self.errors += sum(not finding.warning for finding in findings)
        return [header_line(header)] + [INDENT + line for line in lines]

    def rest(self, header: FrameHeader, payload_part: bytes) -> None:
        """Payload bytes of the frame past those given to `annotate()`, in order."""
        if self.inflater is not None and self._kind(header) == "compressed":
            data = payload_part
            if header.mask_key is not None:
                data = mask(payload_part, _rotated(header.mask_key, self._payload_seen))
            self.inflater.feed(data)
        self._payload_seen += len(payload_part)

    def finish(self, header: FrameHeader) -> list[str]:
        """The frame has passed: at the end of a compressed message, its inflated payload."""
        lines: list[str] = []
        if header.is_control or header.opcode not in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
            return lines
        if header.fin:
            if self.compressed and self.inflater is not None:
                lines += [INDENT + line for line in self._inflated()]
            self.message_opcode = None
            self.compressed = False
            self.carry = b""
            self.text_exact = True
        return lines

    # ---- the pieces ----------------------------------------------------

    def _check_sequence(self, header: FrameHeader) -> list[Finding]:
        """§5.4: a continuation continues a message; a new message waits for the last."""
        found = []
        opcode = header.opcode
        if opcode == OP_CONTINUATION:
            if self.message_opcode is None:
                found.append(Finding(header.offset, "continuation frame with no message "
                                                    "in progress", "RFC 6455 §5.4"))
        elif opcode in (OP_TEXT, OP_BINARY):
            if self.message_opcode is not None:
                found.append(Finding(header.offset, "new data frame while a fragmented "
                                                    "message is open", "RFC 6455 §5.4"))
                self.carry = b""
                self.text_exact = True
                self.compressed = False
            self.message_opcode = opcode
        return found

    def _kind(self, header: FrameHeader) -> str:
        """How the payload is shown: text, compressed, close, control-text or bytes."""
        opcode = header.opcode
        if opcode == OP_CLOSE:
            return "close"
        if opcode in (OP_PING, OP_PONG):
            return "control-text"
        if opcode not in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
            return "bytes"
        if self.compressed:
            return "compressed"
        return "text" if self.message_opcode == OP_TEXT else "bytes"

    def _text(self, header: FrameHeader, data: bytes, findings: list[Finding]) -> list[str]:
        """The payload as text (§5.6); invalid UTF-8 named by its byte (§8.1).

        A character split between two frames (§5.4 allows it) is shown with
        the frame that completes it.
        """
        limit = self.text_limit
        whole = len(data) >= header.length and (limit is None or header.length <= limit)
        shown = data[:header.length] if limit is None else data[:limit]
        carried = len(self.carry)
        raw = self.carry + shown
        held = 0    # bytes at the end that start a character the next bytes finish
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            at_end = error.end == len(raw) and error.reason == "unexpected end of data"
            if at_end and not (whole and header.fin):
                text = raw[:error.start].decode("utf-8")
                held = len(raw) - error.start
            else:
                text = raw.decode("utf-8", "replace")
                if self.text_exact:
                    byte = header.offset + header.size + max(0, error.start - carried)
                    findings.append(Finding(byte, f"invalid UTF-8 in a text message "
                                                  f"({error.reason})", "RFC 6455 §8.1"))
        if whole:
            self.carry = raw[len(raw) - held:] if held else b""
            if held:
                return [text_line("text", text, 0) + f" (+{held} bytes of a character "
                                                     "the next frame ends)"]
            rest = 0
        else:
            # Cut at the limit: the next frame's start cannot be read exactly.
            self.text_exact = False
            self.carry = b""
            rest = header.length - (len(shown) - min(held, len(shown)))
        return [text_line("text", text, rest)]

    def _close(self, header: FrameHeader, data: bytes, findings: list[Finding]) -> list[str]:
        """A Close body (§5.5.1): a 2-byte code, then a UTF-8 reason."""
        body_at = header.offset + header.size
        if not data:
            return [f"{'close':<{LABEL_WIDTH}}no status code (the receiver reports 1005, §7.1.5)"]
        if len(data) == 1:
            findings.append(Finding(body_at, "a Close body of 1 byte; a body starts with a "
                                             "2-byte code", "RFC 6455 §5.5.1"))
            return []
        code = int.from_bytes(data[:2], "big")
        name = CLOSE_CODE_NAMES.get(code) or ("registered" if 3000 <= code <= 3999 else
                                               "private use" if 4000 <= code <= 4999 else
                                               "not a valid code")
        if not is_valid_close_code(code):
            findings.append(Finding(body_at, f"close code {code} may not be sent in a Close "
                                             "frame", "RFC 6455 §7.4"))
        try:
            reason = data[2:].decode("utf-8")
        except UnicodeDecodeError as error:
            reason = data[2:].decode("utf-8", "replace")
            findings.append(Finding(body_at + 2 + error.start, "close reason is not valid "
                                                               "UTF-8", "RFC 6455 §5.5.1"))
        line = f"{'close':<{LABEL_WIDTH}}code={code} ({name})"
        return [line + (f' reason="{printable(reason)}"' if reason else "")]

    def _inflated(self) -> list[str]:
        data, total, error = self.inflater.end_message()
        if error is not None:
            self.inflater = _Inflater(self._keep_limit())   # start afresh for what follows
            self.errors += 1
            return [f"error: the message does not inflate: {error} (RFC 7692 §7.2.2)"]
        if self.message_opcode == OP_TEXT:
            shown = data if self.text_limit is None else data[:self.text_limit]
            return [text_line("inflated", shown.decode("utf-8", "replace"), total - len(shown))]
        return hex_lines("inflated", data, total, self.hex_limit)


def annotate_frame(data: bytes, *, sender: str | None = None, deflate: bool = False,
                   hex_limit: int | None = DEFAULT_HEX_LIMIT,
                   text_limit: int | None = DEFAULT_TEXT_LIMIT) -> list[str]:
    """The annotation of the one frame that `data` starts with, as lines of text.

    The header line, then the payload as hex (`masked` and `unmasked` for a
    masked frame), then the text, close code, or what else the payload means,
    then one line for each rule the frame breaks. Raises IncompleteFrame when
    `data` ends before the frame does.
    """
    header = parse_header(data)
    annotator = FrameAnnotator(sender=sender, deflate=deflate, hex_limit=hex_limit,
                               text_limit=text_limit)
    payload = data[header.size:header.size + header.length]
    if len(payload) < header.length:
        raise IncompleteFrame(f"incomplete: payload of {header.length} bytes, have "
                              f"{len(payload)} ({header.length - len(payload)} missing)")
    return annotator.annotate(header, bytes(payload)) + annotator.finish(header)


# ---- the tap: --trace ------------------------------------------------------

class WireTracer:
    """Where traces go (a text stream, stderr by default), and the connection counter.

    One per process; each connection gets a `ConnectionTap` from `tap()`.
    Lines of one call are written together, under a lock, so connections
    traced from several threads do not interleave within a frame.
    """

    def __init__(self, stream: TextIO | None = None, *, hex_limit: int | None = DEFAULT_HEX_LIMIT,
                 text_limit: int | None = DEFAULT_TEXT_LIMIT) -> None:
        self.stream = stream
        self.hex_limit = hex_limit
        self.text_limit = text_limit
        self._count = 0
        self._lock = threading.Lock()

    def tap(self, description: str = "", *, role: str | None = None) -> ConnectionTap:
        """A tap for a new connection, numbered c1, c2...; `description` is printed first.

        `role` ("server" or "client") is this end's: the peer's frames are
        then checked against the masking rule of §5.1, and so are ours.
        """
        with self._lock:
            self._count += 1
            number = self._count
        peer = {"server": "client", "client": "server"}.get(role or "")
        return ConnectionTap(self, f"c{number}", description, peer, role)

    def write(self, prefix: str, lines: list[str]) -> None:
        if not lines:
            return
        text = "".join(f"{prefix} {line}\n" for line in lines)
        stream = self.stream if self.stream is not None else sys.stderr
        with self._lock:
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):
                pass   # a closed or broken stream never breaks the connection


class _EndOfStream(Exception):
    """The connection ended while a direction's reader wanted more bytes."""


class _Direction:
    """One direction of a connection: bytes in, lines out, by a generator-based reader.

    The reader (`_read_stream`) is written like blocking code: `yield from
    self._read(n)` returns n bytes, yielding (waiting for `feed()`) until
    they have arrived. Only what the reader is waiting for is buffered: a
    frame's header and the payload bytes shown; the rest of a long payload
    is skipped as it passes.
    """

    def __init__(self, tap: ConnectionTap, arrow: str, sender: str | None) -> None:
        self.tap = tap
        self.prefix = f"[{tap.name} {arrow}]"
        self.buffer = bytearray()
        self.eof = False
        self.frames = FrameAnnotator(sender=sender, hex_limit=tap.tracer.hex_limit,
                                     text_limit=tap.tracer.text_limit)
        self.state = "an unfinished HTTP head"   # what the reader waits for, for the EOF line
        self.waiting_for_answer = False   # sent an upgrade request: frames or HTTP next?
        self.reader = self._read_stream()
        self.broken = False

    def emit(self, lines: list[str]) -> None:
        self.tap.tracer.write(self.prefix, lines)

    def feed(self, data: bytes) -> None:
        if self.broken:
            return
        if data:
            self.buffer += data
        else:
            self.eof = True
        self.resume()

    def resume(self) -> None:
        """Let the reader run on what has arrived; a bug in it ends this trace only."""
        try:
            next(self.reader)
        except StopIteration:
            self.broken = True
        except Exception as error:   # never let tracing break the connection it watches
            self.broken = True
            self.buffer.clear()
            self.emit([f"(trace stopped: {type(error).__name__}: {error})"])

    # ---- reading helpers: generators that yield until bytes arrive -----

    def _wait(self) -> Generator[None, None, None]:
        if self.eof:
            raise _EndOfStream
        yield

    def _read(self, n: int) -> Generator[None, None, bytes]:
        while len(self.buffer) < n:
            yield from self._wait()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def _skip(self, n: int, sink=None) -> Generator[None, None, None]:
        """Let n bytes pass; `sink` sees them if given."""
        while n:
            if not self.buffer:
                yield from self._wait()
                continue
            take = min(n, len(self.buffer))
            if sink is not None:
                sink(bytes(self.buffer[:take]))
            del self.buffer[:take]
            n -= take

    def _discard(self) -> Generator[None, None, None]:
        """Let everything else in this direction pass unshown, to its end."""
        while True:
            self.buffer.clear()
            yield from self._wait()

    def _read_head(self) -> Generator[None, None, bytes | None]:
        """An HTTP head up to and including its blank line; None if it is too long."""
        searched = 0
        while (end := self.buffer.find(b"\r\n\r\n", searched)) < 0:
            if len(self.buffer) > MAX_HTTP_HEAD:
                return None
            searched = max(0, len(self.buffer) - 3)
            yield from self._wait()
        return (yield from self._read(end + 4))

    # ---- the reader ----------------------------------------------------

    def _read_stream(self) -> Iterator[None]:
        """HTTP heads until the handshake's 101, then frames: the whole life of a direction."""
        try:
            yield from self._read_http()
            yield from self._read_frames()
        except _EndOfStream:
            self._at_eof()
        while True:   # after the end: nothing more to show
            self.buffer.clear()
            yield

    def _at_eof(self) -> None:
        left = len(self.buffer)
        where = f"; {left} bytes of {self.state} went unshown" if left else ""
        self.emit([f"EOF: the peer closed its side of the TCP connection{where}"])

    def _read_http(self) -> Generator[None, None, None]:
        """HTTP messages (a head, maybe a body) until this direction turns to frames."""
        conn = self.tap
        while True:
            self.state = "an unfinished HTTP head"
            head = yield from self._read_head()
            if head is None:
                self.emit([f"HTTP head over {MAX_HTTP_HEAD} bytes; the rest of this "
                           "direction is not shown"])
                yield from self._discard()
            lines = head[:-4].decode("latin-1").split("\r\n")
            fields = _header_fields(lines[1:])
            is_response = lines[0].startswith("HTTP/")
            kind = "response" if is_response else "request"
            self.emit([f"HTTP {kind}, {len(head)} bytes:"]
                      + [INDENT + printable(line) for line in lines]
                      + [INDENT + "(empty line: end of the head)"])
            if is_response:
                status = _status(lines[0])
                method = conn.methods.popleft() if conn.methods else "GET"
                if status == 101:
                    conn.upgraded(fields)
                    return
                if conn.waiting_for_upgrade:
                    conn.refused()
                body = _response_body(status, method, fields)
            else:
                conn.methods.append(lines[0].split(" ", 1)[0])
                body = _request_body(fields)
                if "websocket" in _field(fields, "Upgrade").lower():
                    # What follows waits for the answer: frames after a 101, HTTP else.
                    conn.waiting_for_upgrade = True
                    self.state = "what came before the handshake's answer"
                    self.waiting_for_answer = True
                    while conn.waiting_for_upgrade:
                        yield from self._wait()
                    self.waiting_for_answer = False
                    if conn.websocket:
                        return
                    continue
            if body is None:
                self.emit([INDENT + "followed by a body up to the end of the connection "
                           "(not shown)"])
                yield from self._discard()
            elif body:
                self.emit([INDENT + f"followed by a body of {body} bytes (not shown)"])
                self.state = "an unfinished HTTP body"
                yield from self._skip(body)

    def _read_frames(self) -> Generator[None, None, None]:
        """WebSocket frames (§5.2), one after another, to the end."""
        annotator = self.frames
        while True:
            self.state = "an unfinished frame"
            first_two = yield from self._read(2)
            rest = yield from self._read(header_size(first_two) - 2)
            header = parse_header(first_two + rest)
            shown = yield from self._read(annotator.needed(header))
            self.emit(annotator.annotate(header, shown))
            remaining = header.length - len(shown)
            if remaining:
                yield from self._skip(remaining, lambda part: annotator.rest(header, part))
            self.emit(annotator.finish(header))


def _header_fields(lines: list[str]) -> Headers:
    """The field lines of a head, as they are; a line without a colon is left out."""
    fields = Headers()
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            fields.add(name.strip(), value.strip())
    return fields


def _field(fields: Headers, name: str) -> str:
    """Every value of the field `name`, joined with commas ("" if there is none)."""
    return ", ".join(fields.get_all(name))


def _status(status_line: str) -> int:
    parts = status_line.split(" ", 2)
    try:
        return int(parts[1])
    except (IndexError, ValueError):
        return 0


def _request_body(fields: Headers) -> int | None:
    """Body bytes after a request head (RFC 9112 §6.3): Content-Length, or none."""
    if "Transfer-Encoding" in fields:
        return None
    return _body_length(fields) or 0


def _response_body(status: int, method: str, fields: Headers) -> int | None:
    """Body bytes after a response head (RFC 9112 §6.3); None: up to the end of the connection."""
    if method == "HEAD" or 100 <= status < 200 or status in (204, 304):
        return 0
    if "Transfer-Encoding" in fields:
        return None
    return _body_length(fields)


def _body_length(fields: Headers) -> int | None:
    """Content-Length as `rawws.http` reads it; None when absent or invalid."""
    try:
        return content_length(fields)
    except ValueError:
        return None


class ConnectionTap:
    """The bytes of one connection, both directions, as they cross the socket.

    `incoming(data)` after each receive (b"" at EOF), `outgoing(data)` with
    the bytes each send took. Every line printed starts with the
    connection's name and the direction: `[c1 <-]` received, `[c1 ->]` sent.
    """

    def __init__(self, tracer: WireTracer, name: str, description: str,
                 sender_in: str | None, sender_out: str | None) -> None:
        self.tracer = tracer
        self.name = name
        self.methods: deque[str] = deque()   # of requests not yet answered (HEAD has no body)
        self.waiting_for_upgrade = False     # a request asked for a WebSocket, no answer yet
        self.websocket = False               # the answer was 101
        self.incoming_side = _Direction(self, "<-", sender_in)
        self.outgoing_side = _Direction(self, "->", sender_out)
        if description:
            tracer.write(f"[{name} ==]", [description])

    def incoming(self, data: bytes) -> None:
        """Bytes received from the peer; b"" when it closed its side."""
        self.incoming_side.feed(bytes(data))

    def outgoing(self, data: bytes) -> None:
        """Bytes the socket took for sending."""
        if data:
            self.outgoing_side.feed(bytes(data))

    def upgraded(self, fields: Headers) -> None:
        """A 101 went by: both directions carry frames now, maybe compressed."""
        self.websocket = True
        extensions = _field(fields, "Sec-WebSocket-Extensions")
        deflate = "permessage-deflate" in extensions.lower()
        note = f"; extensions: {extensions}" if extensions else "; no extensions"
        self.tracer.write(f"[{self.name} ==]", ["handshake done (101): WebSocket frames "
                                                f"from here on{note}"])
        if deflate:
            self.incoming_side.frames.enable_deflate()
            self.outgoing_side.frames.enable_deflate()
        self._release()

    def refused(self) -> None:
        self._release()

    def _release(self) -> None:
        """The side that asked for the upgrade may read on: frames or HTTP."""
        if self.waiting_for_upgrade:
            self.waiting_for_upgrade = False
            for side in (self.incoming_side, self.outgoing_side):
                if side.waiting_for_answer:
                    side.resume()
