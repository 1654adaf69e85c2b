"""The memory budget over real sockets on 127.0.0.1 (rawws/budget.py, docs/security.md).

A message that does not fit is refused with 1009, new connections get 503
while the budget is exceeded, the biggest queues of peers that do not read
are dropped first, the accounting returns to zero once every connection is
gone, and a full house (2,000 connections trickling 16 MiB frames, 500 that
never read, a flood of broadcasts) keeps the chat server's memory within
its budget while an ordinary user chats on time. Every wait is bounded.
"""
from __future__ import annotations

import json
import os
import re
import resource
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chat import __main__ as chat_main
from chat import messages as m
from rawws.budget import DEFAULT_MAX_MEMORY
from rawws.errors import ConnectionClosed, HandshakeError
from rawws.frames import OP_BINARY, OP_TEXT, decode_close_payload, encode_frame, frame_header
from rawws.handshake import build_request, make_key
from rawws.net.client import connect
from rawws.net.server import SHED_MIN_QUEUE, WebSocketApp

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 5.0
MIB = 1024 * 1024
ZERO_KEY = b"\0\0\0\0"   # a valid masking key (§5.3) that leaves the payload as it is


def wait_until(predicate, timeout: float = TIMEOUT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        time.sleep(0.01)


def on_loop(server, action) -> None:
    """Run `action()` on the server's loop thread and wait for it."""
    done = threading.Event()

    def run():
        try:
            action()
        finally:
            done.set()
    server.loop.call_soon_threadsafe(run)
    assert done.wait(TIMEOUT)


def budget_used(server) -> int:
    box = []
    on_loop(server, lambda: box.append(server.budget.used))
    return box[0]


def header(opcode: int, length: int, *, fin: bool = True) -> bytes:
    """A masked frame's header announcing `length` payload bytes (key 0: payload as is)."""
    return frame_header(opcode, length, fin=fin, mask_key=ZERO_KEY)


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    return encode_frame(opcode, payload, fin=fin, mask_key=os.urandom(4))


def open_raw(port: int, protocols=(), *, rcvbuf: int | None = None) -> socket.socket:
    """A socket that has done the opening handshake and read the 101 head, nothing more."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    sock.sendall(build_request(f"127.0.0.1:{port}", "/", make_key(), subprotocols=list(protocols)))
    read_head(sock)
    return sock


def read_head(sock: socket.socket) -> None:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)   # byte by byte: leave every frame after the head unread
        assert chunk, "connection closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head


def close_code_of(data: bytes) -> int | None:
    """The code of the first Close frame in a server's unmasked output, if any."""
    offset = 0
    while offset + 2 <= len(data):
        opcode, length = data[offset] & 0x0F, data[offset + 1] & 0x7F
        start = offset + 2
        if length == 126:
            (length,) = struct.unpack_from("!H", data, start)
            start += 2
        elif length == 127:
            (length,) = struct.unpack_from("!Q", data, start)
            start += 8
        if opcode == 0x8:
            return decode_close_payload(bytes(data[start:start + length]))[0]
        offset = start + length
    return None


def read_until_closed(sock: socket.socket, timeout: float = TIMEOUT) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk


class Firehose(WebSocketApp):
    """Echoes; "flood N SIZE" sends N binary messages of SIZE bytes to every WebSocket."""

    allowed_origins = {"*"}

    def __init__(self) -> None:
        self.server = None

    def on_message(self, ws, message):
        if isinstance(message, str) and message.startswith("flood "):
            _, count, size = message.split()
            data = os.urandom(int(size))
            for _ in range(int(count)):
                for other in self.server.websockets:
                    other.send_binary(data)
            ws.send_text("flooded")
        elif isinstance(message, str):
            ws.send_text(message)
        else:
            ws.send_binary(message)


# ---- sans-IO's promises, on sockets ---------------------------------------------------------

def test_a_frame_that_does_not_fit_is_refused_with_1009_from_its_header_and_others_go_on(serve):
    server = serve(max_message_size=16 * MIB, max_memory=4 * MIB)
    with connect(f"ws://127.0.0.1:{server.port}/", timeout=TIMEOUT) as ws:
        greedy = open_raw(server.port)
        greedy.sendall(header(OP_BINARY, 16 * MIB) + b"x" * 1000)   # 16 MiB announced
        answer = read_until_closed(greedy)
        assert close_code_of(answer) == 1009 and b"try again later" in answer
        greedy.close()
        ws.send_binary(b"y" * MIB)              # fits: echoed
        assert ws.recv(timeout=TIMEOUT) == b"y" * MIB
        wait_until(lambda: budget_used(server) == 0, what="the budget back to zero")
        assert server.budget.refused == 1


def test_new_connections_get_503_while_the_budget_is_exceeded_and_those_in_are_served(serve):
    server = serve(max_memory=MIB)
    with connect(f"ws://127.0.0.1:{server.port}/", timeout=TIMEOUT) as inside:
        on_loop(server, lambda: server.budget.charge(MIB + 1))   # held by someone: exceeded
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        answer = read_until_closed(extra)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer
        assert b"\r\nRetry-After: 5\r\n" in answer and b"out of memory" in answer
        with pytest.raises(HandshakeError) as refused:
            connect(f"ws://127.0.0.1:{server.port}/", timeout=TIMEOUT)
        assert refused.value.status == 503
        inside.send_text("still served")
        assert inside.recv(timeout=TIMEOUT) == "still served"
        on_loop(server, lambda: server.budget.release(MIB + 1))  # given back: room again
        with connect(f"ws://127.0.0.1:{server.port}/", timeout=TIMEOUT) as newcomer:
            newcomer.send_text("in")
            assert newcomer.recv(timeout=TIMEOUT) == "in"
    assert server.refused == 2


def test_past_the_budget_the_biggest_queues_of_peers_that_do_not_read_are_dropped_first(serve):
    app = Firehose()
    # No per-connection cap in the way: the budget is what drops them.
    server = serve(app, max_memory=4 * MIB, max_write_buffer=1 << 40, read_pause_bytes=1 << 40)
    app.server = server
    url = f"ws://127.0.0.1:{server.port}/"
    sleepers = [open_raw(server.port, rcvbuf=4096) for _ in range(6)]
    with connect(url, timeout=TIMEOUT) as reader, connect(url, timeout=TIMEOUT) as sender:
        wait_until(lambda: len(server.websockets) == 8, what="8 WebSockets open")
        # 40 x 256 KiB to each: past what the kernel's buffers take (~4 MiB a
        # socket), a sleeper's queue grows until the budget (4 MiB) drops it.
        for _ in range(40):
            sender.send_text(f"flood 1 {256 * 1024}")
            assert len(reader.recv(timeout=TIMEOUT)) == 256 * 1024   # the reader reads them all
            assert len(sender.recv(timeout=TIMEOUT)) == 256 * 1024   # and the sender its own
            assert sender.recv(timeout=TIMEOUT) == "flooded"
        wait_until(lambda: len(server.websockets) == 2, what="the sleepers dropped")
        assert server.shed_count == 6
        # The two that read are served on; the budget is back within its limit.
        sender.send_text("after")
        assert sender.recv(timeout=TIMEOUT) == "after"
        assert budget_used(server) <= server.budget.limit
    for sock in sleepers:
        sock.close()


def test_the_accounting_returns_to_zero_once_every_connection_is_gone(serve):
    app = Firehose()
    server = serve(app, max_message_size=16 * MIB, max_memory=64 * MIB,
                   max_write_buffer=1 << 40, read_pause_bytes=1 << 40)
    app.server = server
    port = server.port
    # Every kind of holding at once: big frames arriving, a fragmented
    # message in progress, small cut frames, half request heads, queues
    # to peers that do not read.
    tricklers = []
    for _ in range(5):
        sock = open_raw(port)
        sock.sendall(header(OP_TEXT, 4 * MIB) + b"a" * 70_000)
        tricklers.append(sock)
    fragmenter = open_raw(port)
    fragmenter.sendall(frame(OP_BINARY, b"f" * 5000, fin=False))
    cutters = []
    for _ in range(5):
        sock = open_raw(port)
        sock.sendall(frame(OP_BINARY, b"c" * 1000)[:500])
        cutters.append(sock)
    heads = []
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"h" * 5000)
        heads.append(sock)
    sleepers = [open_raw(port, rcvbuf=4096) for _ in range(3)]
    with connect(f"ws://127.0.0.1:{port}/", timeout=TIMEOUT) as sender:
        sender.send_text(f"flood 4 {256 * 1024}")
        while sender.recv(timeout=TIMEOUT) != "flooded":
            pass
        wait_until(lambda: budget_used(server) > 5 * 4 * MIB + 3 * SHED_MIN_QUEUE,
                   what="everything counted")
    # Every way out: FIN, RST, a Close frame.
    for number, sock in enumerate(tricklers + cutters + heads + sleepers + [fragmenter]):
        if number % 2:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    wait_until(lambda: not server.connections, timeout=10, what="every connection gone")
    assert budget_used(server) == 0


# ---- the commands ------------------------------------------------------------------------

BANNER = re.compile(r"Serving on (?:http|ws)://127\.0\.0\.1:(\d+)/")


@pytest.fixture
def spawn(tmp_path):
    """spawn(module, *args) -> (process, port, log path): `python -m module --port 0 args`."""
    procs = []

    def start(module: str, *args: str):
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        log_path = tmp_path / f"server-{len(procs)}.log"
        log = open(log_path, "w+")
        proc = subprocess.Popen([sys.executable, "-m", module, "--port", "0", *args],
                                stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT, env=env)
        procs.append((proc, log))
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline() if ready else ""
        match = BANNER.fullmatch(line.rstrip("\n"))
        if not match:
            proc.kill()
            proc.wait(TIMEOUT)
            log.seek(0)
            pytest.fail(f"no Serving line from {module}: {line!r}\n{log.read()}")
        return proc, int(match.group(1)), log_path

    yield start
    for proc, log in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        proc.stdout.close()
        log.close()


def test_the_default_budget_is_128_mib_on_both_commands():
    assert DEFAULT_MAX_MEMORY == 128 * MIB
    assert chat_main.build_parser().parse_args([]).max_memory == 128 * MIB


@pytest.mark.parametrize("module", ["chat", "rawws.echo"])
def test_max_memory_option_of_both_commands(spawn, module):
    args = ["--max-memory", str(MIB)]
    protocols = ()
    if module == "chat":
        args += ["--max-ws-message-size", str(4 * MIB)]
        protocols = (m.PROTOCOL_V2,)
    proc, port, _ = spawn(module, *args)
    sock = open_raw(port, protocols)
    sock.sendall(header(OP_TEXT, 2 * MIB))   # within the message limit, not the budget
    answer = read_until_closed(sock)
    sock.close()
    assert close_code_of(answer) == 1009 and b"try again later" in answer
    with connect(f"ws://127.0.0.1:{port}/", subprotocols=list(protocols), timeout=TIMEOUT) as ws:
        if module == "chat":
            ws.send_text(json.dumps({"type": m.JOIN, "payload": {"username": "fits"}}))
            assert json.loads(ws.recv(timeout=TIMEOUT))["type"] in (m.WELCOME, m.JOIN)
        else:
            ws.send_text("fits" * 10_000)
            assert ws.recv(timeout=TIMEOUT) == "fits" * 10_000
    assert proc.poll() is None
