"""`python -m bench.broadcast_server`: every message goes to every connected client.

The benchmark's server: it encodes each message once (server frames are
unmasked, so the same bytes suit every peer) and queues those bytes on every
connection with `send_frame_bytes`, as a chat room does.
"""
from __future__ import annotations

import argparse
import signal

from rawws.frames import OP_BINARY, OP_TEXT, encode_frame
from rawws.server import Server, WebSocket, WebSocketApp


class BroadcastApp(WebSocketApp):
    allowed_origins = {"*"}

    def __init__(self) -> None:
        self.clients: set[WebSocket] = set()

    def on_open(self, ws: WebSocket) -> None:
        self.clients.add(ws)

    def on_close(self, ws: WebSocket, code: int, reason: str) -> None:
        self.clients.discard(ws)

    def on_message(self, ws: WebSocket, message: str | bytes) -> None:
        if isinstance(message, str):
            frame = encode_frame(OP_TEXT, message.encode("utf-8"))
        else:
            frame = encode_frame(OP_BINARY, message)
        for client in self.clients:
            client.send_frame_bytes(frame)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.broadcast_server",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = Server(BroadcastApp(), host="127.0.0.1", port=args.port, ping_interval=None)
    # Handlers before the announcement: the benchmark may send SIGTERM as soon as it reads it.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: server.shutdown())
    print(f"Serving on ws://{server.host}:{server.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
