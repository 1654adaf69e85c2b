"""`python -m rawws.echo`: the process (banner, signals, exit status) and the echo on the wire."""
from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from rawws.net.client import connect
from rawws.echo import EchoApp
from rawws.errors import ConnectionClosed
from rawws.frames import OP_BINARY, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT
from rawws.protocol import CloseReceived

ROOT = Path(__file__).resolve().parent.parent
BANNER = re.compile(r"Serving on ws://127\.0\.0\.1:(\d+)/")


@contextmanager
def echo_process(*args: str):
    """Run `python -m rawws.echo --port 0 ARGS`; yield (process, port) once it has printed its banner."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "rawws.echo", "--port", "0", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "the echo server printed nothing within 20 s"
        line = proc.stdout.readline()
        match = BANNER.fullmatch(line.rstrip("\n"))
        assert match, f"unexpected first line {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        port = int(match.group(1))
        assert port != 0
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def wait_exit(proc: subprocess.Popen, timeout: float = 10) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the echo server did not exit within {timeout} s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_sends_close_1001_and_exits_0(signum):
    with echo_process() as (proc, port):
        url = f"ws://127.0.0.1:{port}/"
        with connect(url) as first, connect(url) as second:
            first.send_text("hello")
            assert first.recv(timeout=5) == "hello"
            second.send_binary(b"\x00" * 100_000)
            assert second.recv(timeout=5) == b"\x00" * 100_000
            proc.send_signal(signum)
            for ws in (first, second):
                event = ws.recv_event(timeout=5)
                assert isinstance(event, CloseReceived)
                assert event.code == 1001
                with pytest.raises(ConnectionClosed):
                    ws.recv(timeout=5)
        assert wait_exit(proc) == 0
        assert "Traceback" not in proc.stderr.read()


def test_signal_right_after_banner_exits_0():
    # A script may signal the server as soon as it has read the port.
    with echo_process() as (proc, _port):
        proc.send_signal(signal.SIGTERM)
        assert wait_exit(proc) == 0


def test_signal_exits_0_even_if_a_client_never_answers_close():
    # The server waits its close timeout (5 s) for the Close, then exits anyway.
    import socket

    from rawws.handshake import build_request, make_key

    with echo_process() as (proc, port):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            sock.sendall(build_request(f"127.0.0.1:{port}", "/", make_key()))
            assert sock.recv(4096).startswith(b"HTTP/1.1 101 ")
            proc.send_signal(signal.SIGTERM)
            close = sock.recv(4096)                       # Close (0x88), unmasked, code 1001
            assert close[0] == 0x88 and close[1] == len(close) - 2 and close[2:4] == b"\x03\xe9"
            started = time.monotonic()
            assert wait_exit(proc, 15) == 0
            assert time.monotonic() - started < 12
        finally:
            sock.close()


def test_echo_process_defaults_and_options():
    # The defaults take a 16 MiB message; --max-message-size lowers the limit.
    with echo_process() as (proc, port):
        with connect(f"ws://127.0.0.1:{port}/any/path") as ws:
            data = os.urandom(16 * 1024 * 1024)
            ws.send_binary(data)
            assert ws.recv(timeout=30) == data
    with echo_process("--max-message-size", "1000", "--ping-interval", "0") as (proc, port):
        with connect(f"ws://127.0.0.1:{port}/") as ws:
            ws.send_binary(bytes(1000))
            assert ws.recv(timeout=5) == bytes(1000)
            ws.send_binary(bytes(1001))
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=5)
            assert ws.close_code == 1009


# ---- the echo, frame by frame ----

def test_fragmented_message_comes_back_as_one_frame(serve, raw):
    client = raw(serve(EchoApp()))
    client.upgrade()
    client.send_frame(OP_TEXT, "frag".encode(), fin=False)
    client.send_frame(OP_PING, b"between")
    client.send_frame(OP_CONTINUATION, "ment é".encode(), fin=False)
    client.send_frame(OP_CONTINUATION, b"", fin=True)
    pong = client.recv_frame()
    assert (pong.opcode, pong.payload) == (OP_PONG, b"between")
    echo = client.recv_frame()
    assert (echo.opcode, echo.fin, echo.payload) == (OP_TEXT, True, "fragment é".encode())


def test_binary_and_text_keep_their_type(serve, raw):
    client = raw(serve(EchoApp()))
    client.upgrade()
    client.send_frame(OP_BINARY, b"\xff\xfe")
    client.send_frame(OP_TEXT, b"")
    first, second = client.recv_frame(), client.recv_frame()
    assert (first.opcode, first.payload) == (OP_BINARY, b"\xff\xfe")
    assert (second.opcode, second.payload) == (OP_TEXT, b"")


def test_unsolicited_pong_is_ignored(serve, raw):
    client = raw(serve(EchoApp()))
    client.upgrade()
    client.send_frame(OP_PONG, b"nobody asked")
    client.send_frame(OP_TEXT, b"next")
    frame = client.recv_frame()
    assert (frame.opcode, frame.payload) == (OP_TEXT, b"next")
