"""beej-chat-protocol v1 room on picows: a listener per connection, one frame sent to each.

A reference for `make bench`'s fan-out scenario:
    python benchmarks/servers/picows_chat.py --port 0
Joined clients hear every `chat-join`, `chat-message` and `chat-leave`, the
sender too. No rate limit, no history. picows hands over frames, not messages;
the load generator sends every chat message in one frame, so no reassembly here.
"""
import argparse
import asyncio
import json

from picows import (WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest,
                    WSUpgradeResponse, WSUpgradeResponseWithListener, ws_create_server)

SUBPROTOCOL = "beej-chat-protocol"
joined = {}   # transport -> username


def broadcast(kind: str, **payload) -> None:
    data = json.dumps({"type": kind, "payload": payload}, separators=(",", ":")).encode()
    for transport in joined:
        transport.send(WSMsgType.TEXT, data)


class ChatListener(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        try:
            message = json.loads(frame.get_payload_as_utf8_text())
            kind, payload = message["type"], message["payload"]
        except (ValueError, KeyError, TypeError):
            return
        if kind == "chat-join" and isinstance(payload.get("username"), str):
            joined[transport] = payload["username"]
            broadcast("chat-join", username=joined[transport])
        elif kind == "chat-message" and transport in joined \
                and isinstance(payload.get("message"), str):
            broadcast("chat-message", username=joined[transport], message=payload["message"])

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        name = joined.pop(transport, None)
        if name is not None:
            broadcast("chat-leave", username=name)


def listener_factory(request: WSUpgradeRequest):
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    if SUBPROTOCOL not in [p.strip() for p in offered.split(",")]:
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_error_response(400, b"offer beej-chat-protocol"), None)
    response = WSUpgradeResponse.create_101_response(
        extra_headers={"Sec-WebSocket-Protocol": SUBPROTOCOL})
    return WSUpgradeResponseWithListener(response, ChatListener())


async def main(port: int) -> None:
    server = await ws_create_server(listener_factory, "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    print(f"Serving on ws://127.0.0.1:{bound}/", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
