// Echo server on Node's `ws` package, as its README's "Simple server" example.
//
// A reference for `make bench` (ws installed into benchmarks/node/node_modules):
//     node benchmarks/servers/ws_echo.mjs --port 0
// Library defaults (perMessageDeflate off, no keepalive), with maxPayload set
// to 32 MiB like the other echo servers.
import { createRequire } from 'node:module';

const require = createRequire(new URL('../node/package.json', import.meta.url));
const { WebSocketServer } = require('ws');

const portFlag = process.argv.indexOf('--port');
const port = portFlag >= 0 ? Number(process.argv[portFlag + 1]) : 0;

const wss = new WebSocketServer({ host: '127.0.0.1', port, maxPayload: 32 * 1024 * 1024 });

wss.on('connection', (ws) => {
  ws.on('error', console.error);
  ws.on('message', (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
});

wss.on('listening', () => {
  console.log(`Serving on ws://127.0.0.1:${wss.address().port}/`);
});
