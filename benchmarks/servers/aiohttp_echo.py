"""Echo server on aiohttp's `web.WebSocketResponse`, as its server documentation shows.

A reference for `make bench`, run with the interpreter of `.bench-venv`:
    python benchmarks/servers/aiohttp_echo.py --port 0
Library defaults (no heartbeat), except `max_msg_size`, raised from 4 MiB so
the 16 MiB throughput run fits.
"""
import argparse
import asyncio

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


async def main(port: int) -> None:
    app = web.Application()
    app.add_routes([web.get("/", websocket_handler)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"Serving on ws://127.0.0.1:{bound}/", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
