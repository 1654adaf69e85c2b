"""Origins (RFC 6454) and the server's Origin check (RFC 6455 §10.2).

A browser names the page that opened a WebSocket in the `Origin` header; a
server that trusts its users' cookies must refuse pages from elsewhere. An
origin compares as a (scheme, host, port) triple, so `http://LocalHost` and
`http://localhost:80` are one origin (RFC 6454 §5).
"""
from __future__ import annotations

from collections.abc import Iterable

# A URI's port when it names none: RFC 9110 §4.2 (http, https), RFC 6455 §3 (ws, wss).
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

Origin = tuple[str, str, "int | None"]


def parse_origin(text: str, default_scheme: str | None = None) -> Origin | None:
    """`scheme://host[:port]` as (scheme, host, port), lower-cased, default port filled in.

    None when the text is not of that form (a path, user info, a bad port).
    `default_scheme` reads a bare `host[:port]`, such as a Host header.
    """
    text = text.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        if default_scheme is None:
            return None
        scheme, rest = default_scheme, text
    scheme = scheme.lower()
    if rest.endswith("/"):          # tolerate `--allowed-origin http://host/`
        rest = rest[:-1]
    if not scheme or not rest or any(c in rest for c in "/?#@ \t"):
        return None
    if rest.startswith("["):        # IPv6 literal: [::1]:3490
        host, bracket, tail = rest.partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            return None
        host += "]"
        port_text = tail[1:]
    else:
        host, colon, port_text = rest.partition(":")
        if colon and not port_text:
            return None
    if not host:
        return None
    if port_text:
        if (len(port_text) > 5 or not (port_text.isascii() and port_text.isdigit())
                or int(port_text) > 65535):
            return None
        port: int | None = int(port_text)
    else:
        port = DEFAULT_PORTS.get(scheme)
    return scheme, host.lower(), port


class OriginPolicy:
    """Which Origin headers a server accepts.

    By default: none at all (a non-browser client), or the server's own
    origin as the Host header names it. `allowed` adds origins; "*" allows
    any, and a literal such as "null" (sandboxed pages) can be listed.
    """

    def __init__(self, allowed: Iterable[str] | None = None, *, scheme: str = "http") -> None:
        extra = {origin.strip() for origin in allowed or () if origin.strip()}
        self.scheme = scheme
        self.any = "*" in extra
        self.literals = {origin.lower() for origin in extra}
        self.origins = {parse_origin(origin) for origin in extra} - {None}

    def allows(self, origin: str | None, host: str | None) -> bool:
        if origin is None:            # not a browser: Origin guards browsers only
            return True
        if self.any or origin.strip().lower() in self.literals:
            return True
        parsed = parse_origin(origin)
        if parsed is None:
            return False
        if parsed in self.origins:
            return True
        return host is not None and parsed == parse_origin(host, self.scheme)
