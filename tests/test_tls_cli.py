"""TLS from the command line (CONTRACT.md, "TLS: https:// and wss:// on the same port").

`python -m chat --certfile` and `python -m rawws.echo --certfile` in
subprocesses: the `Serving on` line, a bad certificate or key as one line
and a non-zero exit, SIGTERM sending Close 1001 over TLS; and
`python -m chat.client wss://... --cafile`.
"""
from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chat import messages as m
from rawws.errors import ConnectionClosed
from rawws.net.client import connect
from rawws.net.tls import client_context

ROOT = Path(__file__).resolve().parent.parent
WAIT = 10.0
SERVERS = {"chat": ("chat", "https"), "echo": ("rawws.echo", "wss")}


class Process:
    """A server started with `--port 0`; its `Serving on` line read, its output drained."""

    def __init__(self, module: str, *args: str) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0", *args],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))
            self.lines.put(line.strip())
        self.lines.put(None)

    def serving_line(self) -> str:
        deadline = time.monotonic() + WAIT
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            assert line is not None, "exited at start:\n" + "\n".join(self.output)
            if line.startswith("Serving on "):
                return line

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=WAIT)
        return self.process.returncode


@pytest.fixture
def start():
    started: list[Process] = []

    def run(module: str, *args: str) -> Process:
        process = Process(module, *args)
        started.append(process)
        return process

    yield run
    for process in started:
        process.stop()


def run_to_exit(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0",
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_with_a_certificate_the_server_says_it_serves_tls(start, tls_certs, server):
    module, scheme = SERVERS[server]
    line = start(module, "--certfile", str(tls_certs.cert),
                 "--keyfile", str(tls_certs.key)).serving_line()
    assert line.startswith(f"Serving on {scheme}://127.0.0.1:") and line.endswith("/")


@pytest.mark.parametrize("server", sorted(SERVERS))
@pytest.mark.parametrize("case", ["missing file", "mismatched key"])
def test_a_bad_certificate_is_one_line_and_a_non_zero_exit(tls_certs, tmp_path, server, case):
    module, _ = SERVERS[server]
    files = {"missing file": [str(tmp_path / "no-such.pem")],
             "mismatched key": [str(tls_certs.cert), "--keyfile", str(tls_certs.wrong_host_key)]}
    result = run_to_exit(module, "--certfile", *files[case])
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, result.stderr
    assert "Serving on" not in result.stdout


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_sigterm_over_tls_sends_close_1001_and_exits_0(start, tls_certs, server):
    module, _ = SERVERS[server]
    process = start(module, "--certfile", str(tls_certs.combined))
    port = int(process.serving_line().rsplit(":", 1)[1].rstrip("/"))
    ws = connect(f"wss://127.0.0.1:{port}/", subprotocols=[m.PROTOCOL_V2],
                 ssl_context=client_context(tls_certs.ca), timeout=WAIT)
    ws.send_text('{"type": "chat-join", "payload": {"username": "tls"}}')
    ws.recv(timeout=WAIT)   # the echo, or the chat's welcome: the server is serving it
    process.process.send_signal(signal.SIGTERM)
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=WAIT)
    assert closed.value.code == 1001
    assert process.process.wait(timeout=WAIT) == 0


def chat_client(url: str, *args: str, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chat.client", url, *args], cwd=ROOT,
                          input=stdin, capture_output=True, text=True, timeout=30)


def test_the_terminal_client_chats_over_wss_trusting_a_cafile(start, tls_certs):
    process = start("chat", "--certfile", str(tls_certs.cert), "--keyfile", str(tls_certs.key))
    url = f"wss://127.0.0.1:{process.serving_line().rsplit(':', 1)[1]}"
    with connect(url, subprotocols=[m.PROTOCOL_V2], ssl_context=client_context(tls_certs.ca),
                 timeout=WAIT) as watcher:
        watcher.send_text('{"type": "chat-join", "payload": {"username": "watcher"}}')
        result = chat_client(url, "--cafile", str(tls_certs.ca), "--name", "Beej",
                             stdin="Hello over TLS\n/quit\n")
        assert result.returncode == 0, result.stderr
        assert "* joined as Beej" in result.stdout
        deadline = time.monotonic() + WAIT
        while True:
            message = json.loads(watcher.recv(timeout=max(0.0, deadline - time.monotonic())))
            if message["type"] == m.MESSAGE:
                break
    assert (message["payload"]["username"], message["payload"]["message"]) == (
        "Beej", "Hello over TLS")


def test_the_terminal_client_refuses_a_certificate_it_cannot_verify(start, tls_certs):
    process = start("chat", "--certfile", str(tls_certs.cert), "--keyfile", str(tls_certs.key))
    port = process.serving_line().rsplit(":", 1)[1].rstrip("/")
    result = chat_client(f"wss://127.0.0.1:{port}/", "--name", "Beej", stdin="/quit\n")
    assert result.returncode != 0
    assert "not trusted" in result.stderr and "Traceback" not in result.stderr
