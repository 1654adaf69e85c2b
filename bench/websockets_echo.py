"""`python -m bench.websockets_echo`: the same echo server, written with the `websockets` package.

Only for the optional comparison; run only when `websockets` is importable.
Settings match `python -m rawws.echo --ping-interval 0`: no compression, no
keepalive pings, 32 MiB messages.
"""
from __future__ import annotations

import asyncio
import socket

try:   # websockets >= 13: the new asyncio implementation
    from websockets.asyncio.server import serve
except ImportError:   # older releases
    from websockets import serve


async def echo(ws, *_path) -> None:
    async for message in ws:
        await ws.send(message)


async def main() -> None:
    # proto=IPPROTO_TCP, not create_server's 0: asyncio sets TCP_NODELAY only on
    # accepted sockets whose proto says TCP, and without it Nagle's algorithm
    # and delayed ACKs hold every second pipelined echo for 40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    async with serve(echo, sock=sock, compression=None, ping_interval=None,
                     max_size=32 * 1024 * 1024):
        print(f"Serving on ws://127.0.0.1:{port}/", flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
