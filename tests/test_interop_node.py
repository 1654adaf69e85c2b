"""Interop with a WebSocket implementation we did not write: Node.js's built-in client (undici).

Node 20 ships a WHATWG `WebSocket` behind `--experimental-websocket` (on by
default from Node 22). A small inline script connects to our server, runs
an exchange and prints JSON on stdout; the test checks it.

Only this direction is tested: Node has no built-in WebSocket *server*, so
running `rawws.net.client` against Node would need a package.

Without node the tests are skipped, except under CI=true, where a missing
node is a failure.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from rawws.echo import ECHO_MAX_MESSAGE_SIZE, EchoApp
from rawws.net.server import WebSocketApp

pytestmark = pytest.mark.interop

MIN_NODE = (20, 10)   # the first Node 20 with --experimental-websocket


def node_command() -> list[str]:
    """The command that runs node with a global WebSocket, or skip/fail saying why not."""
    node = shutil.which("node")
    version = None
    if node is not None:
        output = subprocess.run([node, "--version"], capture_output=True, text=True,
                                timeout=20).stdout.strip()
        match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+.*", output)
        version = (int(match.group(1)), int(match.group(2))) if match else None
    if version is None or version < MIN_NODE:
        reason = ("node is not installed" if node is None else
                  f"node at {node} is too old or unrecognised (need >= 20.10 for a built-in WebSocket)")
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must provide it for the interop tests")
        pytest.skip(f"{reason}: no interop test against Node's WebSocket client")
    return [node, "--experimental-websocket"] if version < (22, 0) else [node]


def run_node(script: str, url: str, timeout: float = 30, **env_extra: str) -> dict:
    env = dict(os.environ, WS_URL=url, **env_extra)
    completed = subprocess.run([*node_command(), "-e", script], env=env, capture_output=True,
                               text=True, timeout=timeout)
    assert completed.returncode == 0, (completed.returncode, completed.stdout, completed.stderr)
    return json.loads(completed.stdout.strip().splitlines()[-1])


# Sends each message after the previous echo came back, then closes with 1000.
ECHO_SCRIPT = r"""
const crypto = require('crypto');
const sha = (data) => crypto.createHash('sha256').update(data).digest('hex');
const bytes = (n) => Uint8Array.from({length: n}, (_, i) => i % 251);
const messages = [
  'hello',
  'héllo wörld ✓ 𝄞 日本語',
  '',
  bytes(4),
  new Uint8Array(0),
  bytes(100 * 1024),
  'é✓𝄞a'.repeat(12800),
];
const results = [];
const ws = new WebSocket(process.env.WS_URL);
ws.binaryType = 'arraybuffer';
const timer = setTimeout(() => {
  console.log(JSON.stringify({error: 'timeout', results}));
  process.exit(3);
}, 20000);
let next = 0;
const sendNext = () => ws.send(messages[next++]);
ws.onopen = sendNext;
ws.onmessage = (event) => {
  if (typeof event.data === 'string') {
    results.push({type: 'text', length: Buffer.byteLength(event.data), sha256: sha(event.data),
                  text: event.data.length <= 100 ? event.data : null});
  } else {
    const data = Buffer.from(event.data);
    results.push({type: 'binary', length: data.length, sha256: sha(data)});
  }
  if (next < messages.length) sendNext(); else ws.close(1000, 'done');
};
ws.onerror = (event) => {
  console.log(JSON.stringify({error: String(event.message || event.type), results}));
  process.exit(2);
};
ws.onclose = (event) => {
  clearTimeout(timer);
  console.log(JSON.stringify({results, protocol: ws.protocol, extensions: ws.extensions,
                              close: {code: event.code, reason: event.reason, wasClean: event.wasClean}}));
  process.exit(0);
};
"""


def expected(message: str | bytes) -> dict:
    if isinstance(message, str):
        data = message.encode("utf-8")
        return {"type": "text", "length": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "text": message if len(message) <= 100 else None}
    return {"type": "binary", "length": len(message), "sha256": hashlib.sha256(message).hexdigest()}


def pattern(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def test_node_client_against_echo_server(serve):
    server = serve(EchoApp(), max_message_size=ECHO_MAX_MESSAGE_SIZE)
    output = run_node(ECHO_SCRIPT, f"ws://127.0.0.1:{server.port}/")
    assert "error" not in output, output
    sent = ["hello", "héllo wörld ✓ 𝄞 日本語", "", pattern(4), b"", pattern(100 * 1024),
            "é✓𝄞a" * 12800]
    assert output["results"] == [expected(message) for message in sent]
    assert output["protocol"] == ""
    # Node's client offers permessage-deflate and the echo server takes it
    # (RFC 7692): every message above went both ways compressed.
    assert output["extensions"] == "permessage-deflate"
    assert output["close"] == {"code": 1000, "reason": "", "wasClean": True}


def test_node_client_against_echo_server_without_compression(serve):
    server = serve(EchoApp(), max_message_size=ECHO_MAX_MESSAGE_SIZE, compression=None)
    output = run_node(ECHO_SCRIPT, f"ws://127.0.0.1:{server.port}/")
    assert "error" not in output, output
    assert len(output["results"]) == 7 and output["extensions"] == ""


# Offers two subprotocols, stays open while the server pings, then asks to be kicked.
KICK_SCRIPT = r"""
const ws = new WebSocket(process.env.WS_URL, ['proto-v1', 'proto-v2']);
const timer = setTimeout(() => { console.log(JSON.stringify({error: 'timeout'})); process.exit(3); }, 20000);
const received = [];
ws.onopen = () => setTimeout(() => ws.send('kick me'), 1000);
ws.onmessage = (event) => received.push(event.data);
ws.onerror = (event) => { console.log(JSON.stringify({error: String(event.message || event.type)})); process.exit(2); };
ws.onclose = (event) => {
  clearTimeout(timer);
  console.log(JSON.stringify({protocol: ws.protocol, received,
                              close: {code: event.code, reason: event.reason, wasClean: event.wasClean}}));
  process.exit(0);
};
"""


class KickApp(WebSocketApp):
    subprotocols = ("proto-v2", "proto-v1")
    subprotocol_required = True

    def __init__(self) -> None:
        self.closes: list[tuple[int, str]] = []

    def on_open(self, ws) -> None:
        ws.send_text("welcome " + ws.subprotocol)

    def on_message(self, ws, message) -> None:
        if message == "kick me":
            ws.close(4001, "kicked")

    def on_close(self, ws, code: int, reason: str) -> None:
        self.closes.append((code, reason))


def test_node_client_subprotocol_keepalive_and_server_close(serve):
    app = KickApp()
    # Pings every 0.2 s for the second Node stays idle: Node must answer them.
    server = serve(app, ping_interval=0.2, ping_timeout=0.5)
    output = run_node(KICK_SCRIPT, f"ws://127.0.0.1:{server.port}/chat")
    assert "error" not in output, output
    assert output["protocol"] == "proto-v2"
    assert output["received"] == ["welcome proto-v2"]
    assert output["close"] == {"code": 4001, "reason": "kicked", "wasClean": True}
    deadline = time.monotonic() + 5
    while not app.closes and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [code for code, _ in app.closes] == [4001]


def test_node_client_over_wss_trusting_the_test_ca(serve, tls_certs):
    # Node verifies the chain and the IP in the certificate's subjectAltName;
    # NODE_EXTRA_CA_CERTS adds the test CA to the ones it trusts.
    from rawws.net.tls import server_context
    server = serve(EchoApp(), max_message_size=ECHO_MAX_MESSAGE_SIZE,
                   ssl_context=server_context(tls_certs.cert, tls_certs.key))
    output = run_node(ECHO_SCRIPT, f"wss://127.0.0.1:{server.port}/",
                      NODE_EXTRA_CA_CERTS=str(tls_certs.ca))
    assert "error" not in output, output
    sent = ["hello", "héllo wörld ✓ 𝄞 日本語", "", pattern(4), b"", pattern(100 * 1024),
            "é✓𝄞a" * 12800]
    assert output["results"] == [expected(message) for message in sent]
    assert output["close"] == {"code": 1000, "reason": "", "wasClean": True}


def test_node_client_refuses_the_server_without_the_test_ca(serve, tls_certs):
    from rawws.net.tls import server_context
    server = serve(EchoApp(), ssl_context=server_context(tls_certs.cert, tls_certs.key))
    env = dict(os.environ, WS_URL=f"wss://127.0.0.1:{server.port}/")
    env.pop("NODE_EXTRA_CA_CERTS", None)
    completed = subprocess.run([*node_command(), "-e", ECHO_SCRIPT], env=env,
                               capture_output=True, text=True, timeout=30)
    assert completed.returncode == 2, (completed.stdout, completed.stderr)   # onerror
