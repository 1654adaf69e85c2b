"""rawws: WebSockets (RFC 6455) from scratch, standard library only.

The package has three layers (docs/architecture.md):

- `rawws.*`: the sans-IO core. Bytes in, events and bytes out, no sockets:
  `frames`, `protocol`, `handshake`, `http`, `extensions`, `deflate`, ...
- `rawws.net`: the I/O layer on a `selectors` event loop: `loop`, `server`,
  `client`, the send queue and the static file server.
- `rawws.tools`: the teaching tools: `trace`, `decode`, `encode`.

The names most programs need are importable from here; the I/O layer is
only loaded when one of them is asked for, so `import rawws.protocol` stays
free of sockets.
"""
from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "connect": "rawws.net.client",
    "ClientConnection": "rawws.net.client",
    "Server": "rawws.net.server",
    "WebSocketApp": "rawws.net.server",
    "WebSocket": "rawws.net.server",
    "broadcast": "rawws.net.broadcast",
    "DeflateOptions": "rawws.deflate",
    "WebSocketConnection": "rawws.protocol",
    "Role": "rawws.protocol",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rawws' has no attribute {name!r}")
    return getattr(import_module(module), name)
