"""beej-chat-protocol v1 room on aiohttp: a set of joined responses, sent to in a loop.

A reference for `make bench`'s fan-out scenario:
    python benchmarks/servers/aiohttp_chat.py --port 0 [--certfile CERT --keyfile KEY]
Joined clients hear every `chat-join`, `chat-message` and `chat-leave`, the
sender too. No rate limit, no history.
"""
import argparse
import asyncio
import ssl
import json

from aiohttp import WSMsgType, web

SUBPROTOCOL = "beej-chat-protocol"
JOINED = web.AppKey("joined", dict)


def envelope(kind: str, **payload) -> str:
    return json.dumps({"type": kind, "payload": payload}, separators=(",", ":"))


async def broadcast(app: web.Application, text: str) -> None:
    for ws in list(app[JOINED]):
        if not ws.closed:
            await ws.send_str(text)


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,))
    await ws.prepare(request)
    joined = request.app[JOINED]
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                message = json.loads(msg.data)
                kind, payload = message["type"], message["payload"]
            except (ValueError, KeyError, TypeError):
                continue
            if kind == "chat-join" and isinstance(payload.get("username"), str):
                joined[ws] = payload["username"]
                await broadcast(request.app, envelope("chat-join", username=joined[ws]))
            elif kind == "chat-message" and ws in joined \
                    and isinstance(payload.get("message"), str):
                await broadcast(request.app, envelope("chat-message", username=joined[ws],
                                                      message=payload["message"]))
    finally:
        name = joined.pop(ws, None)
        if name is not None:
            await broadcast(request.app, envelope("chat-leave", username=name))
    return ws


async def main(port: int, context: ssl.SSLContext | None) -> None:
    app = web.Application()
    app[JOINED] = {}
    app.add_routes([web.get("/", websocket_handler)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=context)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"Serving on {'wss' if context else 'ws'}://127.0.0.1:{bound}/", flush=True)
    await asyncio.Event().wait()


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
