"""permessage-deflate (RFC 7692): compressed messages with the standard library's zlib.

Two parts, as the RFC has them:

- Negotiation (§5, §7.1), sans-IO, on header values: `server_accept()` picks
  the first offer a server can honour and writes its answer;
  `client_offer()` writes a client's offer and `client_check()` checks the
  server's answer against it.
- Compression (§7.2): `PerMessageDeflate`, one per connection, compresses the
  messages it sends and inflates the ones it receives, keeping or dropping
  the LZ77 window between messages as negotiated ("context takeover").

A compressed message is raw DEFLATE data (no zlib header) flushed with
Z_SYNC_FLUSH, which ends it with an empty stored block, 0x00 0x00 0xff 0xff;
the sender removes those four bytes and the receiver puts them back (§7.2.1,
§7.2.2). Only the first frame of a compressed message has RSV1 set (§6);
control frames are never compressed (§6.1).
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import HandshakeError, MessageTooBig, ProtocolError
from .extensions import Extension, ExtensionHeaderError, format_extension, parse_extensions

EXTENSION_NAME = "permessage-deflate"
SERVER_NO_CONTEXT_TAKEOVER = "server_no_context_takeover"
CLIENT_NO_CONTEXT_TAKEOVER = "client_no_context_takeover"
SERVER_MAX_WINDOW_BITS = "server_max_window_bits"
CLIENT_MAX_WINDOW_BITS = "client_max_window_bits"
KNOWN_PARAMS = frozenset({SERVER_NO_CONTEXT_TAKEOVER, CLIENT_NO_CONTEXT_TAKEOVER,
                          SERVER_MAX_WINDOW_BITS, CLIENT_MAX_WINDOW_BITS})

# §7.1.2: LZ77 window sizes are 2**8 to 2**15 bytes.
MIN_WINDOW_BITS = 8
MAX_WINDOW_BITS = 15
# zlib cannot compress raw DEFLATE with an 8-bit window ("invalid
# initialization option"): asked for 8, we compress with 9. That still keeps
# the promise, because zlib never reaches back further than the window size
# minus 262 bytes (MAX_DIST in deflate.c): 250 bytes for a 9-bit window,
# inside the 256 bytes that 8 allows.
ZLIB_MIN_COMPRESS_WINDOW_BITS = 9

# §7.2.1: what Z_SYNC_FLUSH leaves at the end of a message, removed on the wire.
EMPTY_BLOCK_TAIL = b"\x00\x00\xff\xff"


@dataclass(frozen=True, slots=True)
class DeflateOptions:
    """What one endpoint asks for and allows; the defaults take every offer as it is.

    For a server: the `*_no_context_takeover` flags are added to every answer
    (a server may ask either side to reset its window, §7.1.1), and the window
    sizes are the most it will use for its own messages and ask the client to
    use (where the client allows it to ask). For a client: what it offers.
    `min_size`: messages shorter than this are sent uncompressed (a message
    may always be sent so, §6). `level` and `mem_level` go to zlib.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = MAX_WINDOW_BITS
    client_max_window_bits: int = MAX_WINDOW_BITS
    level: int = 6
    mem_level: int = 8
    min_size: int = 0

    def __post_init__(self) -> None:
        for bits in (self.server_max_window_bits, self.client_max_window_bits):
            if not MIN_WINDOW_BITS <= bits <= MAX_WINDOW_BITS:
                raise ValueError("window bits are from 8 to 15 (RFC 7692 §7.1.2)")


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """What both ends agreed on for one connection (absent window bits mean 15)."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = MAX_WINDOW_BITS
    client_max_window_bits: int = MAX_WINDOW_BITS


class _Refused(Exception):
    """An offer or answer this side cannot take, with the reason."""


def _parse_window_bits(name: str, value: str | None, *, value_required: bool) -> int | None:
    if value is None:
        if value_required:
            raise _Refused(f"{name} needs a value")
        return None
    # §7.1.2.1: "a decimal integer value without leading zeroes between 8 to 15".
    if not value.isascii() or not value.isdigit() or value[0] == "0":
        raise _Refused(f"{name}={value} is not a window size")
    bits = int(value)
    if not MIN_WINDOW_BITS <= bits <= MAX_WINDOW_BITS:
        raise _Refused(f"{name}={value} is outside 8..15")
    return bits


def _read_params(extension: Extension, *, in_answer: bool) -> dict[str, int | None]:
    """The parameters of one permessage-deflate element, checked (§7.1).

    Returns a dict from parameter name to its window bits (or None). Unknown,
    repeated or malformed parameters raise _Refused: §5 says the server then
    declines the offer, and §7.1 that the client fails the connection.
    """
    params: dict[str, int | None] = {}
    for name, value in extension.params:
        if name not in KNOWN_PARAMS:
            raise _Refused(f"unknown parameter {name}")
        if name in params:
            raise _Refused(f"repeated parameter {name}")
        if name in (SERVER_NO_CONTEXT_TAKEOVER, CLIENT_NO_CONTEXT_TAKEOVER):
            if value is not None:
                # §7.1.1.1, §7.1.1.2: these parameters have no value.
                raise _Refused(f"{name} takes no value")
            params[name] = None
        elif name == SERVER_MAX_WINDOW_BITS:
            params[name] = _parse_window_bits(name, value, value_required=True)
        else:
            # §7.1.2.2: a client may offer client_max_window_bits without a
            # value; in an answer it always has one.
            params[name] = _parse_window_bits(name, value, value_required=in_answer)
    return params


# ---- server side ------------------------------------------------------

def server_accept(header_values: Iterable[str],
                  options: DeflateOptions) -> tuple[DeflateParams, str] | None:
    """The first permessage-deflate offer this server can honour, and its answer.

    `header_values` are the request's Sec-WebSocket-Extensions values. Returns
    the agreed parameters and the answer's header value, or None when there
    is no offer this server accepts (the connection then goes uncompressed).
    A header that breaks the §9.1 grammar is refused with a 400.
    """
    try:
        offers = parse_extensions(header_values)
    except ExtensionHeaderError as error:
        raise HandshakeError(400, f"malformed Sec-WebSocket-Extensions: {error}") from None
    for offer in offers:
        if offer.name != EXTENSION_NAME:
            continue
        try:
            return _answer_offer(_read_params(offer, in_answer=False), options)
        except _Refused:
            continue   # §5: decline this offer, try the next
    return None


def _answer_offer(offered: dict[str, int | None],
                  options: DeflateOptions) -> tuple[DeflateParams, str]:
    answer: list[tuple[str, str | None]] = []
    # §7.1.1.1: a server that accepts server_no_context_takeover must say so;
    # it may also choose it on its own.
    server_reset = SERVER_NO_CONTEXT_TAKEOVER in offered or options.server_no_context_takeover
    if server_reset:
        answer.append((SERVER_NO_CONTEXT_TAKEOVER, None))
    # §7.1.1.2: the server may ask the client to reset its window; an offer
    # of it is the client's hint that it will anyway.
    client_reset = CLIENT_NO_CONTEXT_TAKEOVER in offered or options.client_no_context_takeover
    if client_reset:
        answer.append((CLIENT_NO_CONTEXT_TAKEOVER, None))
    # §7.1.2.1: the client may cap the server's window; the server may cap it further.
    server_bits = options.server_max_window_bits
    if SERVER_MAX_WINDOW_BITS in offered:
        server_bits = min(server_bits, offered[SERVER_MAX_WINDOW_BITS])
    if server_bits < MAX_WINDOW_BITS or SERVER_MAX_WINDOW_BITS in offered:
        answer.append((SERVER_MAX_WINDOW_BITS, str(server_bits)))
    # §7.1.2.2: the server may cap the client's window only when the client
    # offered client_max_window_bits; never above the client's own value.
    client_bits = MAX_WINDOW_BITS
    if CLIENT_MAX_WINDOW_BITS in offered:
        client_bits = offered[CLIENT_MAX_WINDOW_BITS] or MAX_WINDOW_BITS
        if options.client_max_window_bits < client_bits:
            client_bits = options.client_max_window_bits
            answer.append((CLIENT_MAX_WINDOW_BITS, str(client_bits)))
    params = DeflateParams(server_reset, client_reset, server_bits, client_bits)
    return params, format_extension(Extension(EXTENSION_NAME, tuple(answer)))


# ---- client side ------------------------------------------------------

def client_offer(options: DeflateOptions) -> str:
    """The client's Sec-WebSocket-Extensions value: one permessage-deflate offer.

    It always says `client_max_window_bits` (with a value when capped), so the
    server may cap our window (§7.1.2.2).
    """
    params: list[tuple[str, str | None]] = []
    if options.server_no_context_takeover:
        params.append((SERVER_NO_CONTEXT_TAKEOVER, None))
    if options.client_no_context_takeover:
        params.append((CLIENT_NO_CONTEXT_TAKEOVER, None))
    if options.server_max_window_bits < MAX_WINDOW_BITS:
        params.append((SERVER_MAX_WINDOW_BITS, str(options.server_max_window_bits)))
    if options.client_max_window_bits < MAX_WINDOW_BITS:
        params.append((CLIENT_MAX_WINDOW_BITS, str(options.client_max_window_bits)))
    else:
        params.append((CLIENT_MAX_WINDOW_BITS, None))
    return format_extension(Extension(EXTENSION_NAME, tuple(params)))


def client_check(header_values: Iterable[str], options: DeflateOptions,
                 status: int = 101) -> DeflateParams | None:
    """Check the server's Sec-WebSocket-Extensions answer to `client_offer(options)`.

    None when the server declined (no header); the agreed parameters when it
    accepted; HandshakeError (the client fails the connection, §7.1) when the
    answer is one the offer did not allow.
    """
    values = list(header_values)
    if not values:
        return None
    try:
        answers = parse_extensions(values)
        if len(answers) != 1 or answers[0].name != EXTENSION_NAME:
            # RFC 6455 §9.1: the server may only choose among the extensions offered.
            raise _Refused(f"the server chose extensions that were not offered: {values}")
        answer = _read_params(answers[0], in_answer=True)
        if options.server_no_context_takeover and SERVER_NO_CONTEXT_TAKEOVER not in answer:
            # §7.1.1.1: an accepted server_no_context_takeover is repeated in the answer.
            raise _Refused("server_no_context_takeover was offered and not in the answer")
        server_bits = answer.get(SERVER_MAX_WINDOW_BITS)
        if server_bits is None:
            if options.server_max_window_bits < MAX_WINDOW_BITS:
                raise _Refused("server_max_window_bits was offered and not in the answer")
            server_bits = MAX_WINDOW_BITS
        elif server_bits > options.server_max_window_bits:
            raise _Refused(f"server_max_window_bits={server_bits} is above the offer's")
        client_bits = answer.get(CLIENT_MAX_WINDOW_BITS)
        if client_bits is None:
            client_bits = options.client_max_window_bits
        elif client_bits > options.client_max_window_bits:
            # §7.1.2.2: never more than the offer allowed.
            raise _Refused(f"client_max_window_bits={client_bits} is above the offer's")
    except (ExtensionHeaderError, _Refused) as error:
        raise HandshakeError(status, f"bad permessage-deflate answer: {error}") from None
    return DeflateParams(server_no_context_takeover=SERVER_NO_CONTEXT_TAKEOVER in answer,
                         client_no_context_takeover=(CLIENT_NO_CONTEXT_TAKEOVER in answer
                                                     or options.client_no_context_takeover),
                         server_max_window_bits=server_bits,
                         client_max_window_bits=client_bits)


# ---- compression (§7.2) -----------------------------------------------

def _compressor(window_bits: int, level: int, mem_level: int) -> zlib._Compress:
    """A raw-DEFLATE compressor for a window of 2**window_bits bytes (8 made 9, see above)."""
    return zlib.compressobj(level, zlib.DEFLATED,
                            -max(window_bits, ZLIB_MIN_COMPRESS_WINDOW_BITS), mem_level)


def _compress_message(compressor: zlib._Compress, payload: bytes) -> bytes:
    """One whole message through `compressor`, flushed, tail removed (§7.2.1)."""
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    # §7.2.1: "Remove 4 octets (that are 0x00 0x00 0xff 0xff) from the tail end."
    return data[:-len(EMPTY_BLOCK_TAIL)]


def compress_once(payload: bytes, window_bits: int = MAX_WINDOW_BITS, level: int = 6,
                  mem_level: int = 8) -> bytes:
    """One message compressed with a fresh window, tail removed (§7.2.1).

    Valid for every peer whose own window we agreed to reset
    (server_no_context_takeover) with at least `window_bits`: a broadcast
    compresses once for all of them.
    """
    return _compress_message(_compressor(window_bits, level, mem_level), payload)


class PerMessageDeflate:
    """The compression state of one connection, for the role `is_server` says.

    Compressors are made on first use, so an idle connection costs no zlib
    memory (a 15-bit compressor takes ~256 KiB, a decompressor ~40 KiB);
    without context takeover they are dropped after every message.
    """

    __slots__ = ("params", "options", "_send_reset", "_send_bits", "_receive_reset",
                 "_compressor", "_decompressor")

    def __init__(self, params: DeflateParams, *, is_server: bool,
                 options: DeflateOptions | None = None) -> None:
        self.params = params
        self.options = options or DeflateOptions()
        if is_server:
            self._send_reset = params.server_no_context_takeover
            self._send_bits = params.server_max_window_bits
            self._receive_reset = params.client_no_context_takeover
        else:
            self._send_reset = params.client_no_context_takeover
            self._send_bits = params.client_max_window_bits
            self._receive_reset = params.server_no_context_takeover
        self._compressor = None
        self._decompressor = None

    @property
    def shared_window_bits(self) -> int | None:
        """When our messages start from a fresh window: the window size, so one
        `compress_once` serves every such connection; else None."""
        return self._send_bits if self._send_reset else None

    def compress(self, payload: bytes) -> bytes:
        """A whole message's payload, compressed, tail removed (§7.2.1)."""
        compressor = self._compressor
        if compressor is None:
            compressor = _compressor(self._send_bits, self.options.level, self.options.mem_level)
            if not self._send_reset:
                self._compressor = compressor
        return _compress_message(compressor, payload)

    def decompress(self, data: bytes, limit: int) -> bytes:
        """Inflate one frame's payload of a compressed message, at most `limit` bytes.

        The bound is kept while inflating (zlib's max_length), not checked
        after: a small frame that would inflate past the message size limit
        costs `limit` bytes of memory, then 1009 (RFC 6455 §10.4).
        """
        decompressor = self._decompressor
        if decompressor is None:
            # Whatever window the peer uses (≤ 15 bits), a 15-bit inflater reads it.
            decompressor = self._decompressor = zlib.decompressobj(-MAX_WINDOW_BITS)
        try:
            out = decompressor.decompress(data, limit + 1)
        except zlib.error as error:
            raise ProtocolError(f"invalid compressed data: {error}") from None
        if len(out) > limit:
            raise MessageTooBig(f"compressed message inflates past the {limit}-byte budget left")
        return out

    def finish(self, limit: int) -> bytes:
        """The end of a compressed message: append the tail (§7.2.2), inflate what
        it releases, and reset the window if the peer does not keep it."""
        out = self.decompress(EMPTY_BLOCK_TAIL, limit)
        decompressor = self._decompressor
        # §7.2.3.4: a message may end the DEFLATE stream (BFINAL); the next
        # message then starts a new one.
        if self._receive_reset or decompressor.eof:
            self._decompressor = None
        return out
