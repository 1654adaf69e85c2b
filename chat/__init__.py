"""The Beej chat on top of rawws: protocols `beej-chat-protocol` (v1) and
`beej-chat-protocol-v2`, one shared room.

- `chat.messages`: the JSON envelope, parsing and validation, outgoing messages.
- `chat.room`: the room as pure logic (members, names, history, rate limit,
  broadcast); it never touches a socket, only connection handles.
- `chat.app`: `ChatApp`, the `rawws.net.server.WebSocketApp` that wires the room
  to real connections (subprotocols, Origin policy).
- `python -m chat`: the server; `python -m chat.client`: a terminal client.

The wire protocol is documented in docs/protocol.md.
"""
