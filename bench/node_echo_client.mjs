// Round trips against an echo server with Node's built-in WebSocket client
// (undici's; Node 20 needs --experimental-websocket, Node 22+ has it on).
//
//   node --experimental-websocket bench/node_echo_client.mjs URL COUNT SECONDS
//
// Prints one JSON line: latency median and p99 in microseconds over at most
// COUNT round trips of a 32-byte text message (or SECONDS seconds), then
// messages/s pipelined in windows of 100. Exits 2 if it overruns its budget.

const [url, countArg, secondsArg] = process.argv.slice(2);
const count = Number(countArg);
const budgetMs = Number(secondsArg) * 1000;
const guard = setTimeout(() => {
  console.error("node client: out of time");
  process.exit(2);
}, 2 * budgetMs + 10000);
guard.unref();   // fires only if something else keeps the process alive

const message = "m".repeat(32);
const inbox = [];
const waiting = [];
const ws = new WebSocket(url);

ws.onmessage = (event) => {
  const resolve = waiting.shift();
  if (resolve) resolve(event.data);
  else inbox.push(event.data);
};

function nextMessage() {
  if (inbox.length) return Promise.resolve(inbox.shift());
  return new Promise((resolve) => waiting.push(resolve));
}

await new Promise((resolve, reject) => {
  ws.onopen = resolve;
  ws.onerror = () => reject(new Error(`cannot connect to ${url}`));
});

async function roundTrips(limit, ms) {
  const nanos = [];
  const stop = performance.now() + ms;
  for (let i = 0; i < limit; i++) {
    const started = process.hrtime.bigint();
    ws.send(message);
    const reply = await nextMessage();
    nanos.push(Number(process.hrtime.bigint() - started));
    if (reply !== message) throw new Error("the echo differs from the message sent");
    if (performance.now() > stop) break;
  }
  return nanos;
}

await roundTrips(200, 2000);   // warm up
const nanos = (await roundTrips(count, budgetMs)).sort((a, b) => a - b);
const at = (fraction) => nanos[Math.min(nanos.length - 1, Math.max(0, Math.round(fraction * nanos.length) - 1))];

const window = 100;
let sent = 0;
const started = performance.now();
const stop = started + budgetMs;
while (sent < count * 10 && performance.now() < stop) {
  for (let i = 0; i < window; i++) ws.send(message);
  for (let i = 0; i < window; i++) await nextMessage();
  sent += window;
}
const seconds = (performance.now() - started) / 1000;

console.log(JSON.stringify({
  round_trips: nanos.length,
  median_us: at(0.5) / 1000,
  p99_us: at(0.99) / 1000,
  pipelined_messages: sent,
  pipelined_per_second: sent / seconds,
}));
ws.close();
