"""Echo server on `websockets` (asyncio API), as its documentation's echo example.

A reference for `make bench`, run with the interpreter of `.bench-venv`:
    python benchmarks/servers/websockets_echo.py --port 0
Library defaults throughout (keepalive pings every 20 s, compression offered
but never asked for by the load generator), except `max_size`, raised from
1 MiB so the 16 MiB throughput run fits.
"""
import argparse
import asyncio

from websockets.asyncio.server import serve

MAX_MESSAGE = 32 * 1024 * 1024


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


async def main(port: int) -> None:
    async with serve(echo, "127.0.0.1", port, max_size=MAX_MESSAGE) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"Serving on ws://127.0.0.1:{bound}/", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
