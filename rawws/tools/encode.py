"""`python -m rawws.tools.encode`: one WebSocket frame built from a payload, printed as hex.

    python -m rawws.tools.encode Hello                    # 81 05 48 65 6c 6c 6f
    python -m rawws.tools.encode --key 37fa213d Hello     # the RFC's masked example
    python -m rawws.tools.encode --mask Hello             # masked with a random key
    python -m rawws.tools.encode --binary 'de ad be ef'   # a binary payload, in hex
    python -m rawws.tools.encode --close 1000 bye         # a Close frame with a reason

The reverse of `python -m rawws.tools.decode`: the frame's bytes on the first
line, then their annotation, so the two can be read side by side (`-q`
prints the hex alone, to pipe into the decoder). Nothing is refused: a
frame that breaks a rule (`--opcode 3`, a 200-byte ping) is built anyway,
and its annotation names the rule, which is the point of building it.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..deflate import compress_once
from .decode import DEFAULT_HEX_LIMIT, DEFAULT_TEXT_LIMIT, decode, parse_hex
from ..frames import MASK_KEY_SIZE, OP_BINARY, OP_CLOSE, OP_TEXT, encode_frame
from .trace import OPCODE_NAMES

OPCODES_BY_NAME = {name.lower(): opcode for opcode, name in OPCODE_NAMES.items()}


def parse_opcode(text: str) -> int:
    """An opcode by name (text, ping...) or number (0x9, 9), reserved ones included."""
    name = text.lower()
    if name in OPCODES_BY_NAME:
        return OPCODES_BY_NAME[name]
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an opcode: {text!r} (a name: {', '.join(OPCODES_BY_NAME)}; or 0-15)") from None
    if not 0 <= value <= 0xF:
        raise argparse.ArgumentTypeError(f"an opcode is 4 bits, 0-15, not {value}")
    return value


def parse_key(text: str) -> bytes:
    """A masking key as 8 hex digits: `37fa213d`, `37:fa:21:3d`..."""
    try:
        key = parse_hex(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if len(key) != MASK_KEY_SIZE:
        raise argparse.ArgumentTypeError(f"a masking key is 4 bytes, not {len(key)}")
    return key


def build_frame(payload: bytes, *, opcode: int = OP_TEXT, fin: bool = True,
                mask_key: bytes | None = None, rsv1: bool = False, rsv2: bool = False,
                rsv3: bool = False, deflate: bool = False) -> bytes:
    """The frame's bytes; with `deflate`, the payload compressed as one
    permessage-deflate message and RSV1 set (RFC 7692 §6)."""
    if deflate:
        payload = compress_once(payload)
        rsv1 = True
    return encode_frame(opcode, payload, fin=fin, mask_key=mask_key, rsv1=rsv1, rsv2=rsv2,
                        rsv3=rsv3)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rawws.tools.encode",
                                description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("payload", nargs="?", default="",
                   help="the payload: text, or hex with --binary; '-' reads stdin "
                        "(default: empty)")
    p.add_argument("--binary", action="store_true",
                   help="the payload is hex bytes; the opcode is BINARY unless --opcode says")
    p.add_argument("--opcode", type=parse_opcode, metavar="OP",
                   help="text, binary, continuation, close, ping, pong, or a number 0-15")
    p.add_argument("--close", type=int, metavar="CODE",
                   help="a Close frame: the payload is CODE (2 bytes) then the text as reason")
    p.add_argument("--mask", action="store_true",
                   help="mask the payload with a random key, as a client must (RFC 6455 §5.3)")
    p.add_argument("--key", type=parse_key, metavar="KEYHEX",
                   help="mask the payload with this 4-byte key, in hex")
    p.add_argument("--no-fin", action="store_true",
                   help="FIN=0: more frames of this message follow (§5.4)")
    p.add_argument("--deflate", action="store_true",
                   help="compress the payload as permessage-deflate does, and set RSV1 "
                        "(RFC 7692)")
    for bit in ("rsv1", "rsv2", "rsv3"):
        p.add_argument(f"--{bit}", action="store_true", help=f"set {bit.upper()}")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the hex")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    text = sys.stdin.read() if args.payload == "-" else args.payload
    if args.binary:
        try:
            payload = parse_hex(text)
        except ValueError as error:
            print(f"python -m rawws.tools.encode: --binary payload: {error}", file=sys.stderr)
            return 2
    else:
        payload = text.encode("utf-8")
    opcode = args.opcode
    if args.close is not None:
        if not 0 <= args.close <= 0xFFFF:
            print("python -m rawws.tools.encode: a close code is 2 bytes, 0-65535", file=sys.stderr)
            return 2
        payload = args.close.to_bytes(2, "big") + payload   # §5.5.1: the code, then the reason
        opcode = OP_CLOSE if opcode is None else opcode
    if opcode is None:
        opcode = OP_BINARY if args.binary else OP_TEXT
    key = args.key
    if key is None and args.mask:
        key = os.urandom(MASK_KEY_SIZE)   # §5.3: unpredictable, as a client's must be
    frame = build_frame(payload, opcode=opcode, fin=not args.no_fin, mask_key=key,
                        rsv1=args.rsv1, rsv2=args.rsv2, rsv3=args.rsv3, deflate=args.deflate)
    print(frame.hex(" "))
    if not args.quiet:
        lines, _ = decode(frame, deflate=args.deflate or args.rsv1,
                          hex_limit=DEFAULT_HEX_LIMIT, text_limit=DEFAULT_TEXT_LIMIT)
        print("\n".join(lines[1:]))   # not "frame 1: bytes ...": there is one frame
    return 0


if __name__ == "__main__":
    sys.exit(main())
