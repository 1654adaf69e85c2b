"""Incremental, fail-fast UTF-8 decoding of text messages (RFC 6455 §5.6, §8.1).

A text message may arrive in many frames, and a multi-byte character may be
split between them. §8.1 says an endpoint that receives invalid UTF-8 must
fail the connection; failing *fast* means doing so as soon as the bytes that
make the text invalid arrive, not when the message ends.
"""
from __future__ import annotations

import codecs

from .errors import InvalidPayload

_SURROGATE_LEAD = 0xED        # ED A0..BF would encode U+D800..U+DFFF (RFC 3629 §3)
_SURROGATE_SECOND_MIN = 0xA0


class Utf8Decoder:
    """Decodes a text message piece by piece, raising InvalidPayload (1007) early.

    CPython's incremental UTF-8 decoder already rejects every invalid byte the
    moment it arrives, with one exception: it keeps `ED A0`..`ED BF` pending
    until the third byte, though no third byte can make them valid (they start
    a UTF-16 surrogate). The check after each piece closes that gap.
    """

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")

    def decode(self, data: bytes, final: bool = False) -> str:
        """Decode the next piece; `final` when it ends the message."""
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as error:
            raise InvalidPayload(f"invalid UTF-8 in text: {error.reason}") from None
        if not final:
            pending = self._decoder.getstate()[0]
            if (len(pending) >= 2 and pending[0] == _SURROGATE_LEAD
                    and pending[1] >= _SURROGATE_SECOND_MIN):
                raise InvalidPayload("invalid UTF-8 in text: encoded surrogate")
        return text
