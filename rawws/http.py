"""Bounded, incremental HTTP/1.1 message heads, with no I/O (RFC 9112).

The WebSocket opening handshake is an HTTP/1.1 exchange, and the chat server
also serves its web page over the same port, so rawws needs a little HTTP:

* `RequestParser` takes bytes as they arrive from a socket and hands back one
  `Request` head at a time. Several pipelined requests in one buffer come out
  one by one; whatever follows the last head (the first WebSocket frames,
  after an upgrade) is available from `leftover()`.
* `parse_response_head()` reads the head of a response (the client's side of
  the handshake), and `find_head_end()` tells the client where it ends.
* `format_response()` writes a response head and body.

Only heads are parsed. Requests with a body are recognised (`Request.has_body`)
so that the server can refuse them and close the connection, but their body
is never read: nothing in rawws needs one.

Every limit is a parameter with a safe default, and every error is an
`HTTPError` carrying the status code to answer with:

    400  malformed request line, field line, version, Content-Length, Host
    414  request line longer than `max_line`
    431  header block longer than `max_header_bytes`, or more than
         `max_headers` field lines
    505  a well-formed HTTP version other than HTTP/1.0 and HTTP/1.1

No regular expressions are used: lines are found with `bytearray.find` and
checked with `bytes.translate`, which run in C and cannot backtrack.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

from .errors import HTTPError

# Reason phrases for the status codes Python knows (RFC 9110 §15).
STATUS_REASONS: dict[int, str] = {status.value: status.phrase for status in HTTPStatus}

_SP = 0x20
_HTAB = 0x09
_CR = 0x0D
_OWS = b" \t"  # optional white space, RFC 9110 §5.6.3

# tchar, RFC 9110 §5.6.2: the characters of a token, in header names,
# methods and the lists of Connection, Upgrade and Sec-WebSocket-Extensions.
# A token is valid when deleting every tchar from it leaves nothing:
# `bytes.translate(None, delete)` does that in C.
TOKEN_CHARS = (
    b"!#$%&'*+-.^_`|~0123456789"
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
# field-vchar / obs-text plus SP and HTAB, RFC 9110 §5.5: everything
# but the control characters (NUL, CR, LF among them) and DEL.
_FIELD_VALUE_CHARS = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
# A request-target is ASCII without white space or controls (RFC 3986).
_TARGET_CHARS = bytes(range(0x21, 0x7F))
_DIGITS = b"0123456789"


def _is_token(data: bytes) -> bool:
    """Whether `data` is a token: one or more tchars."""
    return bool(data) and not data.translate(None, TOKEN_CHARS)


def _only(data: bytes, allowed: bytes) -> bool:
    """Whether every byte of `data` is one of `allowed`."""
    return not data.translate(None, allowed)


# ---- headers ----------------------------------------------------------

class Headers:
    """An ordered multi-dict of header fields with case-insensitive names.

    Field names keep the case they arrived in (`items()` shows it), but every
    lookup ignores case, as RFC 9110 §5.1 requires.
    """

    __slots__ = ("_items", "_index")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        self._index: dict[str, list[str]] = {}
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        """Append one field line."""
        self._items.append((name, value))
        self._index.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of `name`, or `default` when it is absent."""
        values = self._index.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`, in the order received."""
        return list(self._index.get(name.lower(), ()))

    def get_tokens(self, name: str) -> list[str]:
        """The comma-separated list held in every `name` field, as tokens.

        Each element is stripped of white space and lower-cased; empty
        elements are dropped (RFC 9110 §5.6.1 lets senders write
        `a, , b`). Commas inside quoted strings are not special-cased: the
        lists this is used for (Connection, Upgrade, Sec-WebSocket-Protocol)
        hold plain tokens.
        """
        tokens = []
        for value in self._index.get(name.lower(), ()):
            for element in value.split(","):
                element = element.strip(" \t").lower()
                if element:
                    tokens.append(element)
        return tokens

    def items(self) -> list[tuple[str, str]]:
        """Every field line as `(name, value)`, in the order received."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


# ---- messages ---------------------------------------------------------

def content_length(headers: Headers) -> int | None:
    """The message's Content-Length, None when absent; ValueError if invalid.

    RFC 9112 §6.3 (5): a list of identical values (`5, 5`, or the
    field repeated) may be treated as that one value; anything else that is
    not a run of digits is unrecoverable.
    """
    values = headers.get_all("Content-Length")
    if not values:
        return None
    lengths = set()
    for value in values:
        for element in value.split(","):
            element = element.strip(" \t")
            # 18 digits is far beyond any body and keeps int() cheap.
            if not element or len(element) > 18 or not _only(element.encode(), _DIGITS):
                raise ValueError(f"invalid Content-Length {value!r}")
            lengths.add(int(element))
    if len(lengths) != 1:
        raise ValueError("conflicting Content-Length values")
    return lengths.pop()


@dataclass
class Request:
    """The head of an HTTP request: request line and header fields."""

    method: str
    target: str
    version: str
    headers: Headers
    # How the request came: "https" over TLS. The target URI's scheme is the
    # connection's (RFC 9112 §3.3), so the server's own origin is too (RFC 6454 §4).
    scheme: str = "http"

    @property
    def has_body(self) -> bool:
        """True when a body follows the head (RFC 9112 §6.3).

        That is, when the request carries Transfer-Encoding or a non-zero
        Content-Length. rawws never reads request bodies: the server answers
        such a request and closes the connection. An invalid Content-Length
        counts as a body, so that it is refused too.
        """
        if "Transfer-Encoding" in self.headers:
            return True
        try:
            length = content_length(self.headers)
        except ValueError:
            return True
        return bool(length)

    @property
    def keep_alive(self) -> bool:
        """Whether the client wants the connection kept open (RFC 9112 §9.3).

        `Connection: close` always ends it; HTTP/1.1 persists by default,
        HTTP/1.0 only with `Connection: keep-alive`.
        """
        options = self.headers.get_tokens("Connection")
        if "close" in options:
            return False
        if self.version == "HTTP/1.1":
            return True
        return "keep-alive" in options


@dataclass
class Response:
    """The head of an HTTP response: status line and header fields."""

    status: int
    reason: str
    version: str
    headers: Headers


# ---- parsing ----------------------------------------------------------

def _parse_version(data: bytes, status: int) -> str:
    """Check `HTTP/DIGIT.DIGIT` (RFC 9112 §2.3); HTTPError(status) if not."""
    if (len(data) != 8 or not data.startswith(b"HTTP/") or data[5] not in _DIGITS
            or data[6] != 0x2E or data[7] not in _DIGITS):   # 0x2E: "."
        raise HTTPError(status, f"malformed HTTP version {data[:20]!r}")
    return data.decode("ascii")


def _parse_field_line(line: bytes, status: int) -> tuple[str, str]:
    """Split one field line into (name, value); HTTPError(status) if malformed.

    RFC 9112 §5: `field-name ":" OWS field-value OWS`.
    """
    if line[0] in (_SP, _HTAB):
        # RFC 9112 §5.2: a server MUST reject obs-fold (a line
        # continued by leading white space) with 400. The same test catches
        # white space between the start line and the first field, which
        # §2.2 also lets us reject.
        raise HTTPError(status, "obsolete line folding is not accepted")
    colon = line.find(b":")
    if colon == -1:
        raise HTTPError(status, "header line without a colon")
    name = line[:colon]
    if name[-1:] in (b" ", b"\t"):
        # RFC 9112 §5.1: a server MUST reject, with 400, white space
        # between a field name and the colon (request smuggling vector).
        raise HTTPError(status, "white space before the colon of a header field")
    if not _is_token(name):
        raise HTTPError(status, f"invalid header name {name[:40]!r}")
    value = line[colon + 1:].strip(_OWS)
    if not _only(value, _FIELD_VALUE_CHARS):
        # RFC 9110 §5.5: CR, LF and NUL (and other controls) in a
        # field value are invalid; we reject rather than rewrite.
        raise HTTPError(status, f"invalid character in header field {name.decode('ascii')}")
    return name.decode("ascii"), value.decode("latin-1")


class RequestParser:
    """Incremental parser for a stream of request heads on one connection.

    Feed it bytes with `feed()`; `next_request()` returns the next complete
    head or None when more bytes are needed. Limits (RFC 9112 §2.3
    leaves them to the server):

    * `max_line`: longest request line, without its line ending (414).
    * `max_header_bytes`: longest header block, counting each field line
      with its line ending, not the final empty line (431).
    * `max_headers`: most field lines (431).
    * `require_host`: refuse an HTTP/1.1 request without Host (400).

    ``scheme`` ("http" or "https") is the connection's, given to each Request.

    The buffer is a bytearray searched from where the last search stopped,
    so feeding a head one byte at a time costs O(n), not O(n^2). Once a
    request with a body has been returned, or an error raised, the parser is
    finished: later `next_request()` calls return None (after a body) or raise
    the same error again, and bytes fed afterwards are dropped.

    After an Upgrade request is accepted, stop calling `next_request()`: the
    bytes that follow are WebSocket frames, available from `leftover()`.
    """

    def __init__(self, *, max_line: int = 8192, max_header_bytes: int = 8192 * 2,
                 max_headers: int = 1000, require_host: bool = True,
                 scheme: str = "http") -> None:
        self.scheme = scheme
        self.max_line = max_line
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.require_host = require_host
        self._buf = bytearray()
        self._scan = 0  # where the next search for a line feed starts
        self._line_start = 0  # where the line being read starts
        self._blank_bytes = 0  # empty lines skipped before the request line
        self._request_line: tuple[str, str, str] | None = None
        self._fields: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._error: HTTPError | None = None
        self._finished = False  # a request with a body was returned

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer."""
        if self._error is None and not self._finished:
            self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes held: the head being read, and what came after the last one."""
        return len(self._buf)

    def leftover(self) -> bytes:
        """The bytes received after the last head returned (not cleared)."""
        return bytes(self._buf)

    def next_request(self) -> Request | None:
        """The next complete request head, or None if more bytes are needed.

        Raises HTTPError (400, 414, 431, 505) when the stream is malformed or
        over a limit; the connection cannot be used for HTTP after that.
        """
        if self._error is not None:
            raise self._error
        if self._finished:
            return None
        try:
            return self._next_request()
        except HTTPError as error:
            self._error = error
            self._buf.clear()
            raise

    def _next_request(self) -> Request | None:
        buf = self._buf
        while True:
            newline = buf.find(b"\n", self._scan)
            if newline == -1:
                self._scan = len(buf)
                self._check_partial_line()
                return None
            start = self._line_start
            line = bytes(buf[start:newline])  # copies one line, not the buffer
            self._scan = self._line_start = newline + 1
            # RFC 9112 §2.2: a recipient MAY recognise a bare LF as a
            # line terminator and ignore any preceding CR.
            if line.endswith(b"\r"):
                line = line[:-1]
            if b"\r" in line:
                # §2.2: a bare CR MUST be treated as invalid (or
                # replaced by SP); we refuse it.
                raise HTTPError(400, "bare CR in request head")
            if self._request_line is None:
                if not line:
                    # §2.2: a server SHOULD ignore at least one empty
                    # line received before the request line. We ignore a
                    # bounded amount of them.
                    self._blank_bytes += newline + 1 - start
                    if self._blank_bytes > self.max_line:
                        raise HTTPError(400, "too many empty lines before the request line")
                    continue
                if len(line) > self.max_line:
                    raise HTTPError(414, "request line too long")
                self._request_line = self._parse_request_line(line)
            elif line:
                self._header_bytes += newline + 1 - start
                if self._header_bytes > self.max_header_bytes:
                    raise HTTPError(431, "header block too large")
                if len(self._fields) >= self.max_headers:
                    raise HTTPError(431, "too many header fields")
                self._fields.append(_parse_field_line(line, 400))
            else:
                return self._finish_head()

    def _check_partial_line(self) -> None:
        """Enforce the limits on a line whose end has not arrived yet.

        Without this, a peer that never sends a line feed would make the
        buffer grow without bound.
        """
        pending = len(self._buf) - self._line_start
        if pending and self._buf[-1] == _CR:
            pending -= 1  # a CR that may be the start of CRLF
        if self._request_line is None:
            if pending > self.max_line:
                raise HTTPError(414, "request line too long")
        elif pending:
            # A field line: with its line feed it will take pending + 1 bytes.
            if self._header_bytes + pending + 1 > self.max_header_bytes:
                raise HTTPError(431, "header block too large")

    @staticmethod
    def _parse_request_line(line: bytes) -> tuple[str, str, str]:
        """RFC 9112 §3: `method SP request-target SP HTTP-version`."""
        parts = line.split(b" ")
        if len(parts) != 3:
            raise HTTPError(400, "malformed request line")
        method, target, version = parts
        # §2.3: the version is checked first so that a client speaking
        # a version we do not know hears 505, whatever else is in the line.
        version_text = _parse_version(version, 400)
        if version_text not in ("HTTP/1.0", "HTTP/1.1"):
            raise HTTPError(505, f"HTTP version {version_text} not supported")
        if not _is_token(method):
            raise HTTPError(400, "malformed request method")
        if not target or not _only(target, _TARGET_CHARS):
            raise HTTPError(400, "malformed request target")
        return method.decode("ascii"), target.decode("ascii"), version_text

    def _finish_head(self) -> Request:
        assert self._request_line is not None
        method, target, version = self._request_line
        request = Request(method, target, version, Headers(self._fields), self.scheme)
        self._check_request(request)
        # Forget the head: deleting from the front of a bytearray is cheap in
        # CPython (it moves a start pointer), and resets the scan positions.
        del self._buf[:self._line_start]
        self._scan = self._line_start = 0
        self._blank_bytes = 0
        self._request_line = None
        self._fields = []
        self._header_bytes = 0
        if request.has_body:
            # The bytes that follow are a body we will not read, so nothing
            # after it can be parsed as a request either.
            self._finished = True
        return request

    def _check_request(self, request: Request) -> None:
        headers = request.headers
        hosts = headers.get_all("Host")
        # RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1
        # request without Host, and to any request with more than one.
        if len(hosts) > 1:
            raise HTTPError(400, "more than one Host header")
        if self.require_host and not hosts and request.version == "HTTP/1.1":
            raise HTTPError(400, "missing Host header")
        # RFC 9112 §6.3 (5): an invalid Content-Length is an
        # unrecoverable framing error, answered with 400.
        try:
            content_length(headers)
        except ValueError as error:
            raise HTTPError(400, str(error)) from None
        # RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message
        # MUST be treated as faulty framing.
        if "Transfer-Encoding" in headers and request.version == "HTTP/1.0":
            raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")


def find_head_end(data: bytes | bytearray, start: int = 0) -> int:
    """The index just past the empty line ending a message head, or -1.

    The head ends at the first line feed followed by an empty line (CRLF or
    bare LF, RFC 9112 §2.2). To search a growing buffer without
    rescanning it, pass as `start` the buffer's previous length minus 3.
    """
    size = len(data)
    newline = data.find(b"\n", max(start, 0))
    while newline != -1:
        after = newline + 1
        if after < size and data[after] == _CR:
            after += 1
        if after < size and data[after] == 0x0A:
            return after + 1
        newline = data.find(b"\n", newline + 1)
    return -1


def parse_response_head(data: bytes, *, max_headers: int = 100) -> Response:
    """Parse a complete response head (status line, fields, empty line).

    `data` is the head alone, as delimited by `find_head_end()`; its final
    empty line may be left off. Bytes after the head are an error, so that
    none (the first WebSocket frames, say) are silently dropped. A malformed
    head raises HTTPError(502), the code for "an invalid response".
    """
    end = find_head_end(data)
    if end != -1 and end != len(data):
        raise HTTPError(502, "bytes after the response head")
    lines = bytes(data).split(b"\n")
    while lines and lines[-1] in (b"", b"\r"):
        lines.pop()  # the final empty line, and what follows its LF
    if not lines:
        raise HTTPError(502, "empty response head")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    for line in lines:
        if not line or b"\r" in line:
            raise HTTPError(502, "malformed line in response head")
    # RFC 9112 §4: HTTP-version SP status-code SP [ reason-phrase ].
    # §4 also tells clients to ignore the reason phrase, so a status
    # line without the SP before an empty reason is accepted.
    status_line = lines[0]
    version = _parse_version(status_line[:8], 502)
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HTTPError(502, f"unexpected HTTP version {version}")
    code = status_line[9:12]
    # A status code is three digits, 100-999: its first is not "0" (0x30).
    if (status_line[8:9] != b" " or len(code) != 3 or not _only(code, _DIGITS)
            or code[0] == 0x30 or status_line[12:13] not in (b"", b" ")):
        raise HTTPError(502, "malformed status line")
    reason = status_line[13:]
    if not _only(reason, _FIELD_VALUE_CHARS):
        raise HTTPError(502, "invalid character in reason phrase")
    if len(lines) - 1 > max_headers:
        raise HTTPError(502, "too many header fields")
    headers = Headers(_parse_field_line(line, 502) for line in lines[1:])
    return Response(int(code), reason.decode("latin-1"), version, headers)


# ---- formatting -------------------------------------------------------

def format_response(status: int, headers: list[tuple[str, str]], body: bytes = b"", *,
                    reason: str | None = None) -> bytes:
    """The bytes of an HTTP/1.1 response: status line, fields, empty line, body.

    `reason` defaults to the standard phrase for `status` (empty if none).
    When `headers` has no Content-Length, one giving `len(body)` is added,
    except for 1xx, 204 and 304 responses, which must not carry one (RFC 9110
    §8.6 and §15.4.5). Pass Content-Length yourself for a response to
    HEAD, whose body is empty. Names must be tokens and values must not hold
    control characters (no header injection): ValueError otherwise.
    """
    if not 100 <= status <= 999:
        raise ValueError(f"status code out of range: {status}")
    if reason is None:
        reason = STATUS_REASONS.get(status, "")
    reason_bytes = reason.encode("latin-1")
    if not _only(reason_bytes, _FIELD_VALUE_CHARS):
        raise ValueError(f"invalid reason phrase {reason!r}")
    lines = [b"HTTP/1.1 %d %s" % (status, reason_bytes)]
    has_length = False
    for name, value in headers:
        name_bytes = name.encode("latin-1")
        value_bytes = value.encode("latin-1")
        if not _is_token(name_bytes):
            raise ValueError(f"invalid header name {name!r}")
        if not _only(value_bytes, _FIELD_VALUE_CHARS):
            raise ValueError(f"invalid header value for {name}: {value!r}")
        has_length = has_length or name.lower() == "content-length"
        lines.append(name_bytes + b": " + value_bytes)
    if not has_length and status >= 200 and status not in (204, 304):
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"")
    lines.append(b"")
    return b"\r\n".join(lines) + body
