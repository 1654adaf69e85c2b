"""Shared fixtures for the tests that run over real sockets on 127.0.0.1.

* `serve(app=None, **server_kwargs)` starts a `rawws.net.server.Server` in a
  thread (an echo server by default, keepalive pings off) and shuts it down
  after the test.
* `chat_server(limits=None, allowed_origins=None, **server_kwargs)` starts
  the chat the same way, returning (server, app).
* `raw(server_or_port)` opens a `RawClient`: a plain TCP socket that speaks
  the WebSocket protocol by hand, so a test can send what `rawws.net.client`
  never would (unmasked frames, bad UTF-8, silence) and read every byte the
  server answers. Raw sockets are closed before the servers shut down.
* `tls_certs` (session): a throwaway CA and certificates for 127.0.0.1 and
  localhost, made with the `openssl` command (tests/tls_certs.py).

Every socket has a timeout of a few seconds, so no test can hang.
"""
from __future__ import annotations

import os
import shutil
import socket
import struct

import pytest

from chat.app import ChatApp
from rawws.echo import EchoApp
from rawws.frames import OP_CLOSE, Frame, FrameParser, decode_close_payload, encode_frame
from rawws.handshake import accept_key, build_request, make_key
from rawws.http import Response, find_head_end, parse_response_head
from rawws.net.server import Server, WebSocketApp, run_in_thread

try:
    from tests.tls_certs import Certificates, make_certificates
except ImportError:                      # tests/ run as a rootdir, not a package
    from tls_certs import Certificates, make_certificates

SOCKET_TIMEOUT = 5.0


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory) -> Certificates:
    """A CA and server certificates in a temporary folder, for the whole run."""
    if shutil.which("openssl") is None:
        reason = "no openssl command to make test certificates (apt-get install openssl)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def serve():
    """Factory: serve(app=None, **kwargs) -> a running Server on an ephemeral port."""
    started: list = []

    def start(app: WebSocketApp | None = None, **kwargs) -> Server:
        kwargs.setdefault("ping_interval", None)
        kwargs.setdefault("close_timeout", 1.0)
        kwargs.setdefault("linger_timeout", 1.0)
        server = Server(app if app is not None else EchoApp(), port=0, **kwargs)
        started.append((server, run_in_thread(server)))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
    for server, thread in started:
        thread.join(10)
        assert not thread.is_alive(), "server thread did not stop after shutdown()"


@pytest.fixture
def chat_server(serve, tmp_path):
    """Factory: chat_server(limits=None, allowed_origins=None, **server_kwargs) -> (server, app)."""
    (tmp_path / "index.html").write_text("<!doctype html><title>chat</title>")

    def start(limits=None, allowed_origins=None, **server_kwargs):
        app = ChatApp(limits=limits, allowed_origins=allowed_origins)
        return serve(app, web_root=tmp_path, **server_kwargs), app

    return start


class RawClient:
    """A TCP connection driven by hand: HTTP requests, then WebSocket frames."""

    def __init__(self, port: int, timeout: float = SOCKET_TIMEOUT) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = bytearray()   # received bytes not yet parsed as HTTP
        self.frames = FrameParser(require_mask=False, max_frame_size=1 << 62)

    # ---- HTTP ------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_response(self, *, head: bool = False) -> tuple[Response, bytes]:
        """One HTTP response: the head, then a Content-Length body (none for HEAD)."""
        while (end := find_head_end(self.buffer)) == -1:
            self._fill()
        response = parse_response_head(bytes(self.buffer[:end]))
        del self.buffer[:end]
        length = 0
        if not head and response.status >= 200 and response.status not in (204, 304):
            length = int(response.headers.get("Content-Length", "0"))
        while len(self.buffer) < length:
            self._fill()
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        if response.status == 101:   # what follows is WebSocket frames
            self.frames.feed(bytes(self.buffer))
            self.buffer.clear()
        return response, body

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by the server")
        self.buffer += chunk

    def upgrade(self, path: str = "/", *, headers: list[tuple[str, str]] = (),
                subprotocols: list[str] = (), origin: str | None = None,
                extra: bytes = b"") -> Response:
        """The opening handshake; `extra` is sent in the same packet (first frames)."""
        key = make_key()
        request = build_request(f"127.0.0.1:{self.port}", path, key, subprotocols=subprotocols,
                                origin=origin, extra_headers=headers)
        self.sock.sendall(request + extra)
        response, _ = self.read_response()
        assert response.status == 101, response
        assert response.headers.get("Sec-WebSocket-Accept") == accept_key(key)
        return response

    # ---- WebSocket ---------------------------------------------------------

    def send_frame(self, opcode: int, payload: bytes = b"", *, fin: bool = True,
                   masked: bool = True) -> None:
        key = os.urandom(4) if masked else None
        self.sock.sendall(encode_frame(opcode, payload, fin=fin, mask_key=key))

    def recv_frame(self) -> Frame:
        """The next frame from the server; EOFError if the connection ends first."""
        while (frame := self.frames.next_frame()) is None:
            chunk = self.sock.recv(262144)
            if not chunk:
                raise EOFError("connection closed by the server")
            self.frames.feed(chunk)
        return frame

    def recv_close(self) -> tuple[int, str]:
        """Skip data frames until the server's Close; return its (code, reason)."""
        while (frame := self.recv_frame()).opcode != OP_CLOSE:
            pass
        return decode_close_payload(frame.payload)

    def expect_eof(self) -> bytes:
        """Read until the server closes TCP (within the socket timeout); return what came."""
        data = bytearray(self.buffer)
        self.buffer.clear()
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return bytes(data)
            if not chunk:
                return bytes(data)
            data += chunk

    def reset(self) -> None:
        """Close with a TCP RST instead of a FIN (SO_LINGER on, timeout 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(serve):
    """Factory: raw(server_or_port, timeout=5.0) -> RawClient, closed after the test."""
    clients: list[RawClient] = []

    def open_client(target: Server | int, timeout: float = SOCKET_TIMEOUT) -> RawClient:
        port = target if isinstance(target, int) else target.port
        client = RawClient(port, timeout)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()
