// beej-chat-protocol v1 room on Node's `ws` package, broadcasting as its README's
// "Server broadcast" example does (every open client in wss.clients that has joined).
//
// A reference for `make bench`'s fan-out scenario:
//     node benchmarks/servers/ws_chat.mjs --port 0
import { createRequire } from 'node:module';

const require = createRequire(new URL('../node/package.json', import.meta.url));
const { WebSocket, WebSocketServer } = require('ws');

const SUBPROTOCOL = 'beej-chat-protocol';
const portFlag = process.argv.indexOf('--port');
const port = portFlag >= 0 ? Number(process.argv[portFlag + 1]) : 0;
const names = new Map();   // joined client -> username

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
});

function broadcast(type, payload) {
  const text = JSON.stringify({ type, payload });
  wss.clients.forEach((client) => {
    if (client.readyState === WebSocket.OPEN && names.has(client)) client.send(text);
  });
}

wss.on('connection', (ws) => {
  ws.on('error', console.error);
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let message;
    try {
      message = JSON.parse(data.toString());
    } catch {
      return;
    }
    const payload = message && message.payload;
    if (!payload || typeof payload !== 'object') return;
    if (message.type === 'chat-join' && typeof payload.username === 'string') {
      names.set(ws, payload.username);
      broadcast('chat-join', { username: payload.username });
    } else if (message.type === 'chat-message' && names.has(ws)
               && typeof payload.message === 'string') {
      broadcast('chat-message', { username: names.get(ws), message: payload.message });
    }
  });
  ws.on('close', () => {
    const name = names.get(ws);
    if (name === undefined) return;
    names.delete(ws);
    broadcast('chat-leave', { username: name });
  });
});

wss.on('listening', () => {
  console.log(`Serving on ws://127.0.0.1:${wss.address().port}/`);
});
