"""Hostile clients and heavy load, over real sockets on 127.0.0.1 (docs/security.md).

Each defence in docs/security.md's table has a test here (or names the one
elsewhere that covers it): slow handshakes, the connection cap, slow
consumers with the server's memory measured, ping floods and pong storms,
keepalive, fragment floods, 16 MiB messages, application exceptions, socket
errors at every stage, graceful shutdown and restarts on the same port.

Servers run in a thread (to look inside them) or as `python -m chat` /
`python -m rawws.echo` processes (to measure their memory and CPU time from
/proc). Every wait is bounded, every load loop bounded in count and time.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import resource
import select
import signal
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
from rawws.net.client import connect
from rawws.errors import ConnectionClosed, HandshakeError
from rawws.frames import (OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT,
                          FrameParser, decode_close_payload, encode_close_payload, encode_frame)
from rawws.handshake import build_request, make_key
from rawws.net.server import (DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, RECV_SIZE, Server,
                          WebSocketApp)

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 5.0
MIB = 1024 * 1024
V1, V2 = m.PROTOCOL_V1, m.PROTOCOL_V2


# ---- helpers -------------------------------------------------------------------------------

def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/"


def wait_until(predicate, timeout: float = TIMEOUT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        time.sleep(0.01)


def masked(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    return encode_frame(opcode, payload, fin=fin, mask_key=os.urandom(4))


def chat_frame(kind: str, **payload) -> bytes:
    return masked(OP_TEXT, json.dumps({"type": kind, "payload": payload}).encode())


def raw_websocket(port: int, protocols=(V2,), *, rcvbuf: int | None = None) -> socket.socket:
    """A TCP socket that has done the opening handshake and read the 101, nothing more.

    With `rcvbuf`, the receive buffer is set before connecting, so the window
    the kernel advertises stays that small: a peer that really reads nothing.
    """
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    sock.sendall(build_request(f"127.0.0.1:{port}", "/", make_key(), subprotocols=list(protocols)))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)   # byte by byte: leave every frame after the head unread
        assert chunk, "connection closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def reset(sock: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_until_closed(sock: socket.socket, timeout: float = TIMEOUT) -> bytes:
    """Everything the server sends until it closes the connection (FIN or RST)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def frames_of(data: bytes) -> list:
    parser = FrameParser(require_mask=False, max_frame_size=1 << 62)
    parser.feed(data)
    frames = []
    while (frame := parser.next_frame()) is not None:
        frames.append(frame)
    return frames


# ---- chat helpers ---------------------------------------------------------------------------

def open_chat(port: int, version: int = 2):
    return connect(ws_url(port), subprotocols=[V2 if version == 2 else V1], timeout=TIMEOUT)


def send(conn, kind: str, **payload) -> None:
    conn.send_text(json.dumps({"type": kind, "payload": payload}))


def wait_for(conn, kind: str, seen: list | None = None, timeout: float = TIMEOUT) -> dict:
    """The next chat message of type `kind`; the ones skipped go to `seen`."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(conn.recv(timeout=max(0.01, deadline - time.monotonic())))
        if message["type"] == kind:
            return message
        if seen is not None:
            seen.append(message)


def join(port: int, name: str, version: int = 2):
    conn = open_chat(port, version)
    send(conn, m.JOIN, username=name)
    while wait_for(conn, m.JOIN)["payload"]["username"] != name:
        pass
    return conn


def leaves(messages: list[dict]) -> list[str]:
    return [msg["payload"]["username"] for msg in messages if msg["type"] == m.LEAVE]


def drain(conn, quiet: float = 0.3) -> list[dict]:
    """Every message until `quiet` seconds pass without one."""
    got = []
    while True:
        try:
            got.append(json.loads(conn.recv(timeout=quiet)))
        except TimeoutError:
            return got


# ---- processes, measured from /proc ---------------------------------------------------------

BANNER = re.compile(r"Serving on (?:http|ws)://127\.0\.0\.1:(\d+)/")


@pytest.fixture
def spawn(tmp_path):
    """spawn(module, *args, port=0) -> (process, port): `python -m module --port P args`."""
    procs = []

    def start(module: str, *args: str, port: int = 0, max_files: int | None = None):
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        log = open(tmp_path / f"server-{len(procs)}.log", "w+")   # a file: a pipe could fill up

        def limit_files() -> None:   # in the child: soft and hard, so it cannot raise them
            resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, max_files))

        proc = subprocess.Popen([sys.executable, "-m", module, "--port", str(port), *args],
                                stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT, env=env,
                                preexec_fn=limit_files if max_files else None)
        procs.append((proc, log))
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline() if ready else ""
        match = BANNER.fullmatch(line.rstrip("\n"))
        if not match:
            proc.kill()
            proc.wait(TIMEOUT)
            log.seek(0)
            pytest.fail(f"no Serving line from {module}: {line!r}\n{log.read()}")
        return proc, int(match.group(1))

    yield start
    for proc, log in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        proc.stdout.close()
        log.close()


def proc_status_kib(pid: int, field: str) -> int:
    """A field of /proc/PID/status in KiB (VmRSS: resident now; VmHWM: the peak)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """CPU time the process's main thread has used: /proc/PID/schedstat (ns), else ticks."""
    try:
        with open(f"/proc/{pid}/schedstat") as stat:
            return int(stat.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# =============================================================================================
# Resource bounds
# =============================================================================================

# ---- slow handshakes (slowloris) -------------------------------------------------------------

def test_defaults_handshake_timeout_10_s_connection_cap_10000_chat_send_buffer_1_mib():
    server = Server(WebSocketApp(), port=0)
    try:
        assert server.handshake_timeout == DEFAULT_HANDSHAKE_TIMEOUT == 10.0
        assert server.max_connections == DEFAULT_MAX_CONNECTIONS == 10_000
        assert server.ping_interval == 20.0
        assert server.listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
    finally:
        server._close_everything()
    args = chat_main.build_parser().parse_args([])
    assert (args.handshake_timeout, args.max_connections, args.max_send_buffer) == (10.0, 10_000, MIB)
    assert args.ping_interval == 20.0


def test_200_slowloris_connections_are_closed_at_the_handshake_timeout_and_delay_no_chat(chat_server):
    timeout = 2.0
    server, _ = chat_server(handshake_timeout=timeout)
    opened = time.monotonic()
    dribblers = [socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
                 for _ in range(200)]
    closed_at: dict[int, float] = {}
    answered: list[bytes] = []
    stop = threading.Event()
    # A request head that never ends, sent one byte per socket per round.
    endless = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100_000

    def dribble() -> None:
        position = 0
        while not stop.is_set() and len(closed_at) < len(dribblers) \
                and time.monotonic() - opened < timeout + 8:
            for index, sock in enumerate(dribblers):
                if index not in closed_at:
                    try:
                        sock.send(endless[position:position + 1])
                    except OSError:
                        closed_at[index] = time.monotonic()
            position += 1
            still_open = [sock for index, sock in enumerate(dribblers) if index not in closed_at]
            readable, _, _ = select.select(still_open, [], [], 0.05)
            for sock in readable:
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if data:
                    answered.append(data)   # nothing may be answered: no request ever ends
                closed_at.setdefault(dribblers.index(sock), time.monotonic())

    thread = threading.Thread(target=dribble, daemon=True)
    thread.start()
    try:
        # While all 200 dribble, a normal client joins and chats.
        alice = join(server.port, "alice")
        bob = join(server.port, "bob", version=1)
        send(alice, m.MESSAGE, message="hello through the slowloris")
        assert wait_for(bob, m.MESSAGE)["payload"]["message"] == "hello through the slowloris"
        assert wait_for(alice, m.MESSAGE)["payload"]["message"] == "hello through the slowloris"
        chatted = time.monotonic()
        assert not closed_at, "the chat must have happened while the dribblers were all open"
        thread.join(timeout + 10)
        assert not thread.is_alive()
        # They kept dribbling, and were closed anyway: the timeout counts from
        # the connection, not from the last byte.
        assert len(closed_at) == 200, f"only {len(closed_at)} of 200 were closed"
        assert answered == []
        assert min(closed_at.values()) - opened >= timeout - 0.1
        assert max(closed_at.values()) - opened < timeout + 4
        assert chatted - opened < timeout
        wait_until(lambda: len(server.connections) == 2, what="only the two chatters left")
        send(bob, m.MESSAGE, message="still here")
        assert wait_for(alice, m.MESSAGE)["payload"]["message"] == "still here"
        alice.close()
        bob.close()
    finally:
        stop.set()
        for sock in dribblers:
            sock.close()


# ---- the connection cap ----------------------------------------------------------------------

def test_past_max_connections_new_ones_get_503_and_those_in_are_still_served(serve):
    server = serve(max_connections=5)
    inside = [connect(ws_url(server.port), timeout=TIMEOUT) for _ in range(5)]
    try:
        # A sixth connection gets the fixed 503, then the end of the stream,
        # without having sent a byte.
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        answer = read_until_closed(extra)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer
        assert b"\r\nRetry-After: 5\r\n" in answer and b"\r\nConnection: close\r\n" in answer
        # A WebSocket client sees its handshake refused with that status.
        with pytest.raises(HandshakeError) as refused:
            connect(ws_url(server.port), timeout=TIMEOUT)
        assert refused.value.status == 503
        assert server.refused == 2
        # Those already in notice nothing.
        for number, ws in enumerate(inside):
            ws.send_text(f"still served {number}")
        for number, ws in enumerate(inside):
            assert ws.recv(timeout=TIMEOUT) == f"still served {number}"
        # One leaves: there is room for one more.
        inside.pop().close()
        wait_until(lambda: len(server.connections) == 4, what="the closed one gone")
        with connect(ws_url(server.port), timeout=TIMEOUT) as newcomer:
            newcomer.send_text("in")
            assert newcomer.recv(timeout=TIMEOUT) == "in"
    finally:
        for ws in inside:
            ws.close(timeout=2)


def test_idle_http_connections_count_toward_the_cap_until_the_handshake_timeout_ends_them(serve):
    server = serve(max_connections=3, handshake_timeout=0.5)
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
            for _ in range(3)]
    try:
        wait_until(lambda: len(server.connections) == 3, what="three accepted")
        with pytest.raises(HandshakeError) as refused:
            connect(ws_url(server.port), timeout=TIMEOUT)
        assert refused.value.status == 503
        for sock in idle:
            assert read_until_closed(sock) == b""   # silence: closed at the handshake timeout
        with connect(ws_url(server.port), timeout=TIMEOUT) as ws:
            ws.send_text("room again")
            assert ws.recv(timeout=TIMEOUT) == "room again"
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.parametrize("module", ["chat", "rawws.echo"])
def test_max_connections_and_handshake_timeout_options_of_both_commands(spawn, module):
    proc, port = spawn(module, "--max-connections", "2", "--handshake-timeout", "0.5")
    idle = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) for _ in range(2)]
    try:
        third = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        assert read_until_closed(third).startswith(b"HTTP/1.1 503 ")   # accepted in order: the third
        third.close()
        started = time.monotonic()
        for sock in idle:
            assert read_until_closed(sock) == b""
        assert time.monotonic() - started < 3
        if module == "chat":
            conn = join(port, "after the cap")
        else:
            conn = connect(ws_url(port), timeout=TIMEOUT)
            conn.send_text("echo after the cap")
            assert conn.recv(timeout=TIMEOUT) == "echo after the cap"
        conn.close()
    finally:
        for sock in idle:
            sock.close()


def test_out_of_descriptors_the_server_pauses_accepting_without_spinning_then_recovers(spawn):
    # A hard limit of 40 descriptors, far below the connection cap: accept()
    # fails with EMFILE while the listener stays readable.
    proc, port = spawn("rawws.echo", "--ping-interval", "0", "--handshake-timeout", "30",
                       max_files=40)
    crowd = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) for _ in range(80)]
    try:
        time.sleep(0.3)
        before = cpu_seconds(proc.pid)
        time.sleep(1.0)
        spent = cpu_seconds(proc.pid) - before
        assert spent < 0.3, f"{spent:.2f} s of CPU in 1 s with accept() failing: spinning"
    finally:
        for sock in crowd:
            sock.close()
    # Descriptors free again: the queued connections are taken and closed, new ones served.
    deadline = time.monotonic() + 10
    while True:
        try:
            with connect(ws_url(port), timeout=TIMEOUT) as ws:
                ws.send_text("served again")
                assert ws.recv(timeout=TIMEOUT) == "served again"
            break
        except (OSError, HandshakeError, ConnectionClosed):
            assert time.monotonic() < deadline, "not served after descriptors came free"
            time.sleep(0.1)
    assert proc.poll() is None


# ---- slow consumers ------------------------------------------------------------------------

def test_a_chat_client_that_never_reads_is_dropped_and_server_memory_stays_bounded(spawn):
    # The chat's default cap on output pending to one connection (1 MiB) is
    # what is tested; no rate limit and long messages, so the talker can
    # push 30 MB of broadcast at the sleeper in a few seconds.
    proc, port = spawn("chat", "--rate", "0", "--max-message-length", "100000",
                       "--log-level", "WARNING")
    sleeper = raw_websocket(port, (V1,), rcvbuf=4096)
    sleeper.sendall(chat_frame(m.JOIN, username="sleeper"))   # then never reads again
    reader = join(port, "reader", version=1)
    talker = join(port, "talker")
    seen: list[dict] = []          # what the reader skipped on the way
    talker_seen: list[dict] = []
    wait_until(lambda: proc_status_kib(proc.pid, "VmRSS") > 0)
    baseline = proc_status_kib(proc.pid, "VmRSS")
    messages = 300
    slowest = 0.0
    for number in range(messages):   # 300 x 100,000 characters: 30 MB to every member
        text = f"{number:03d}" + "x" * 99_997
        sent = time.monotonic()
        send(talker, m.MESSAGE, message=text)
        got = wait_for(reader, m.MESSAGE, seen)["payload"]   # every message, in order, in time
        assert (got["username"], got["message"]) == ("talker", text)
        slowest = max(slowest, time.monotonic() - sent)
        assert wait_for(talker, m.MESSAGE, talker_seen)["payload"]["message"] == text
    seen += drain(reader)
    growth = (proc_status_kib(proc.pid, "VmHWM") - baseline) / 1024
    print(f"\nslow consumer: baseline RSS {baseline / 1024:.1f} MiB, peak +{growth:.1f} MiB "
          f"while {messages * 100_000 / 1e6:.0f} MB were broadcast; slowest delivery "
          f"{slowest * 1000:.0f} ms")
    assert growth < 12, f"server memory grew by {growth:.1f} MiB"
    assert leaves(seen) == ["sleeper"], "the sleeper was dropped once, and its leave broadcast"
    # The sleeper's connection is gone: what it can still read ends in EOF or a reset.
    assert len(read_until_closed(sleeper)) < 16 * MIB
    sleeper.close()
    reader.close()
    talker.close()


def test_output_to_a_websocket_past_max_write_buffer_drops_it_not_others(serve):
    class Firehose(WebSocketApp):
        def on_message(self, ws, message):
            for other in list(server.websockets):
                other.send_binary(message)

    server = serve(Firehose(), max_write_buffer=MIB, read_pause_bytes=256 * 1024)
    sleeper = raw_websocket(server.port, (), rcvbuf=4096)
    with connect(ws_url(server.port), timeout=TIMEOUT) as talker:
        wait_until(lambda: len(server.websockets) == 2)
        chunk = os.urandom(64 * 1024)
        for number in range(320):   # 20 MiB at the sleeper; the talker reads its own copy
            talker.send_binary(chunk)
            assert talker.recv(timeout=TIMEOUT) == chunk
            if len(server.websockets) == 1:
                break
        assert len(server.websockets) == 1, "the sleeper was never dropped"
        assert number * len(chunk) < 16 * MIB   # dropped once past the cap and what the kernel holds
    sleeper.close()


# ---- ping floods and pong storms -----------------------------------------------------------

def test_a_ping_flood_from_a_client_that_never_reads_keeps_the_pong_output_bounded(serve):
    pause = 256 * 1024
    server = serve(read_pause_bytes=pause)
    hog = raw_websocket(server.port, (), rcvbuf=4096)
    hog.settimeout(1.0)
    batch = b"".join(masked(OP_PING, os.urandom(125)) for _ in range(1000))   # 131 KB of pings
    sent, limit = 0, 256 * MIB
    with pytest.raises(TimeoutError):   # sendall blocks: the server stopped reading
        while sent < limit:
            hog.sendall(batch)
            sent += len(batch)
    assert sent < limit
    (conn,) = [c for c in list(server.connections) if hasattr(c.session, "protocol")]
    # Pongs queued: the pause threshold plus the answers to one read's worth of pings.
    assert len(conn.out) < pause + RECV_SIZE + len(batch)
    assert conn.session.protocol._parser.buffered < 2 * RECV_SIZE
    with connect(ws_url(server.port), timeout=TIMEOUT) as other:   # and others are served
        other.send_text("unaffected")
        assert other.recv(timeout=TIMEOUT) == "unaffected"
    reset(hog)


def test_a_pong_storm_is_read_and_answered_with_nothing(serve):
    server = serve()
    sock = raw_websocket(server.port, ())
    storm = b"".join(masked(OP_PONG, b"unsolicited") for _ in range(20_000))
    sock.sendall(storm + masked(OP_TEXT, b"after the storm"))
    parser = FrameParser(require_mask=False)
    while (frame := parser.next_frame()) is None:
        chunk = sock.recv(65536)
        assert chunk, "closed after a pong storm"
        parser.feed(chunk)
    # The first thing back is the echo: §5.5.3, an unsolicited Pong needs no answer.
    assert (frame.opcode, frame.payload) == (OP_TEXT, b"after the storm")
    assert parser.buffered == 0
    sock.close()


# ---- idle connections: keepalive --------------------------------------------------------------

def test_keepalive_off_switch_sends_no_ping_and_keeps_a_silent_peer(spawn):
    # (Pings every interval and 1011 without a pong: tests/test_server.py, keepalive tests.)
    proc, port = spawn("chat", "--ping-interval", "0", "--ping-timeout", "0.1")
    sock = raw_websocket(port)
    sock.settimeout(1.0)
    with pytest.raises(TimeoutError):   # a second of silence from both sides: no ping comes
        sock.recv(1)
    sock.settimeout(TIMEOUT)
    sock.sendall(chat_frame(m.JOIN, username="silent"))
    data = b""
    while b"chat-welcome" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the silent peer was closed"
        data += chunk
    assert all(frame.opcode == OP_TEXT for frame in frames_of(data))
    sock.close()


# ---- fragment floods ----------------------------------------------------------------------

def test_continuation_frames_that_never_finish_get_1009_at_the_message_limit(serve, raw):
    client = raw(serve(max_message_size=64 * 1024))
    client.upgrade()
    client.send(masked(OP_TEXT, b"a" * 1000, fin=False)
                + b"".join(masked(OP_CONTINUATION, b"a" * 1000, fin=False) for _ in range(70)))
    assert client.recv_close()[0] == 1009    # 65,000 bytes pass, the 66th frame does not
    assert client.expect_eof() == b""


def test_a_flood_of_empty_continuations_gets_1009_at_max_fragments(serve, raw):
    # An empty fragment adds nothing to the size: the frame count bounds it
    # (max_fragments: one per 64 bytes of the 1 MiB limit, so 16,384).
    client = raw(serve())
    client.upgrade()
    empty = encode_frame(OP_CONTINUATION, b"", fin=False, mask_key=b"\x01\x02\x03\x04")
    client.send(masked(OP_BINARY, b"x", fin=False) + empty * 20_000)
    assert client.recv_close()[0] == 1009
    assert client.expect_eof() == b""


def tiny_fragments(payload: bytes, size: int = 1) -> bytes:
    """`payload` as one binary message of masked fragments of `size` (1 or 2) bytes."""
    key = os.urandom(4)
    last = (len(payload) - 1) // size
    return b"".join(bytes(((OP_BINARY if index == 0 else OP_CONTINUATION) | (0x80 if index == last else 0),
                           0x80 | size)) + key
                    + bytes(byte ^ key[offset] for offset, byte in enumerate(payload[start:start + size]))
                    for index, start in enumerate(range(0, len(payload), size)))


def test_250k_two_byte_fragments_cost_the_echo_server_their_bytes_not_an_object_each(spawn):
    # Kept as one object per frame, 250,000 two-byte pieces would take
    # 10.8 MiB (a list of them, measured with tracemalloc); joined as they
    # come, about their 500 KB of payload.
    proc, port = spawn("rawws.echo", "--ping-interval", "0")
    payload = bytes(index % 251 for index in range(500_000))
    stream = tiny_fragments(payload, 2)
    with connect(ws_url(port), timeout=TIMEOUT) as ws:
        ws.send_binary(b"warm up")
        assert ws.recv(timeout=TIMEOUT) == b"warm up"
        before = proc_status_kib(proc.pid, "VmHWM")
        ws.sock.sendall(stream)
        assert ws.recv(timeout=30) == payload
        growth = (proc_status_kib(proc.pid, "VmHWM") - before) / 1024
    print(f"\n250,000 fragments (2 MB on the wire): echo server peak +{growth:.1f} MiB")
    assert growth < 5, f"peak memory grew {growth:.1f} MiB for 500 KB in 250,000 fragments"


def echo_cpu(ws, pid: int, frames: bytes, expected: bytes, times: int) -> float:
    """Server CPU seconds to echo `frames` (one message) `times` times."""
    started = cpu_seconds(pid)
    for _ in range(times):
        ws.sock.sendall(frames)
        assert ws.recv(timeout=60) == expected
    return cpu_seconds(pid) - started


@pytest.mark.parametrize("shape", ["one-byte fragments", "16 MiB frames"])
def test_a_big_message_costs_no_more_per_byte_than_four_small_ones(spawn, shape):
    # Not a speed test: the same bytes as one message of 4n or as four
    # messages of n must cost the server about the same CPU time. Quadratic
    # reassembly or copying would make the big one cost four times as much.
    proc, port = spawn("rawws.echo", "--ping-interval", "0")
    if shape == "one-byte fragments":
        small = bytes(index % 251 for index in range(40_000))
        big = bytes(index % 241 for index in range(160_000))
        small_frames, big_frames = tiny_fragments(small), tiny_fragments(big)
    else:
        small, big = os.urandom(4 * MIB), os.urandom(16 * MIB)
        small_frames = encode_frame(OP_BINARY, small, mask_key=os.urandom(4))
        big_frames = encode_frame(OP_BINARY, big, mask_key=os.urandom(4))
    with connect(ws_url(port), timeout=TIMEOUT) as ws:
        echo_cpu(ws, proc.pid, small_frames, small, 1)   # warm up
        ratios = []
        for _ in range(3):
            four_small = echo_cpu(ws, proc.pid, small_frames, small, 4)
            one_big = echo_cpu(ws, proc.pid, big_frames, big, 1)
            ratios.append(one_big / four_small)
            if ratios[-1] < 2.0:
                break
    print(f"\n{shape}: CPU of one message of 4n / four of n = "
          + ", ".join(f"{ratio:.2f}" for ratio in ratios))
    assert min(ratios) < 2.0, f"a message 4 times as big cost {min(ratios):.1f} times as much"


# ---- large messages -------------------------------------------------------------------------

def test_16_mib_messages_echo_intact_whole_and_in_fragments(spawn):
    proc, port = spawn("rawws.echo", "--ping-interval", "0")
    data = os.urandom(16 * MIB)
    text = ("\N{EURO SIGN}" + "a" * 1021) * (16 * 1024)   # 16 MiB of UTF-8, 3-byte characters too
    assert len(text.encode()) == 16 * MIB
    with connect(ws_url(port), timeout=TIMEOUT) as ws:
        before = proc_status_kib(proc.pid, "VmHWM")
        ws.send_binary(data)
        assert ws.recv(timeout=60) == data
        growth = (proc_status_kib(proc.pid, "VmHWM") - before) / 1024
        pieces = 256
        size = len(data) // pieces
        for index in range(pieces):   # 64 KiB fragments
            ws.send_fragment(data[index * size:(index + 1) * size], fin=index == pieces - 1)
        assert ws.recv(timeout=60) == data
        ws.send_text(text)
        assert ws.recv(timeout=60) == text
    # Over the limit: 1009.
    with connect(ws_url(port), timeout=TIMEOUT) as ws:
        ws.send_binary(data + b"!")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=60)
        assert ws.close_code == 1009
    print(f"\n16 MiB echo: the server's peak memory grew by {growth:.1f} MiB")
    # A few copies (the frame received, the message, the frame sent), not one per read.
    assert growth < 5 * 16, f"{growth:.0f} MiB for a 16 MiB echo"


# =============================================================================================
# Input that must not break anything (the parser fuzz tests: tests/test_fuzz*.py)
# =============================================================================================

class Fragile(WebSocketApp):
    """Echoes, except that "boom" raises (on purpose)."""

    def on_message(self, ws, message):
        if message == "boom":
            raise RuntimeError("application bug, raised on purpose by the test")
        ws.send_text(message)


def test_an_app_exception_is_logged_and_closes_that_connection_with_1011_only(serve, caplog):
    server = serve(Fragile())
    caplog.set_level(logging.ERROR, logger="rawws.server")
    with connect(ws_url(server.port), timeout=TIMEOUT) as bystander:
        for round_ in range(20):
            with connect(ws_url(server.port), timeout=TIMEOUT) as victim:
                victim.send_text("boom")
                with pytest.raises(ConnectionClosed):
                    victim.recv(timeout=TIMEOUT)
                assert victim.close_code == 1011
            bystander.send_text(f"round {round_}")
            assert bystander.recv(timeout=TIMEOUT) == f"round {round_}"
    records = [r for r in caplog.records if r.name == "rawws.server" and r.exc_info]
    assert len(records) == 20
    assert all("application error" in r.getMessage() and r.exc_info[0] is RuntimeError
               for r in records)


def test_a_chat_handler_exception_closes_1011_broadcasts_the_leave_and_the_room_goes_on(
        chat_server, monkeypatch):
    server, app = chat_server()
    watcher = join(server.port, "watcher")
    victim = join(server.port, "victim", version=1)
    original = app.room.receive

    def receive(conn, text):
        if "explode" in text:
            raise RuntimeError("room bug, raised on purpose by the test")
        original(conn, text)

    monkeypatch.setattr(app.room, "receive", receive)
    send(victim, m.MESSAGE, message="explode")
    with pytest.raises(ConnectionClosed):
        while True:
            victim.recv(timeout=TIMEOUT)
    assert victim.close_code == 1011
    assert wait_for(watcher, m.LEAVE)["payload"]["username"] == "victim"
    newcomer = join(server.port, "newcomer", version=1)
    send(newcomer, m.MESSAGE, message="life goes on")
    assert wait_for(watcher, m.MESSAGE)["payload"]["message"] == "life goes on"
    for conn in (watcher, newcomer):
        conn.close()


# ---- socket errors at every stage --------------------------------------------------------------

def _half_request(port: int) -> bytes:
    return build_request(f"127.0.0.1:{port}", "/", make_key(), subprotocols=[V2])[:40]


def stage_connect_then_reset(port):
    reset(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT))


def stage_half_request_then_eof(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(_half_request(port))
    sock.close()


def stage_half_request_then_reset(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(_half_request(port))
    reset(sock)


def stage_request_then_reset_before_the_101(port):
    # The server's 101 meets a reset socket (ECONNRESET or EPIPE on its write).
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(build_request(f"127.0.0.1:{port}", "/", make_key(), subprotocols=[V2]))
    reset(sock)


def stage_open_then_reset_before_joining(port):
    reset(raw_websocket(port))


def _joined(port, name):
    sock = raw_websocket(port)
    sock.sendall(chat_frame(m.JOIN, username=name))
    data = b""
    while b"chat-welcome" not in data:
        chunk = sock.recv(65536)
        assert chunk
        data += chunk
    return sock


def stage_joined_then_eof_mid_frame(port):
    sock = _joined(port, "leaver")
    sock.sendall(chat_frame(m.MESSAGE, message="never finished")[:9])
    sock.close()


def stage_joined_then_reset_mid_frame(port):
    sock = _joined(port, "leaver")
    sock.sendall(chat_frame(m.MESSAGE, message="never finished")[:9])
    reset(sock)


def stage_joined_then_eof_mid_frame_header(port):
    sock = _joined(port, "leaver")
    sock.sendall(b"\x81\xfe\x10")   # a 16-bit length cut in half
    sock.shutdown(socket.SHUT_WR)
    read_until_closed(sock)
    sock.close()


def stage_joined_then_reset_after_sending_close(port):
    sock = _joined(port, "leaver")
    sock.sendall(masked(OP_CLOSE, encode_close_payload(1000, "bye")))
    reset(sock)


def stage_joined_then_reset_while_being_sent_to(port):
    # The server has output queued for it when the reset comes: its next
    # send fails (EPIPE or ECONNRESET) instead of its next read.
    sock = raw_websocket(port, rcvbuf=4096)
    sock.sendall(chat_frame(m.JOIN, username="leaver"))
    with open_chat(port) as talker:
        send(talker, m.JOIN, username="talker")
        wait_for(talker, m.WELCOME)
        for number in range(20):
            send(talker, m.MESSAGE, message=f"{number} " + "y" * 9000)
        for _ in range(20):
            wait_for(talker, m.MESSAGE)
        reset(sock)
        time.sleep(0.1)


STAGES = [
    (stage_connect_then_reset, False),
    (stage_half_request_then_eof, False),
    (stage_half_request_then_reset, False),
    (stage_request_then_reset_before_the_101, False),
    (stage_open_then_reset_before_joining, False),
    (stage_joined_then_eof_mid_frame, True),
    (stage_joined_then_reset_mid_frame, True),
    (stage_joined_then_eof_mid_frame_header, True),
    (stage_joined_then_reset_after_sending_close, True),
    (stage_joined_then_reset_while_being_sent_to, True),
]


@pytest.mark.parametrize("stage, joined", STAGES, ids=[stage.__name__[6:] for stage, _ in STAGES])
def test_a_socket_error_at_any_stage_ends_only_that_connection(chat_server, stage, joined):
    server, app = chat_server(handshake_timeout=2.0)
    watcher = join(server.port, "watcher")
    stage(server.port)
    # That connection, and only it, is gone; the watcher hears its leave once if it had joined.
    wait_until(lambda: len(server.connections) == 1, what="the broken connection gone")
    seen = drain(watcher)
    assert [name for name in leaves(seen) if name != "talker"] == (["leaver"] if joined else [])
    assert app.room.users == ["watcher"]
    # The server goes on.
    newcomer = join(server.port, "newcomer", version=1)
    send(newcomer, m.MESSAGE, message="after the break")
    assert wait_for(watcher, m.MESSAGE)["payload"]["message"] == "after the break"
    for conn in (watcher, newcomer):
        conn.close()


# =============================================================================================
# Shutdown and restarts
# =============================================================================================

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_closes_every_websocket_1001_waits_for_the_close_handshakes_and_exits_0(spawn,
                                                                                       signum):
    proc, port = spawn("chat", "--close-timeout", "1.5")
    members = [join(port, f"member {n}", version=1 + n % 2) for n in range(4)]
    silent = raw_websocket(port)    # never answers the server's Close
    started = time.monotonic()
    proc.send_signal(signum)
    for conn in members:
        with pytest.raises(ConnectionClosed):
            while True:
                conn.recv(timeout=TIMEOUT)
        assert conn.close_code == 1001      # the client answered; the server then closed TCP
    frames = frames_of(read_until_closed(silent))
    assert frames[-1].opcode == OP_CLOSE and decode_close_payload(frames[-1].payload)[0] == 1001
    assert proc.wait(TIMEOUT) == 0
    elapsed = time.monotonic() - started
    # It waited for the silent one up to the grace period, then went.
    assert 1.0 < elapsed < 1.5 + 3, elapsed
    for conn in members:
        conn.close()
    silent.close()


def test_a_signal_exits_at_once_when_every_close_handshake_completes(spawn):
    proc, port = spawn("chat", "--close-timeout", "5")
    members = [join(port, f"member {n}") for n in range(3)]
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    for conn in members:
        with pytest.raises(ConnectionClosed):
            while True:
                conn.recv(timeout=TIMEOUT)
        assert conn.close_code == 1001
    assert proc.wait(TIMEOUT) == 0
    assert time.monotonic() - started < 3, "it waited for the grace period with nothing to wait for"


def time_wait_on(port: int) -> int:
    """Sockets in TIME_WAIT (state 06) with local port `port`, from /proc/net/tcp."""
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "06":
                count += 1
    return count


def test_a_restart_binds_the_same_port_at_once_despite_connections_in_time_wait(spawn):
    proc, port = spawn("chat")
    peers = [raw_websocket(port) for _ in range(5)]
    proc.send_signal(signal.SIGTERM)
    for sock in peers:
        # Each peer answers the server's Close 1001 and, as §7.1.1 asks of a
        # client, waits for the server to close TCP first.
        parser = FrameParser(require_mask=False)
        while (frame := parser.next_frame()) is None:
            chunk = sock.recv(65536)
            assert chunk, "closed without a Close frame"
            parser.feed(chunk)
        assert frame.opcode == OP_CLOSE and decode_close_payload(frame.payload)[0] == 1001
        sock.sendall(masked(OP_CLOSE, frame.payload[:2]))
        assert read_until_closed(sock) == b""
        sock.close()
    assert proc.wait(TIMEOUT) == 0
    # The server closed first, so its side of each connection is in TIME_WAIT...
    assert time_wait_on(port) >= len(peers)
    # ...which stops a listener without SO_REUSEADDR from binding the port...
    plain = socket.socket()
    with pytest.raises(OSError) as in_use:
        plain.bind(("127.0.0.1", port))
    plain.close()
    assert in_use.value.errno == errno.EADDRINUSE
    # ...but not the server: it binds at once and serves.
    restarted, same_port = spawn("chat", port=port)
    assert same_port == port
    join(port, "after the restart").close()


def test_a_slow_download_that_keeps_reading_outlives_the_handshake_timeout(serve, tmp_path):
    # The timeout ends connections that stall, not a large file read slowly.
    size = 8 * 1024 * 1024
    (tmp_path / "big.bin").write_bytes(os.urandom(size))
    server = serve(web_root=tmp_path, handshake_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = 0
        started = time.monotonic()
        while chunk := sock.recv(64 * 1024):
            received += len(chunk)
            time.sleep(0.005)          # ~13 MB/s at most: well over 0.5 s for 8 MiB
            assert time.monotonic() - started < 30
    assert time.monotonic() - started > 0.5
    assert received > size            # the head and the whole body came
