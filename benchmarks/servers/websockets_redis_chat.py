"""beej-chat-protocol v1 room on `websockets`, shared through a Redis Stream with redis-py.

The reference for `make bench-backplane` (benchmarks/backplane.py), written
the way the two libraries document: every join, message and leave is
XADDed to one stream (redis-py's asyncio client), and each process reads
the stream (XREAD BLOCK, a connection of its own) and hands every entry to
`websockets.broadcast` for its own clients. Several processes share the
port with --reuse-port:
    python benchmarks/servers/websockets_redis_chat.py --port P --redis redis://... --reuse-port
A plain relay: no ids, no unique names, no history, no rate limit.
"""
import argparse
import asyncio
import json

import redis.asyncio as redis
from websockets.asyncio.server import broadcast, serve

SUBPROTOCOL = "beej-chat-protocol"
STREAM = "bench:websockets-redis:stream"
joined = {}   # connection -> username


def envelope(kind: str, **payload) -> str:
    return json.dumps({"type": kind, "payload": payload}, separators=(",", ":"))


async def main(port: int, url: str, reuse_port: bool) -> None:
    writer = redis.from_url(url)
    reader = redis.from_url(url)
    last = (await reader.xinfo_stream(STREAM))["last-generated-id"] \
        if await reader.exists(STREAM) else "0-0"

    async def relay(text: str) -> None:
        await writer.xadd(STREAM, {"d": text}, maxlen=10000, approximate=True)

    async def read_forever() -> None:
        nonlocal last
        while True:
            found = await reader.xread({STREAM: last}, count=1000, block=10000)
            for _stream, entries in found or ():
                for entry_id, fields in entries:
                    last = entry_id
                    broadcast(joined, fields[b"d"].decode())

    async def chat(websocket):
        try:
            async for raw in websocket:
                try:
                    message = json.loads(raw)
                    kind, payload = message["type"], message["payload"]
                except (ValueError, KeyError, TypeError):
                    continue
                if kind == "chat-join" and isinstance(payload.get("username"), str):
                    joined[websocket] = payload["username"]
                    await relay(envelope("chat-join", username=joined[websocket]))
                elif kind == "chat-message" and websocket in joined \
                        and isinstance(payload.get("message"), str):
                    await relay(envelope("chat-message", username=joined[websocket],
                                         message=payload["message"]))
        finally:
            name = joined.pop(websocket, None)
            if name is not None:
                await relay(envelope("chat-leave", username=name))

    reading = asyncio.create_task(read_forever())
    # No keepalive pings, as rawws runs in this benchmark (--ping-interval 0):
    # a loop busy with a broadcast to thousands must not count as a dead peer.
    async with serve(chat, "127.0.0.1", port, subprotocols=[SUBPROTOCOL],
                     reuse_port=reuse_port, ping_interval=None) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"Serving on ws://127.0.0.1:{bound}/", flush=True)
        await server.serve_forever()
    reading.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--reuse-port", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.redis, args.reuse_port))
