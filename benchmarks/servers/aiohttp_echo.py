"""Echo server on aiohttp's `web.WebSocketResponse`, as its server documentation shows.

A reference for `make bench`, run with the interpreter of `.bench-venv`:
    python benchmarks/servers/aiohttp_echo.py --port 0 [--certfile CERT --keyfile KEY]
Library defaults (no heartbeat), except `max_msg_size`, raised from 4 MiB so
the 16 MiB throughput run fits.
"""
import argparse
import asyncio
import ssl

from aiohttp import WSMsgType, web

MAX_MESSAGE = 32 * 1024 * 1024


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def main(port: int, context: ssl.SSLContext | None) -> None:
    app = web.Application()
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
