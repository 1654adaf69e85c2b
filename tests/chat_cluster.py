"""Helpers for tests of several chat servers: processes, clients, health.

    server = ChatProcess("--backplane", redis.url)      # python -m chat --port 0 ...
    ada = ChatClient(server.port, 2, "Ada")            # joined (v2: welcomed)
    ada.say("hi"); ada.wait_for(lambda msg: ...)
    server.health()                                    # GET /healthz as a dict

Every wait is bounded (WAIT seconds unless told); every process is stopped
by `stop()` (SIGTERM, then SIGKILL) and every client closed by its owner.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from chat.messages import PROTOCOL_V1, PROTOCOL_V2
from rawws.net.client import connect

ROOT = Path(__file__).resolve().parent.parent
WAIT = 15.0


class ChatProcess:
    """`python -m chat` (any options) in a subprocess, its output kept in `output`."""

    def __init__(self, *args: str, port: int = 0, start: bool = True) -> None:
        self.args = args
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chat", "--host", "127.0.0.1", "--port", str(port),
             "--ping-interval", "0", *args],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()
        self.port = 0
        if start:
            self.wait_serving()

    def _drain(self) -> None:
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))
            self._lines.put(line.strip())
        self._lines.put(None)

    def wait_serving(self, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise TimeoutError(f"no 'Serving on' line:\n{self.log}") from None
            if line is None:
                self.stop()
                raise RuntimeError(f"the chat server exited at start:\n{self.log}")
            if line.startswith("Serving on http://"):
                self.port = int(line.rstrip("/").rsplit(":", 1)[1])
                return

    @property
    def log(self) -> str:
        return "\n".join(self.output[-40:])

    def lines(self, text: str) -> list[str]:
        return [line for line in self.output if text in line]

    def health(self) -> dict:
        return health(self.port)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode


def health(port: int, timeout: float = 5.0) -> dict:
    """GET /healthz on a fresh connection: {"httpStatus": ..., **the JSON body}."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return {"httpStatus": status, **json.loads(body)}


def wait_until(condition: Callable[[], object], timeout: float = WAIT, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or condition}")
        time.sleep(0.05)


class ChatClient:
    """A chat connection (v1 or v2); `name` joins at once (v2: waits for the welcome)."""

    def __init__(self, port: int, version: int, name: str | None = None) -> None:
        self.version = version
        self.ws = connect(f"ws://127.0.0.1:{port}/",
                          subprotocols=[PROTOCOL_V2 if version == 2 else PROTOCOL_V1])
        self.received: list[dict] = []
        self.name = name
        if name is not None:
            self.send("chat-join", username=name)
            if version == 2:
                welcome = self.wait_for(lambda msg: msg["type"] in ("chat-welcome", "chat-error"))
                assert welcome["type"] == "chat-welcome", welcome
                self.name = welcome["payload"]["username"]
            else:
                joined = self.wait_for(lambda msg: msg["type"] == "chat-join"
                                       and msg["payload"]["username"].startswith(name))
                self.name = joined["payload"]["username"]

    def send(self, kind: str, **payload: object) -> None:
        self.ws.send_text(json.dumps({"type": kind, "payload": payload}))

    def say(self, text: str) -> None:
        if self.version == 1:
            self.send("chat-message", username=self.name, message=text)
        else:
            self.send("chat-message", message=text)

    def _read(self, timeout: float) -> bool:
        try:
            text = self.ws.recv(timeout=timeout)
        except (TimeoutError, socket.timeout):
            return False
        self.received.append(json.loads(text))
        return True

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = WAIT) -> dict:
        """The first message received (ever) that matches, reading more until one does."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for msg in self.received[checked:]:
                if predicate(msg):
                    return msg
            checked = len(self.received)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: nothing matched within {timeout:g} s; "
                                     f"last received: {self.received[-5:]}")
            self._read(min(remaining, 0.5))

    def wait_text(self, text: str, timeout: float = WAIT) -> dict:
        return self.wait_for(lambda msg: msg["type"] == "chat-message"
                             and msg["payload"]["message"] == text, timeout)

    def texts(self) -> list[str]:
        return [msg["payload"]["message"] for msg in self.received
                if msg["type"] == "chat-message"]

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass
