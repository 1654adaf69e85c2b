"""beej-chat-protocol v1 room on `websockets`, broadcasting with `websockets.broadcast`.

A reference for `make bench`'s fan-out scenario:
    python benchmarks/servers/websockets_chat.py --port 0 [--certfile CERT --keyfile KEY]
Joined clients hear every `chat-join`, `chat-message` and `chat-leave`, the
sender too, as the original Node.js server does. No rate limit, no history.
"""
import argparse
import asyncio
import ssl
import json

from websockets.asyncio.server import broadcast, serve

SUBPROTOCOL = "beej-chat-protocol"
joined = {}   # connection -> username


def envelope(kind: str, **payload) -> str:
    return json.dumps({"type": kind, "payload": payload}, separators=(",", ":"))


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
                broadcast(joined, envelope("chat-join", username=joined[websocket]))
            elif kind == "chat-message" and websocket in joined \
                    and isinstance(payload.get("message"), str):
                broadcast(joined, envelope("chat-message", username=joined[websocket],
                                           message=payload["message"]))
    finally:
        name = joined.pop(websocket, None)
        if name is not None:
            broadcast(joined, envelope("chat-leave", username=name))


async def main(port: int, context: ssl.SSLContext | None) -> None:
    async with serve(chat, "127.0.0.1", port, ssl=context, subprotocols=[SUBPROTOCOL]) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"Serving on {'wss' if context else 'ws'}://127.0.0.1:{bound}/", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--certfile", help="serve wss:// with this PEM certificate")
    parser.add_argument("--keyfile", help="...and this PEM key")
    args = parser.parse_args()
    context = None
    if args.certfile:   # TLS as the ssl module documents a server: its defaults, the pair loaded
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.certfile, args.keyfile)
    asyncio.run(main(args.port, context))
