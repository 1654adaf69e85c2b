"""Echo server on `websockets` (asyncio API), as its documentation's echo example.

A reference for `make bench`, run with the interpreter of `.bench-venv`:
    python benchmarks/servers/websockets_echo.py --port 0 [--certfile CERT --keyfile KEY]
Library defaults throughout (keepalive pings every 20 s, compression offered
but never asked for by the load generator), except `max_size`, raised from
1 MiB so the 16 MiB throughput run fits.
"""
import argparse
import asyncio
import ssl

from websockets.asyncio.server import serve

MAX_MESSAGE = 32 * 1024 * 1024


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


async def main(port: int, context: ssl.SSLContext | None) -> None:
    async with serve(echo, "127.0.0.1", port, ssl=context, max_size=MAX_MESSAGE) as server:
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
