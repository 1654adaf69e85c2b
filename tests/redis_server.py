"""A real redis-server for tests: started on a free 127.0.0.1 port in a
temporary directory, with nothing saved to disk, stopped after the test.

    from tests.redis_server import redis_server   # the fixture

    def test_something(redis_server):
        server = redis_server()        # a RedisServer, answering PING
        server.url                     # "redis://127.0.0.1:PORT/0"
        server.stop(); server.start()  # the same port again

When Debian's redis-server is not installed the test is skipped, saying so,
except under CI=true, where the machine is meant to have it (.ci/run
installs it) and its absence fails the test.

Kept out of conftest.py on purpose: several test files import it.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def redis_server_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ping(port: int, timeout: float = 1.0) -> bool:
    """Whether a Redis on 127.0.0.1:port answers PING with +PONG (a plain blocking socket)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            answer = b""
            while not answer.endswith(b"\r\n"):
                chunk = sock.recv(64)
                if not chunk:
                    return False
                answer += chunk
            return answer == b"+PONG\r\n"
    except OSError:
        return False


class RedisServer:
    """One redis-server process; `start()` again after `stop()` reuses the port."""

    def __init__(self, binary: str, directory: Path, port: int | None = None) -> None:
        self.binary = binary
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = directory / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.directory),
             "--daemonize", "no", "--logfile", str(self.log_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}: "
                                   f"{self.log_tail()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM, and wait for the process to end (SIGKILL past STOP_TIMEOUT)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@pytest.fixture
def redis_server(tmp_path_factory):
    """Factory: redis_server() -> a running RedisServer; every one is stopped after the test."""
    binary = redis_server_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (CI=true: .ci/run should have installed it)")
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    started: list[RedisServer] = []

    def start() -> RedisServer:
        for attempt in range(3):   # a free port may be taken before redis-server binds it
            server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
            started.append(server)
            try:
                server.start()
                return server
            except RuntimeError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    yield start
    for server in started:
        server.stop()
