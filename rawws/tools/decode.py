"""`python -m rawws.tools.decode`: WebSocket frames given as hex, annotated field by field.

    python -m rawws.tools.decode 81 85 37 fa 21 3d 7f 9f 4d 51 58
    echo 0x81:0x05:48:65:6c:6c:6f | python -m rawws.tools.decode

The hex comes from the arguments, or from stdin when there are none; white
space, `0x` prefixes, `:` and `,` between bytes are all accepted. Several
frames in a row are decoded one after another, as a receiver would read
them (a fragmented message's continuation frames are text if it is). Each
rule a frame breaks is named with the byte where it shows and the RFC
section; an incomplete frame says what is missing. Exit status: 0 when
every frame is whole and valid, 1 otherwise, 2 for input that is not hex.
"""
from __future__ import annotations

import argparse
import string
import sys

from .trace import (FrameAnnotator, IncompleteFrame, check_header, header_line, parse_header,
                    partial_header)

DEFAULT_HEX_LIMIT = 64       # payload bytes shown as hex: 4 lines
DEFAULT_TEXT_LIMIT = 1000    # payload bytes shown as text
_SEPARATORS = ":,;"
_HEX_DIGITS = frozenset(string.hexdigits)


def parse_hex(text: str) -> bytes:
    """Bytes from hex written loosely: `81 05`, `0x81 0x05`, `81:05`, `8105`.

    Raises ValueError naming the first character that is not a hex digit,
    or an odd count of digits.
    """
    for sep in _SEPARATORS:
        text = text.replace(sep, " ")
    digits = []
    for token in text.split():
        if token[:2] in ("0x", "0X"):
            token = token[2:]
        for ch in token:
            if ch not in _HEX_DIGITS:
                raise ValueError(f"not a hex digit: {ch!r} in {token!r}")
        digits.append(token)
    joined = "".join(digits)
    if len(joined) % 2:
        raise ValueError(f"an odd number of hex digits ({len(joined)}): each byte is two")
    return bytes.fromhex(joined)


def decode(data: bytes, *, sender: str | None = None, deflate: bool = False,
           hex_limit: int | None = DEFAULT_HEX_LIMIT,
           text_limit: int | None = DEFAULT_TEXT_LIMIT) -> tuple[list[str], bool]:
    """The annotation of every frame in `data`, and whether all were whole and valid."""
    annotator = FrameAnnotator(sender=sender, deflate=deflate, hex_limit=hex_limit,
                               text_limit=text_limit)
    lines: list[str] = []
    valid = True
    pos = 0
    number = 0
    while pos < len(data):
        number += 1
        try:
            header = parse_header(data, pos)
        except IncompleteFrame as error:
            lines.append(f"frame {number}: from byte {pos}, incomplete")
            partial = partial_header(data, pos)
            if partial is not None:   # what the header shows so far, and the rules it breaks
                lines.append("  " + header_line(partial))
                lines += [f"  {finding}" for finding in
                          check_header(partial, allow_rsv1=deflate, sender=sender)]
            lines.append(f"  error: {error}")
            return lines, False
        end = header.end
        if end > len(data):
            have = len(data) - pos - header.size
            start = pos + header.size
            lines += [f"frame {number}: from byte {pos}, incomplete",
                      "  " + header_line(header)]
            lines += [f"  {finding}" for finding in
                      check_header(header, allow_rsv1=deflate, sender=sender)]
            lines += [f"  error: incomplete: payload of {header.length} bytes at bytes "
                      f"{start}-{start + header.length - 1}, have {have} ({header.length - have} "
                      "missing)"]
            return lines, False
        payload = data[pos + header.size:end]
        annotation = annotator.annotate(header, payload) + annotator.finish(header)
        lines.append(f"frame {number}: bytes {pos}-{end - 1} ({end - pos} bytes)")
        lines += ["  " + line for line in annotation]
        pos = end
    valid = valid and annotator.errors == 0
    if number == 0:
        lines.append("no bytes to decode")
        valid = False
    return lines, valid


def _limit(text: str) -> int | None:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (no limit) or more")
    return value or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rawws.tools.decode",
                                     description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("hex", nargs="*", help="the bytes, in hex (default: read stdin)")
    parser.add_argument("--sender", choices=["client", "server"],
                        help="who sent the frames: checks the masking rule (RFC 6455 §5.1)")
    parser.add_argument("--deflate", action="store_true",
                        help="permessage-deflate was negotiated: RSV1 marks a compressed "
                             "message, which is inflated (RFC 7692)")
    parser.add_argument("--limit", type=_limit, default=DEFAULT_HEX_LIMIT, metavar="N",
                        help=f"payload bytes shown as hex; 0: all (default {DEFAULT_HEX_LIMIT})")
    parser.add_argument("--text-limit", type=_limit, default=DEFAULT_TEXT_LIMIT, metavar="N",
                        help=f"payload bytes shown as text; 0: all (default {DEFAULT_TEXT_LIMIT})")
    args = parser.parse_args(argv)
    text = " ".join(args.hex) if args.hex else sys.stdin.read()
    try:
        data = parse_hex(text)
    except ValueError as error:
        print(f"python -m rawws.tools.decode: {error}", file=sys.stderr)
        return 2
    lines, valid = decode(data, sender=args.sender, deflate=args.deflate,
                          hex_limit=args.limit, text_limit=args.text_limit)
    print("\n".join(lines))
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
