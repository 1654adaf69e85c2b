"""The Sec-WebSocket-Extensions header (RFC 6455 §9.1), parsed and written.

    Sec-WebSocket-Extensions = extension-list
    extension-list = 1#extension
    extension      = extension-token *( ";" extension-param )
    extension-param = token [ "=" (token | quoted-string) ]

A client lists its offers in order of preference; the same extension may be
offered several times with different parameters (RFC 7692 §5). A quoted value
must unquote to a token (§9.1). This module knows the grammar only; what an
extension's parameters mean is the extension's business (`rawws.deflate`).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .http import TOKEN_CHARS

# RFC 9110 §5.6.2: tchar, as a set of characters to look a str's up in.
_TOKEN_CHARS = frozenset(TOKEN_CHARS.decode("ascii"))
_WHITESPACE = " \t"


class ExtensionHeaderError(ValueError):
    """A Sec-WebSocket-Extensions value that does not follow the §9.1 grammar."""


@dataclass(frozen=True, slots=True)
class Extension:
    """One element of the list: a name and its parameters, in order.

    A parameter without a value has value None (`server_no_context_takeover`).
    """

    name: str
    params: tuple[tuple[str, str | None], ...] = ()

    def __str__(self) -> str:
        return format_extension(self)


def is_token(text: str) -> bool:
    return bool(text) and all(char in _TOKEN_CHARS for char in text)


class _Scanner:
    """Reads one header value left to right: tokens, quoted strings, separators."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self, char: str) -> bool:
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def token(self, what: str) -> str:
        self.skip_space()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TOKEN_CHARS:
            self.pos += 1
        if self.pos == start:
            raise ExtensionHeaderError(f"expected {what} at character {start + 1} of {self.text!r}")
        return self.text[start:self.pos]

    def quoted(self) -> str:
        """A quoted-string (RFC 9110 §5.6.4), the quotes at `pos` and after it removed."""
        self.pos += 1   # the opening quote
        chars = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == '"':
                return "".join(chars)
            if char == "\\":
                if self.pos == len(self.text):
                    break
                char = self.text[self.pos]
                self.pos += 1
            chars.append(char)
        raise ExtensionHeaderError(f"unterminated quoted string in {self.text!r}")


def parse_extensions(values: Iterable[str]) -> list[Extension]:
    """Every extension offered or accepted, in order, from all the header's values.

    Empty list elements are skipped (RFC 9110 §5.6.1); anything else that
    breaks the grammar raises ExtensionHeaderError.
    """
    extensions = []
    for value in values:
        scanner = _Scanner(value)
        while True:
            if scanner.take(","):
                continue           # an empty element
            if not scanner.peek():
                break
            extensions.append(_parse_one(scanner))
            if not scanner.peek():
                break
            if not scanner.take(","):
                raise ExtensionHeaderError(
                    f"expected ',' or ';' at character {scanner.pos + 1} of {value!r}")
    return extensions


def _parse_one(scanner: _Scanner) -> Extension:
    name = scanner.token("an extension name")
    params = []
    while scanner.take(";"):
        param = scanner.token("a parameter name")
        value = None
        if scanner.take("="):
            if scanner.peek() == '"':
                value = scanner.quoted()
                if not is_token(value):
                    # §9.1: "the value after quoted-string unescaping MUST conform to the 'token' ABNF".
                    raise ExtensionHeaderError(f"quoted value {value!r} of {param} is not a token")
            else:
                value = scanner.token(f"a value for {param}")
        params.append((param, value))
    return Extension(name, tuple(params))


def format_extension(extension: Extension) -> str:
    """One element as it is written in the header: `name; param; param=value`."""
    parts = [extension.name]
    for param, value in extension.params:
        parts.append(param if value is None else f"{param}={value}")
    return "; ".join(parts)
