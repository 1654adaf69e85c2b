"""The static file server: a request head in, a response out (RFC 9110).

`StaticFiles(root).respond(request)` returns `(status, headers, body)`; the
caller formats it with `rawws.http.format_response` and writes it. The only
I/O here is reading files under the web root.

Safety comes first, because a file server's classic bug is serving a file
outside its root (Beej's demo guards it with a string prefix test). A request
path goes through two independent guards:

1. The path is split on `/` *before* percent-decoding, and each decoded
   segment is refused if it is empty (`//`), `.` or `..`, or contains a
   slash (`%2f`), a backslash or a NUL. So no segment can climb, whatever
   its spelling (`..`, `%2e%2e`, `%2E%2E`, `..%2f`).
2. The file's path is resolved with `os.path.realpath` (which follows every
   symlink) and must lie inside the resolved root. This also refuses a
   symlink inside the root that points outside it; one pointing inside is
   served.

Refused and missing paths both answer 404, so a client cannot probe which
files exist outside the root. A malformed target (not origin-form, bad
percent-encoding, not UTF-8) is 400. Only regular files are served, opened
non-blocking so a FIFO cannot stall the server; files larger than
`max_file_size` (64 MiB by default) answer 500, since the web root is meant
to hold small files that are read whole.
"""
from __future__ import annotations

import email.utils
import mimetypes
import os
import stat
from datetime import timezone
from pathlib import Path

from ..http import STATUS_REASONS, Request

StaticResponse = tuple[int, list[tuple[str, str]], bytes]

ALLOWED_METHODS = ("GET", "HEAD")
INDEX_FILE = "index.html"
DEFAULT_MAX_FILE_SIZE = 64 * 1024 * 1024

# A private table built from Python's own defaults, so the answer does not
# depend on the machine's /etc/mime.types; then the few types that matter
# for a web page, as browsers expect them today (RFC 9239: JavaScript is
# text/javascript).
_MIME = mimetypes.MimeTypes()
for _type, _ext in (
    ("text/javascript", ".js"),
    ("text/javascript", ".mjs"),
    ("text/css", ".css"),
    ("text/html", ".html"),
    ("text/html", ".htm"),
    ("application/json", ".json"),
    ("application/json", ".map"),
    ("image/svg+xml", ".svg"),
    ("image/x-icon", ".ico"),
    ("image/webp", ".webp"),
    ("font/woff", ".woff"),
    ("font/woff2", ".woff2"),
    ("application/wasm", ".wasm"),
):
    _MIME.add_type(_type, _ext)

_HEX = "0123456789abcdefABCDEF"

# Do not follow a final symlink (realpath resolved them all: one there now
# appeared since), and do not block opening a FIFO. POSIX flags, absent on
# Windows. Python opens file descriptors close-on-exec already.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


class _BadTarget(Exception):
    """The request target is malformed: 400."""


class _Refused(Exception):
    """The path names nothing we may serve: 404."""


def content_type(filename: str) -> str:
    """The Content-Type to serve `filename` with (text types are UTF-8)."""
    mime, encoding = _MIME.guess_type(filename, strict=False)
    if mime is None or encoding is not None:
        # Unknown, or compressed (foo.tar.gz): bytes, and let the client decide.
        return "application/octet-stream"
    if mime.startswith("text/"):
        return mime + "; charset=utf-8"
    return mime


def _percent_decode(segment: str) -> bytes:
    """Decode %XX escapes in one path segment; _BadTarget on a broken escape."""
    if "%" not in segment:
        return segment.encode("ascii")
    out = bytearray()
    pos = 0
    while True:
        percent = segment.find("%", pos)
        if percent == -1:
            out += segment[pos:].encode("ascii")
            return bytes(out)
        out += segment[pos:percent].encode("ascii")
        digits = segment[percent + 1:percent + 3]
        if len(digits) != 2 or digits[0] not in _HEX or digits[1] not in _HEX:
            raise _BadTarget("bad percent-encoding")
        out.append(int(digits, 16))
        pos = percent + 3


def _path_segments(target: str) -> list[str]:
    """The decoded, checked segments of an origin-form target's path.

    A trailing slash gives a final empty segment, which means "the directory".
    """
    # RFC 9112 §3.2.2: a server must accept absolute-form
    # ("http://host/path") too; its path is what names the file.
    for scheme in ("http://", "https://"):
        if target[:len(scheme)].lower() == scheme:
            slash = target.find("/", len(scheme))
            target = target[slash:] if slash != -1 else "/"
            break
    # RFC 9112 §3.2.1: origin-form is an absolute path and an optional
    # query. Authority-form (CONNECT's) and "*" (OPTIONS') name no file.
    if not target.startswith("/") or not target.isascii() or not target.isprintable():
        raise _BadTarget("not an origin-form target")
    path = target
    for mark in ("?", "#"):  # query and (never sent, but still) fragment
        cut = path.find(mark)
        if cut != -1:
            path = path[:cut]
    raw_segments = path[1:].split("/")
    segments = []
    for index, raw in enumerate(raw_segments):
        try:
            segment = _percent_decode(raw).decode("utf-8")
        except UnicodeError:
            raise _BadTarget("path is not UTF-8") from None
        last = index == len(raw_segments) - 1
        if segment == "" and not last:
            raise _Refused("empty path segment")  # "//etc/passwd"
        if segment in (".", ".."):
            raise _Refused("dot segment")
        if "/" in segment or "\\" in segment or "\x00" in segment:
            raise _Refused("slash, backslash or NUL in a segment")
        segments.append(segment)
    return segments


def _http_date(timestamp: float) -> str:
    """IMF-fixdate, RFC 9110 §5.6.7: `Sun, 06 Nov 1994 08:49:37 GMT`."""
    return email.utils.formatdate(timestamp, usegmt=True)


def _parse_http_date(value: str) -> float | None:
    """A timestamp from an HTTP-date, or None if it is not one."""
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):   # e.g. a year of 20 digits
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: `*`, or a list compared weakly (W/ ignored)."""
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        if candidate.strip(" \t").removeprefix("W/") == opaque:
            return True
    return False


class StaticFiles:
    """Serve the files under `root`, read-only, GET and HEAD only."""

    def __init__(self, root: str | Path, *, max_file_size: int = DEFAULT_MAX_FILE_SIZE) -> None:
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise NotADirectoryError(f"web root is not a directory: {root}")
        self.max_file_size = max_file_size
        self._prefix = self.root if self.root.endswith(os.sep) else self.root + os.sep

    def respond(self, request: Request) -> StaticResponse:
        """The (status, headers, body) answering `request`.

        For HEAD the body is empty and Content-Length is the GET body's.
        """
        head = request.method == "HEAD"
        if request.method not in ALLOWED_METHODS:
            # RFC 9110 §15.5.6: a 405 MUST carry Allow.
            return self._error(405, head, [("Allow", ", ".join(ALLOWED_METHODS))])
        try:
            segments = _path_segments(request.target)
        except _BadTarget:
            return self._error(400, head)
        except _Refused:
            return self._error(404, head)

        path = self._resolve(os.path.join(self.root, *segments))
        if path is not None and os.path.isdir(path):
            # "/" and every directory serve their index.html; a directory
            # without one is 404: directories are never listed.
            path = self._resolve(os.path.join(path, INDEX_FILE))
        elif segments[-1] == "":
            path = None  # "/file.txt/": a trailing slash names a directory
        if path is None:
            return self._error(404, head)
        try:
            data, status = self._read(path)
        except PermissionError:
            return self._error(403, head)
        except OSError:
            return self._error(404, head)
        if data is None:
            return self._error(500, head)

        etag = f'"{status.st_mtime_ns:x}-{status.st_size:x}"'
        validators = [
            ("ETag", etag),
            ("Last-Modified", _http_date(status.st_mtime)),
            ("Cache-Control", "no-cache"),
        ]
        if self._not_modified(request, etag, status.st_mtime):
            # RFC 9110 §15.4.5: a 304 repeats the validators and
            # Cache-Control a 200 would have sent, and has no body.
            return 304, validators, b""
        headers = [
            ("Content-Type", content_type(path)),
            ("Content-Length", str(len(data))),
            *validators,
            ("X-Content-Type-Options", "nosniff"),
        ]
        return 200, headers, b"" if head else data

    def _resolve(self, path: str) -> str | None:
        """`path` with every symlink resolved, or None if it leaves the root."""
        real = os.path.realpath(path)
        if real == self.root or real.startswith(self._prefix):
            return real
        return None

    def _read(self, path: str) -> tuple[bytes | None, os.stat_result]:
        """The file's bytes (None if over the size cap) and its stat.

        Opened without following a final symlink (realpath already resolved
        them) and non-blocking, then checked with fstat, so what is read is
        the regular file that was checked.
        """
        fd = os.open(path, _OPEN_FLAGS)
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                raise IsADirectoryError(path)  # or a FIFO, socket, device: 404
            if status.st_size > self.max_file_size:
                return None, status
            with os.fdopen(fd, "rb", closefd=False) as file:
                data = file.read(self.max_file_size + 1)
        finally:
            os.close(fd)
        if len(data) > self.max_file_size:  # it grew since fstat
            return None, status
        return data, status

    @staticmethod
    def _not_modified(request: Request, etag: str, mtime: float) -> bool:
        """Evaluate If-None-Match, else If-Modified-Since (RFC 9110 §13.2.2)."""
        headers = request.headers
        if_none_match = headers.get_all("If-None-Match")
        if if_none_match:
            # When If-None-Match is present, If-Modified-Since is ignored
            # (§13.1.3).
            return _etag_matches(", ".join(if_none_match), etag)
        since = headers.get_all("If-Modified-Since")
        if len(since) != 1:
            return False  # §13.1.3: ignore a list or an absent field
        since_time = _parse_http_date(since[0])
        if since_time is None:
            return False  # ... and one that is not a valid HTTP-date
        # Last-Modified has one-second resolution: compare whole seconds.
        return int(mtime) <= since_time

    @staticmethod
    def _error(status: int, head: bool,
               extra: list[tuple[str, str]] | None = None) -> StaticResponse:
        """A short plain-text error such as `404 Not Found\\n`."""
        body = f"{status} {STATUS_REASONS[status]}\n".encode("ascii")
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *(extra or []),
        ]
        return status, headers, b"" if head else body
