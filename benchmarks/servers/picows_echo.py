"""Echo server on picows, as its documentation's echo server example (frames sent back as they come).

A reference for `make bench`, run with the interpreter of `.bench-venv`:
    python benchmarks/servers/picows_echo.py --port 0
Library defaults (asyncio's own loop, no keepalive), except `max_frame_size`,
raised from 10 MiB so the 16 MiB throughput run fits.
"""
import argparse
import asyncio

from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

MAX_MESSAGE = 32 * 1024 * 1024


class EchoListener(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        else:
            transport.send(frame.msg_type, frame.get_payload_as_memoryview(), frame.fin)


def listener_factory(request: WSUpgradeRequest) -> EchoListener:
    return EchoListener()


async def main(port: int) -> None:
    server = await ws_create_server(listener_factory, "127.0.0.1", port,
                                    max_frame_size=MAX_MESSAGE)
    bound = server.sockets[0].getsockname()[1]
    print(f"Serving on ws://127.0.0.1:{bound}/", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
