"""An audit of the chat server against /work/shared/CONTRACT.md, over real sockets.

Each test names the promise it checks. The server under test is the real
command, `python -m chat --port 0 ...`, in a subprocess; the clients are raw
sockets that do the handshake and the framing by hand (rawws.handshake,
rawws.frames), so nothing in the client can hide what the server sends.
Promises already covered in tests/test_chat_server.py are not repeated here.

Every wait is bounded: sockets have timeouts, loops have deadlines or counts,
and every server is stopped with SIGTERM (then killed) after its test. After
each test the server's log must hold no traceback (an application error is
logged with one) and SIGTERM must still end it with status 0.
"""
from __future__ import annotations

import itertools
import json
import os
import resource
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from chat import messages as m
from rawws.frames import (OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, RSV1_BIT,
                          FrameParser, decode_close_payload, encode_close_payload, encode_frame)
from rawws.handshake import accept_key, build_request, make_key
from rawws.http import find_head_end, parse_response_head

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 5.0
V1, V2 = m.PROTOCOL_V1, m.PROTOCOL_V2
PROTOCOLS = {1: (V1,), 2: (V2,)}
INDEX_MARK = b"<!-- contract-index -->"   # in the test web root's index.html
SECRET_MARK = b"contract-secret-outside-the-root"

# The defaults of docs/protocol.md that these tests lean on.
MAX_MESSAGE_LENGTH = 10000
BURST = 40
FLOOD_KICK = 100
MAX_WS_MESSAGE = 128 * 1024


# --- the server under test: `python -m chat` ------------------------------------------------

class ChatProcess:
    """`python -m chat --port 0 ARGS...` in a subprocess, with its stderr in a file."""

    def __init__(self, log_path: Path, args: tuple[str, ...]) -> None:
        env = dict(os.environ,
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.log_path = log_path
        self.log = open(log_path, "w+", encoding="utf-8", errors="replace")
        self.proc = subprocess.Popen([sys.executable, "-m", "chat", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL, cwd="/", env=env)
        self.peers: list[Peer] = []
        line = b""
        deadline = time.monotonic() + 2 * TIMEOUT
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, remaining))
            if not ready:
                self.kill()
                pytest.fail(f"python -m chat printed no Serving line: {line!r}\n{self.stderr()}")
            chunk = os.read(self.proc.stdout.fileno(), 1)
            if not chunk:
                self.kill()
                pytest.fail(f"python -m chat exited before its Serving line\n{self.stderr()}")
            line += chunk
        text = line.decode()
        assert text.startswith("Serving on http://127.0.0.1:"), text
        self.port = int(text.rsplit(":", 1)[1].strip("/\n"))

    def peer(self, protocols=(V2,), **options) -> Peer:
        peer = Peer(self.port, protocols, **options)
        self.peers.append(peer)
        return peer

    def stderr(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the server and wait for it to exit; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(3 * TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"python -m chat did not exit after signal {signum}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)

    def finish(self) -> None:
        """End of test: drop the clients, stop the server, check it ended well."""
        for peer in self.peers:
            peer.drop()
        try:
            status = self.stop()
            log = self.stderr()
            assert status == 0, f"python -m chat exited {status}\n{log}"
            assert "Traceback" not in log, log
        finally:
            self.kill()
            self.proc.stdout.close()
            self.log.close()


@pytest.fixture
def chat(tmp_path):
    """chat(*args) -> a running ChatProcess; stopped (and checked) after the test."""
    started: list[ChatProcess] = []

    def start(*args: str) -> ChatProcess:
        server = ChatProcess(tmp_path / f"chat-{len(started)}.log", args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.finish()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A web root with an index.html, a secret file beside it (outside the
    root), and symlinks in the root that point out of it."""
    base = tmp_path_factory.mktemp("contract-site")
    root = base / "www"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_bytes(b"<!doctype html><title>chat</title>" + INDEX_MARK)
    (root / "sub" / "page.txt").write_text("inside\n")
    (base / "secret.txt").write_bytes(SECRET_MARK + b"\n")
    (base / "outside").mkdir()
    (base / "outside" / "secret2.txt").write_bytes(SECRET_MARK + b"\n")
    (root / "link.txt").symlink_to(base / "secret.txt")
    (root / "linkdir").symlink_to(base / "outside", target_is_directory=True)
    return base


@pytest.fixture(scope="module")
def shared(site, tmp_path_factory):
    """One `python -m chat --root <site>/www` for the tests that never touch the room."""
    server = ChatProcess(tmp_path_factory.mktemp("contract-shared") / "chat.log",
                         ("--host", "127.0.0.1", "--root", str(site / "www")))
    yield server
    server.finish()


# --- a chat client over a raw socket --------------------------------------------------------

BARRIER = "contract-barrier-"


def barrier_token(msg: object) -> str | None:
    """The token of a `Peer.barrier` message (a v1 chat-message, a v2 chat-error), else None."""
    payload = msg.get("payload") if isinstance(msg, dict) else None
    if not isinstance(payload, dict):
        return None
    if msg.get("type") == m.MESSAGE:
        text = payload.get("message")
    elif msg.get("type") == m.ERROR:
        text = payload.get("type")
    else:
        return None
    return text if isinstance(text, str) and text.startswith(BARRIER) else None


class Closed(Exception):
    """The server's Close frame came (or TCP ended) while a message was awaited."""


class Peer:
    """One WebSocket connection driven by hand.

    The handshake is built with rawws.handshake and checked here; frames out
    are masked with a fresh key each; every data message that comes in is
    kept in `log` as (opcode, decoded JSON or raw data), in order.
    """

    _markers = itertools.count(1)

    def __init__(self, port: int, protocols=(V2,), *, path: str = "/", host: str | None = None,
                 origin: str | None = None, headers=(), rcvbuf: int | None = None,
                 timeout: float = TIMEOUT) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:   # before connect, so the window is small from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = make_key()
        self.sock.sendall(build_request(host or f"127.0.0.1:{port}", path, key,
                                        subprotocols=protocols, origin=origin,
                                        extra_headers=headers))
        buffer = bytearray()
        while (end := find_head_end(buffer)) == -1:
            assert len(buffer) < 65536, "response head too long"
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed during the handshake: {bytes(buffer)!r}"
            buffer += chunk
        self.response = parse_response_head(bytes(buffer[:end]))
        assert self.response.status == 101, (self.response.status, bytes(buffer))
        assert self.response.headers.get("Sec-WebSocket-Accept") == accept_key(key)
        self.subprotocol = self.response.headers.get("Sec-WebSocket-Protocol")
        assert self.subprotocol in protocols
        self.version = m.VERSION_OF[self.subprotocol]
        self.parser = FrameParser(require_mask=False, max_frame_size=1 << 40)
        # permessage-deflate, when the offer (a browser's, in `headers`) was
        # taken: the chat resets its window for every message (RFC 7692 §7.1.1.1).
        self.compressed = bool(self.response.headers.get_all("Sec-WebSocket-Extensions"))
        if self.compressed:
            self.parser.allowed_rsv_bits = RSV1_BIT
        self.parser.feed(bytes(buffer[end:]))
        self.log: list[tuple[int, object]] = []
        self.name: str | None = None
        self.close_code: int | None = None
        self.close_sent = False
        self.eof = False
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0

    # ---- sending ---------------------------------------------------------

    def send_frame(self, opcode: int, payload: bytes = b"", *, fin: bool = True,
                   masked: bool = True) -> None:
        self.sock.sendall(encode_frame(opcode, payload, fin=fin,
                                       mask_key=os.urandom(4) if masked else None))

    def send_text(self, text: str) -> None:
        self.send_frame(OP_TEXT, text.encode("utf-8", "surrogatepass"))

    def send_texts(self, texts) -> None:
        """Several text messages in one write: they reach the server at once."""
        self.sock.sendall(b"".join(encode_frame(OP_TEXT, text.encode("utf-8"),
                                                mask_key=os.urandom(4)) for text in texts))

    def send_json(self, kind: str, **payload) -> None:
        self.send_text(json.dumps({"type": kind, "payload": payload}))

    def say(self, text: str, **extra) -> None:
        self.send_json(m.MESSAGE, message=text, **extra)

    # ---- receiving ---------------------------------------------------------

    def _frame(self, deadline: float):
        while (frame := self.parser.next_frame()) is None:
            if self.eof:
                raise EOFError("the server closed TCP")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("nothing from the server in time")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(262144)
            except (socket.timeout, TimeoutError):
                raise TimeoutError("nothing from the server in time") from None
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.eof = True
            else:
                self.parser.feed(chunk)
        return frame

    def message(self, timeout: float = TIMEOUT, *, pongs: bool = False) -> tuple[int, bytes]:
        """The next data message (opcode, payload); control frames are handled
        here, except that with `pongs` a Pong is returned as (OP_PONG, payload)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                frame = self._frame(deadline)
            except EOFError:
                raise Closed("TCP closed without a Close frame") from None
            if frame.opcode == OP_PING:
                self.send_frame(OP_PONG, frame.payload)
            elif frame.opcode == OP_PONG:
                if pongs:
                    return OP_PONG, frame.payload
            elif frame.opcode == OP_CLOSE:
                self.close_code, reason = decode_close_payload(frame.payload)
                self._reply_close()
                raise Closed(f"Close {self.close_code} {reason!r}")
            elif frame.opcode == OP_CONTINUATION:
                self._fragments.append(frame.payload)
                if frame.fin:
                    payload = b"".join(self._fragments)
                    self._fragments = []
                    return self._fragment_opcode, payload
            elif not frame.fin:
                self._fragment_opcode, self._fragments = frame.opcode, [frame.payload]
            elif frame.rsv1:
                inflater = zlib.decompressobj(-15)
                return frame.opcode, inflater.decompress(frame.payload + b"\x00\x00\xff\xff")
            else:
                return frame.opcode, frame.payload

    def _next(self, deadline: float) -> tuple[bool, object]:
        """The next message: (False, JSON) for an ordinary one, (True, token)
        for a barrier's own (see `barrier`), which is kept out of `log`."""
        opcode, payload = self.message(max(0.0, deadline - time.monotonic()))
        assert opcode == OP_TEXT, f"the chat server sent a binary message: {payload[:80]!r}"
        value = json.loads(payload.decode("utf-8"))
        if self.version == 1:
            assert_the_original_client_can_render(opcode, value)
        else:
            assert_documented_v2(value)
        token = barrier_token(value)
        if token is not None:
            return True, token
        self.log.append((opcode, value))
        return False, value

    def recv(self, timeout: float = TIMEOUT) -> dict:
        """The next message as JSON (barriers' skipped); it is also appended to `log`."""
        deadline = time.monotonic() + timeout
        while True:
            is_barrier, value = self._next(deadline)
            if not is_barrier:
                return value

    def expect(self, kind: str, timeout: float = TIMEOUT, **fields) -> dict:
        """Skip messages until one of type `kind` whose payload has `fields`."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.0, deadline - time.monotonic()))
            payload = msg.get("payload") if isinstance(msg, dict) else None
            if msg.get("type") == kind and all(
                    isinstance(payload, dict) and payload.get(k) == v for k, v in fields.items()):
                return msg

    def until(self, predicate, timeout: float = TIMEOUT) -> list[dict]:
        """Messages up to and including the first for which `predicate` holds."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            msg = self.recv(max(0.0, deadline - time.monotonic()))
            seen.append(msg)
            if predicate(msg):
                return seen

    def barrier(self, timeout: float = TIMEOUT) -> list[dict]:
        """A round trip in order with this connection's messages: the messages
        the server sent this connection up to it (the barrier's own left out).

        The server handles one connection's messages in order and queues a
        broadcast to every recipient at once, so after `sender.barrier()` a
        `watcher.barrier()` returns all that the sender's earlier messages
        made the server send the watcher. v2: an unknown type, whose
        chat-error comes to this connection alone. v1 has no such answer: a
        chat-message, which every joined connection gets, and drops unread.
        A WebSocket Ping would not do: the server queues the Pong as it
        parses, ahead of its answers to the messages read with the Ping.
        """
        token = f"{BARRIER}{next(self._markers)}"
        if self.version == 2:
            self.send_json(token)
        else:
            assert self.name is not None, "a v1 barrier needs a joined connection"
            self.say(token)
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            is_barrier, value = self._next(deadline)
            if is_barrier and value == token:
                return seen
            if not is_barrier:
                seen.append(value)

    def nothing_for(self, seconds: float) -> None:
        """Assert that no data message comes for `seconds`."""
        try:
            msg = self.recv(seconds)
        except TimeoutError:
            return
        pytest.fail(f"unexpected message: {msg!r}")

    # ---- closing -------------------------------------------------------------

    def _reply_close(self) -> None:
        if not self.close_sent:
            self.close_sent = True
            try:
                self.send_frame(OP_CLOSE, encode_close_payload(1000))
            except OSError:
                pass

    def wait_close(self, timeout: float = TIMEOUT) -> int:
        """Read (keeping the messages) until the server's Close; answer it,
        wait for the server to end TCP, then close the socket. The server's
        close code."""
        deadline = time.monotonic() + timeout
        with pytest.raises(Closed):
            while True:
                self.recv(max(0.0, deadline - time.monotonic()))
        assert self.close_code is not None, "TCP ended without a Close frame"
        self.wait_eof(deadline)
        self.drop()   # §7.1.1: the server closed TCP first; now the client does
        return self.close_code

    def wait_eof(self, deadline: float) -> None:
        """Read (and discard frames) until the server ends TCP."""
        while not self.eof:
            try:
                self._frame(deadline)
            except EOFError:
                return

    def close(self, code: int = 1000) -> None:
        """The closing handshake from our side (what comes before the server's
        Close is kept in `log`), then the server's TCP close."""
        self.close_sent = True
        self.send_frame(OP_CLOSE, encode_close_payload(code))
        deadline = time.monotonic() + TIMEOUT
        with pytest.raises(Closed):
            while True:
                self.recv(max(0.0, deadline - time.monotonic()))
        assert self.close_code is not None, "TCP ended without a Close frame"
        self.wait_eof(deadline)
        self.drop()

    def reset(self) -> None:
        """End with a TCP RST (SO_LINGER on with a zero timeout)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.drop()

    def drop(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def messages(self) -> list[dict]:
        return [value for _, value in self.log]


def join(server: ChatProcess, name: str, version: int = 2, **options) -> Peer:
    """A peer that has joined as `name` (v1 may get a variant: see `peer.name`)."""
    peer = server.peer(PROTOCOLS[version], **options)
    peer.send_json(m.JOIN, username=name)
    if version == 2:
        welcome = peer.recv()
        assert welcome["type"] == m.WELCOME, welcome
        peer.welcome = welcome["payload"]
    # The first broadcast a joiner hears is its own join.
    msg = peer.recv()
    assert msg["type"] == m.JOIN, msg
    peer.name = msg["payload"]["username"]
    return peer


def said(msgs, kind=m.MESSAGE):
    """(username, message) of the chat-messages among `msgs`."""
    return [(msg["payload"]["username"], msg["payload"].get("message"))
            for msg in msgs if msg["type"] == kind]


def errors(msgs):
    return [msg["payload"]["code"] for msg in msgs if msg["type"] == m.ERROR]


def left(msgs, name=None):
    return [msg["payload"]["username"] for msg in msgs
            if msg["type"] == m.LEAVE and (name is None or msg["payload"]["username"] == name)]


V1_SHAPES = {m.JOIN: {"username"}, m.LEAVE: {"username"}, m.MESSAGE: {"username", "message"}}


def assert_the_original_client_can_render(opcode: int, msg: object) -> None:
    """What Beej's chat-client.js needs of every message: a text frame holding
    a JSON object, `type` one it knows, and `payload.username` a string (it
    calls escapeHTML(payload.username) on every message, and
    escapeHTML(payload.message) on a chat-message)."""
    assert opcode == OP_TEXT, f"binary message to a v1 client: {msg!r}"
    assert isinstance(msg, dict) and set(msg) == {"type", "payload"}, msg
    assert msg["type"] in V1_SHAPES, f"v1 client sent a {msg['type']!r}: {msg!r}"
    payload = msg["payload"]
    assert isinstance(payload, dict) and set(payload) == V1_SHAPES[msg["type"]], msg
    assert all(isinstance(value, str) for value in payload.values()), msg


V2_FIELDS = {
    m.WELCOME: {"username": str, "users": list, "limits": dict, "time": int, "history": list},
    m.JOIN: {"username": str, "time": int},
    m.MESSAGE: {"id": int, "username": str, "message": str, "time": int},
    m.RENAME: {"from": str, "to": str, "time": int},
    m.LEAVE: {"username": str, "time": int},
    m.ERROR: {"code": str, "message": str, "type": (str, type(None)), "time": int},
}
ERROR_CODES = {m.BAD_JSON, m.BAD_ENVELOPE, m.UNKNOWN_TYPE, m.BAD_FIELD, m.NOT_JOINED,
               m.ALREADY_JOINED, m.NAME_INVALID, m.NAME_TAKEN, m.MESSAGE_EMPTY,
               m.MESSAGE_TOO_LONG, m.RATE_LIMITED, m.BINARY_UNSUPPORTED}


def assert_documented_v2(msg: object) -> None:
    """Every v2 message has a documented type and exactly its documented
    fields (docs/protocol.md), `time` an integer of milliseconds of now."""
    assert isinstance(msg, dict) and set(msg) == {"type", "payload"}, msg
    fields = V2_FIELDS.get(msg["type"])
    assert fields is not None, f"undocumented v2 type: {msg!r}"
    payload = msg["payload"]
    assert isinstance(payload, dict) and set(payload) == set(fields), msg
    for name, kind in fields.items():
        value = payload[name]
        assert isinstance(value, kind) and not isinstance(value, bool), (name, msg)
    assert abs(payload["time"] - time.time() * 1000) < 600_000, msg
    if msg["type"] == m.ERROR:
        assert payload["code"] in ERROR_CODES, msg
    if msg["type"] == m.WELCOME:
        assert all(isinstance(name, str) for name in payload["users"])
        for item in payload["history"]:
            assert_documented_v2({"type": m.MESSAGE, "payload": item})


# --- plain HTTP by hand -----------------------------------------------------------------------

def http(port: int, head: str | bytes, body: bytes = b"") -> tuple[int, dict, bytes]:
    """Send one request (the head must ask for Connection: close); return
    (status, headers with lower-case names, body) once the server closes."""
    data = head.encode("latin-1") if isinstance(head, str) else head
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data + body)
        received = b""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    head_bytes, _, rest = received.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, rest


def request(method: str, target: str, port: int, extra: str = "") -> str:
    return (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}"
            "Connection: close\r\n\r\n")


# =============================================================================================
# "the chat accepts ... at least 1,000 concurrent connections, including many from one address"
# =============================================================================================

class SwarmClient:
    """One of the thousand: a non-blocking socket, a state, a frame parser."""

    __slots__ = ("sock", "key", "version", "name", "state", "buffer", "parser", "joined", "got")

    def __init__(self, sock, key, version, name):
        self.sock, self.key, self.version, self.name = sock, key, version, name
        self.state = "handshake"
        self.buffer = bytearray()
        self.parser = FrameParser(require_mask=False, max_frame_size=1 << 30)
        self.joined = False      # its welcome (v2) or own join (v1) came
        self.got = None          # the broadcast under test, decoded


def raise_nofile_or_skip(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} descriptors "
                    "this test needs (1,000 clients here and 1,000 in the server)")
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def test_a_thousand_connections_from_one_address_join_hear_one_broadcast_and_leave(chat):
    """CONTRACT: "at least 1,000 concurrent connections, including many from
    one address"; every one of them joined (v1 and v2 mixed) hears one
    broadcast; each leave is broadcast exactly once; the server stays healthy."""
    n = 1000
    raise_nofile_or_skip(2200)
    started = time.monotonic()
    deadline = started + 60
    server = chat()
    monitor = join(server, "monitor")
    clients: list[SwarmClient] = []
    selector = selectors.DefaultSelector()
    try:
        for i in range(n):   # every connection from 127.0.0.1
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
            version = 1 if i % 2 else 2
            key = make_key()
            sock.sendall(build_request(f"127.0.0.1:{server.port}", "/", key,
                                       subprotocols=PROTOCOLS[version]))
            sock.setblocking(False)
            client = SwarmClient(sock, key, version, f"user{i:04d}")
            clients.append(client)
            selector.register(sock, selectors.EVENT_READ, client)

        def pump(done) -> None:
            """Read every ready client until done() holds (or fail at the deadline)."""
            while not done():
                assert time.monotonic() < deadline, "the thousand clients took too long"
                for key, _ in selector.select(0.5):
                    read(key.data)

        def read(client: SwarmClient) -> None:
            try:
                data = client.sock.recv(262144)
            except BlockingIOError:
                return
            assert data, f"{client.name}: the server closed the connection"
            if client.state == "handshake":
                client.buffer += data
                end = find_head_end(client.buffer)
                if end == -1:
                    return
                response = parse_response_head(bytes(client.buffer[:end]))
                assert response.status == 101, response
                assert response.headers.get("Sec-WebSocket-Accept") == accept_key(client.key)
                offered = PROTOCOLS[client.version][0]
                assert response.headers.get("Sec-WebSocket-Protocol") == offered
                data = bytes(client.buffer[end:])
                client.state = "open"
                # RFC 6455 §4.1: only after the 101 does a client send frames.
                join_text = json.dumps({"type": m.JOIN, "payload": {"username": client.name}})
                client.sock.sendall(encode_frame(OP_TEXT, join_text.encode(),
                                                 mask_key=os.urandom(4)))
            client.parser.feed(data)
            while (frame := client.parser.next_frame()) is not None:
                assert frame.opcode in (OP_TEXT, OP_PING), frame
                if frame.opcode == OP_PING:
                    client.sock.sendall(encode_frame(OP_PONG, frame.payload,
                                                     mask_key=os.urandom(4)))
                    continue
                if not client.joined:
                    # The first message a joiner hears: its welcome (v2) or its own join (v1).
                    first = json.loads(frame.payload)
                    if client.version == 2:
                        assert first["type"] == m.WELCOME, first
                    else:
                        assert first == {"type": m.JOIN, "payload": {"username": client.name}}
                    assert first["payload"]["username"] == client.name
                    client.joined = True
                elif marker in frame.payload:
                    client.got = json.loads(frame.payload)

        marker = b"one message for a thousand"
        pump(lambda: all(client.joined for client in clients))
        counter = itertools.count(1)
        joins = monitor.until(lambda _: next(counter) >= n, 30)
        assert sorted(msg["payload"]["username"] for msg in joins) == \
            sorted(client.name for client in clients)
        joined_at = time.monotonic()

        monitor.say(marker.decode())
        pump(lambda: all(client.got is not None for client in clients))
        for client in clients:
            payload = client.got["payload"]
            assert client.got["type"] == m.MESSAGE
            assert (payload["username"], payload["message"]) == ("monitor", marker.decode())
            if client.version == 1:
                assert set(payload) == {"username", "message"}
            else:
                assert payload["id"] == 1
        broadcast_at = time.monotonic()

        # Everyone goes, three ways: a Close frame, a plain TCP close, a reset.
        for i, client in enumerate(clients):
            selector.unregister(client.sock)
            if i % 3 == 0:
                try:
                    client.sock.send(encode_frame(OP_CLOSE, encode_close_payload(1000),
                                                  mask_key=os.urandom(4)))
                except OSError:
                    pass
            elif i % 3 == 2:
                client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            client.sock.close()
    finally:
        for client in clients:
            client.sock.close()
        selector.close()

    gone = []

    def count(msg):
        if msg["type"] == m.LEAVE:
            gone.append(msg["payload"]["username"])
        return len(gone) >= n
    monitor.until(count, 30)
    gone += left(monitor.barrier())
    assert sorted(gone) == sorted(client.name for client in clients), "each leave exactly once"
    left_at = time.monotonic()

    # Still healthy: a new v2 and a new v1 user join and chat.
    fresh = join(server, "after the crowd")
    assert fresh.welcome["users"] == ["monitor", "after the crowd"]
    old = join(server, "old after the crowd", version=1)
    old.say("still here")
    for peer in (fresh, old, monitor):
        assert peer.expect(m.MESSAGE)["payload"]["message"] == "still here"
    print(f"\n1,000 clients: joined in {joined_at - started:.2f} s, broadcast "
          f"{broadcast_at - joined_at:.2f} s, all left {left_at - broadcast_at:.2f} s")


# =============================================================================================
# "a rate limit, if any, lets one connection send at least 10 chat messages a second"
# =============================================================================================

def test_ten_chat_messages_at_once_and_ten_more_a_second_later_are_all_delivered(chat):
    server = chat()
    watcher = join(server, "watcher")
    pasters = [join(server, "paster one", 1), join(server, "paster two", 2)]
    expected = []
    start = time.monotonic()
    for round_ in range(2):
        time.sleep(max(0.0, start + round_ * 1.0 - time.monotonic()))
        for peer in pasters:
            lines = [f"{peer.name} line {round_}.{i}" for i in range(10)]
            peer.send_texts(json.dumps({"type": m.MESSAGE,
                                        "payload": {"username": peer.name, "message": line}})
                            for line in lines)
            expected += [(peer.name, line) for line in lines]
    got = said(watcher.until(lambda _: len(said(watcher.messages())) >= 40))
    assert sorted(got) == sorted(expected)
    for peer in pasters:   # and the senders hear all of it too, with no refusal
        seen = peer.until(lambda _: len(said(peer.messages())) >= 40)
        assert errors(seen) == [] and sorted(said(seen)) == sorted(expected)


def test_a_flood_is_rate_limited_for_the_flooder_only_and_others_keep_chatting(chat):
    server = chat()
    other = join(server, "other")
    old = join(server, "old", version=1)
    flooder = join(server, "flooder")
    other.expect(m.JOIN, username="flooder")
    old.expect(m.JOIN, username="flooder")
    time.sleep(0.1)   # the join took a token; a quiet spell fills the bucket again
    flood = 60
    flooder.send_texts(json.dumps({"type": m.MESSAGE, "payload": {"message": f"spam {i}"}})
                       for i in range(flood))
    other.send_texts(json.dumps({"type": m.MESSAGE, "payload": {"message": f"calm {i}"}})
                     for i in range(5))

    def answered(_):   # every flood message is either said or refused
        msgs = flooder.messages()
        return len([1 for who, _ in said(msgs) if who == "flooder"]) + len(errors(msgs)) >= flood
    seen = flooder.until(answered)
    accepted = [text for who, text in said(seen) if who == "flooder"]
    refused = [msg["payload"] for msg in seen if msg["type"] == m.ERROR]
    assert len(accepted) >= BURST, "the documented burst is let through"
    assert len(refused) >= 10, "a flood past the burst is refused"
    assert len(accepted) + len(refused) == flood
    assert {(err["code"], err["type"]) for err in refused} == {(m.RATE_LIMITED, m.MESSAGE)}
    assert accepted == [f"spam {i}" for i in range(len(accepted))]

    # The others notice nothing but what was said: no error, all of their own lines.
    for peer in (other, old):   # `other` first: its barrier shows its lines were handled
        before = peer.barrier()
        assert errors(before) == []
        assert [text for who, text in said(before) if who == "flooder"] == accepted
        assert [text for who, text in said(before) if who == "other"] == \
            [f"calm {i}" for i in range(5)]

    # One second later the flooder may talk again: 10 at once all go through.
    time.sleep(1.0)
    flooder.send_texts(json.dumps({"type": m.MESSAGE, "payload": {"message": f"sorry {i}"}})
                       for i in range(10))
    again = flooder.until(lambda msg: msg["type"] == m.ERROR
                          or msg["payload"].get("message") == "sorry 9")
    assert errors(again) == []
    assert [text for who, text in said(again) if who == "flooder"] == \
        [f"sorry {i}" for i in range(10)]


# =============================================================================================
# "the chat accepts chat messages of at least 4,000 characters"; the documented maximum
# =============================================================================================

def test_a_4000_character_message_is_accepted_from_v1_and_v2(chat):
    server = chat()
    old, new = join(server, "old", 1), join(server, "new", 2)
    old.expect(m.JOIN, username="new")
    text = ("Hello, Goats! é€😀 " * 250)[:4000]   # 4,000 characters, some not ASCII
    assert len(text) == 4000
    for sender in (old, new):
        sender.say(text, username=sender.name)
        for peer in (old, new):
            payload = peer.expect(m.MESSAGE)["payload"]
            assert (payload["username"], payload["message"]) == (sender.name, text)


def test_a_message_of_the_maximum_length_is_accepted_and_one_more_is_message_too_long(chat):
    server = chat()
    old, new, watcher = join(server, "old", 1), join(server, "new", 2), join(server, "watcher")
    longest = "x" * (MAX_MESSAGE_LENGTH - 1) + "é"
    emoji = "😀" * MAX_MESSAGE_LENGTH   # sent as \ud83d\ude00 pairs: 12 bytes a character
    spelled = json.dumps({"type": m.MESSAGE, "payload": {"message": emoji}})
    assert MAX_MESSAGE_LENGTH * 12 < len(spelled) <= MAX_WS_MESSAGE
    sends = [(old, lambda: old.say(longest, username="old"), longest),
             (new, lambda: new.say("  \n" + longest + "\t "), longest),  # trimmed, then measured
             (new, lambda: new.send_text(spelled), emoji)]
    for sender, send, text in sends:
        send()
        for peer in (old, new, watcher):
            payload = peer.expect(m.MESSAGE)["payload"]
            assert (payload["username"], payload["message"]) == (sender.name, text)

    too_long = longest + "y"
    new.say(too_long)
    error = new.expect(m.ERROR)["payload"]
    assert (error["code"], error["type"]) == (m.MESSAGE_TOO_LONG, m.MESSAGE)
    old.say(too_long, username="old")   # v1: dropped, nothing said to anyone
    for peer in (old, new, watcher):
        before = peer.barrier()
        assert said(before) == [] and errors(before) == [], before


# =============================================================================================
# "request headers up to 8 KiB are accepted"
# =============================================================================================

def padding_headers(total: int) -> list[tuple[str, str]]:
    """Header fields whose lines (with their CRLF) add up to exactly `total` bytes."""
    fields = []
    remaining = total
    while remaining:
        name = f"X-Pad-{len(fields):02d}"
        overhead = len(name) + 4   # ": " and CRLF
        size = 200
        if remaining - (overhead + size) < overhead + 1:
            size = remaining - overhead   # the last line takes the rest
        assert size >= 1
        fields.append((name, "v" * size))
        remaining -= overhead + size
    return fields


def field_bytes(fields) -> int:
    return sum(len(name) + len(value) + 4 for name, value in fields)


def test_a_get_with_7_5_kib_of_headers_is_served(shared):
    base = [("Host", f"127.0.0.1:{shared.port}"), ("Connection", "close"),
            ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) contract-test"),
            ("Cookie", "session=" + "c" * 4000)]
    fields = base + padding_headers(7680 - field_bytes(base))
    assert field_bytes(fields) == 7680
    head = "GET / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n"
    status, headers, body = http(shared.port, head)
    assert status == 200 and INDEX_MARK in body
    assert headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("how", ["many fields", "one big cookie"])
def test_a_header_block_of_8_kib_is_accepted_by_get_and_by_the_websocket_upgrade(shared, how):
    # GET: the header block is exactly 8,192 bytes, counted as the field lines with their CRLF.
    base = [("Host", f"127.0.0.1:{shared.port}"), ("Connection", "close")]
    rest = 8192 - field_bytes(base)
    extra = (padding_headers(rest) if how == "many fields"
             else [("Cookie", "c" * (rest - len("Cookie") - 4))])
    head = "GET / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in base + extra) + "\r\n"
    assert len(head) - len("GET / HTTP/1.1\r\n\r\n") == 8192
    status, _, body = http(shared.port, head)
    assert status == 200 and INDEX_MARK in body

    # The upgrade: the handshake's own fields plus padding make 8,192 bytes.
    port = shared.port
    own = (len(build_request(f"127.0.0.1:{port}", "/", make_key(), subprotocols=[V2],
                             origin=f"http://127.0.0.1:{port}"))
           - len("GET / HTTP/1.1\r\n") - 2)
    rest = 8192 - own
    extra = (padding_headers(rest) if how == "many fields"
             else [("Cookie", "c" * (rest - len("Cookie") - 4))])
    peer = shared.peer([V2], origin=f"http://127.0.0.1:{port}", headers=extra)
    peer.send_json(m.JOIN, username=f"big headers {how}")
    assert peer.recv()["type"] == m.WELCOME
    peer.expect(m.JOIN, username=f"big headers {how}")
    peer.say("fits")
    assert peer.expect(m.MESSAGE)["payload"]["message"] == "fits"
    peer.close()


def test_a_header_block_of_8_kib_in_many_small_fields_is_accepted(shared):
    # 120 field lines of 68 bytes: 8,160 bytes, as a proxy chain or a site's many
    # cookies can send. Count is no size: the contract's limit is in bytes.
    base = [("Host", f"127.0.0.1:{shared.port}"), ("Connection", "close")]
    fields = base + [(f"X-Forwarded-{i:03d}", "f" * 50) for i in range(118)]
    assert field_bytes(fields) <= 8192
    head = "GET / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n"
    status, _, body = http(shared.port, head)
    assert status == 200 and INDEX_MARK in body


def test_max_header_bytes_option_changes_the_header_limit(chat):
    # CONTRACT.md: "Every limit has a safe default and an option that changes it."
    server = chat("--max-header-bytes", "24576")
    for size, status in ((20 * 1024, 200), (30 * 1024, 431)):
        base = [("Host", f"127.0.0.1:{server.port}"), ("Connection", "close")]
        fields = base + [("Cookie", "c" * (size - field_bytes(base) - len("Cookie") - 4))]
        assert field_bytes(fields) == size
        head = "GET / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n"
        assert http(server.port, head)[0] == status, size
    peer = server.peer([V2], headers=[("Cookie", "c" * 20 * 1024)])
    peer.send_json(m.JOIN, username="big cookie")
    assert peer.recv()["type"] == m.WELCOME


# =============================================================================================
# v1 names: "never a name another connection holds"; trimming; empty; wrong types
# =============================================================================================

def test_a_name_held_by_a_live_user_is_never_handed_to_a_second_connection(chat):
    server = chat()
    beej = join(server, "Beej", 2)
    goat = join(server, "Goat", 1)
    watcher = join(server, "watcher", 2)
    beej.barrier(), goat.barrier()

    # v1 joiners asking for held names get other names (any spelling of them).
    for asked in ("Beej", "BEEJ", "Ｂｅｅｊ", "  beej ", "Goat", "goat"):
        peer = join(server, asked, 1)
        assert m.name_key(peer.name) not in {m.name_key("Beej"), m.name_key("Goat")}, peer.name
    # v2 joiners asking for held names are refused, and not joined.
    for asked in ("Goat", "GOAT", "Ｇｏａｔ", "Beej", " beej"):
        peer = server.peer([V2])
        peer.send_json(m.JOIN, username=asked)
        error = peer.expect(m.ERROR)["payload"]
        assert (error["code"], error["type"]) == (m.NAME_TAKEN, m.JOIN)
        peer.say("let me in")
        assert peer.expect(m.ERROR)["payload"]["code"] == m.NOT_JOINED
    # A name the server refuses for its form: over 32 characters, with controls.
    for asked in ("y" * 33, "bad\x1bname", "\u202eevil"):
        peer = server.peer([V2])
        peer.send_json(m.JOIN, username=asked)
        error = peer.expect(m.ERROR)["payload"]
        assert (error["code"], error["type"]) == (m.NAME_INVALID, m.JOIN)
    # Renames to held names: v2 refused; v1 (second join, or a message's username) ignored.
    beej.send_json(m.RENAME, username="goat")
    assert beej.expect(m.ERROR)["payload"]["code"] == m.NAME_TAKEN
    goat.send_json(m.JOIN, username="beej")
    goat.say("who am I?", username="BEEJ")
    goat.say("and now?", username="watcher")
    goat.barrier()
    beej.say("me", username="Goat")   # v2: a username in a message is ignored
    beej.barrier()
    before = watcher.barrier()
    assert said(before) == [("Goat", "who am I?"), ("Goat", "and now?"), ("Beej", "me")]
    assert [msg["type"] for msg in before if msg["type"] != m.MESSAGE] == \
        [m.JOIN] * 6, "only the six v1 joiners' joins; no rename happened"
    names = [msg["payload"]["username"] for msg in before if msg["type"] == m.JOIN]
    assert len({m.name_key(name) for name in names}) == 6


def test_joins_racing_for_one_name_give_it_to_exactly_one_connection(chat):
    server = chat()
    watcher = join(server, "watcher")
    spellings = ["Same", "same", "SAME", "Ｓａｍｅ", " Same "]
    peers = [server.peer(PROTOCOLS[1 + i % 2]) for i in range(24)]
    for i, peer in enumerate(peers):   # all queued before any answer is read
        peer.send_json(m.JOIN, username=spellings[i % len(spellings)])
    holders = {}
    for peer in peers:
        msg = peer.recv()
        if msg["type"] == m.ERROR:
            assert peer.version == 2 and msg["payload"]["code"] == m.NAME_TAKEN
            continue
        if msg["type"] == m.WELCOME:
            msg = peer.recv()
        assert msg["type"] == m.JOIN
        peer.name = msg["payload"]["username"]
        holders[peer] = peer.name
    same = [name for name in holders.values() if m.name_key(name) == m.name_key("Same")]
    assert len(same) == 1, holders
    assert len({m.name_key(name) for name in holders.values()}) == len(holders)
    # Each says something, naming itself "Same": it is said under its own name.
    for peer in holders:
        peer.say(f"from {peer.name}", username="Same")
    got = said(watcher.until(lambda _: len(said(watcher.messages())) >= len(holders)))
    assert sorted(got) == sorted((name, f"from {name}") for name in holders.values())


def test_usernames_and_messages_are_trimmed(chat):
    server = chat()
    watcher = join(server, "watcher")
    old = join(server, "\u3000 Trim One \t", 1)
    new = join(server, "\u00a0 Trim Two\n", 2)
    assert (old.name, new.name) == ("Trim One", "Trim Two")
    assert new.welcome["username"] == "Trim Two"
    old.say(" \n hello\nthere \t", username="  Trim One  ")   # same name, trimmed: no rename
    old.barrier()
    new.say("\u2003 hi \u00a0")
    new.barrier()
    old.say("renamed", username="  Trim Three  ")
    old.barrier()
    before = watcher.barrier()
    assert said(before) == [("Trim One", "hello\nthere"), ("Trim Two", "hi"),
                            ("Trim Three", "renamed")]
    rename = [msg for msg in before if msg["type"] == m.RENAME]
    assert [(msg["payload"]["from"], msg["payload"]["to"]) for msg in rename] == \
        [("Trim One", "Trim Three")]


def test_an_empty_message_is_ignored(chat):
    server = chat()
    watcher = join(server, "watcher", 1)
    old, new = join(server, "old", 1), join(server, "new", 2)
    for peer in (watcher, old, new):
        peer.barrier()
    for text in ("", "   ", "\n\t \u3000"):
        old.say(text, username="old")
        new.say(text)
    before = new.barrier()
    assert said(before) == [] and errors(before) == [m.MESSAGE_EMPTY] * 3
    for peer in (old, watcher):   # `old` first: its barrier shows its messages were handled
        assert peer.barrier() == []


def test_a_field_of_the_wrong_type_counts_as_missing(chat):
    server = chat()
    watcher = join(server, "watcher")
    old, new = join(server, "old", 1), join(server, "new", 2)
    for peer in (watcher, old, new):
        peer.barrier()
    wrong = [
        '{"type": "chat-message", "payload": {"username": "old", "message": 5}}',
        '{"type": "chat-message", "payload": {"username": "old", "message": null}}',
        '{"type": "chat-message", "payload": {"username": "old", "message": ["hi"]}}',
        '{"type": "chat-message", "payload": "hi"}',
        '{"type": "chat-message", "payload": ["hi"]}',
        '{"type": "chat-message"}',
        '{"type": 5, "payload": {"message": "hi"}}',
        '{"type": "chat-join", "payload": {"username": 5}}',
    ]
    for text in wrong:
        old.send_text(text)
        new.send_text(text)
    # A v1 message's username of the wrong type is missing: said under the held name.
    old.send_text('{"type": "chat-message", "payload": {"username": 5, "message": "five"}}')
    old.send_text('{"type": "chat-message", "payload": {"username": {}, "message": "obj"}}')
    assert said(old.barrier()) == [("old", "five"), ("old", "obj")]
    before = new.barrier()
    assert errors(before) == [m.BAD_FIELD] * 3 + [m.BAD_ENVELOPE] * 4 + [m.ALREADY_JOINED]
    assert said(before) == [("old", "five"), ("old", "obj")]
    before = watcher.barrier()
    assert [msg["type"] for msg in before] == [m.MESSAGE, m.MESSAGE]
    assert said(before) == [("old", "five"), ("old", "obj")]
    # v2 names of the wrong type: a join's and a rename's.
    late2 = server.peer([V2])
    late2.send_text('{"type": "chat-join", "payload": {"username": 5}}')
    late2.send_text('{"type": "chat-join", "payload": {"name": "late2"}}')
    new.send_text('{"type": "chat-rename", "payload": {"username": null}}')
    assert errors(late2.barrier()) == [m.BAD_FIELD, m.BAD_FIELD]
    assert errors(new.barrier()) == [m.BAD_FIELD]
    assert watcher.barrier() == []
    # A v1 connection whose join had a wrong-typed name is not joined; a good join still works.
    late = server.peer([V1])
    late.send_text('{"type": "chat-join", "payload": {"username": ["late"]}}')
    late.send_json(m.JOIN, username="late")
    assert late.recv() == {"type": m.JOIN, "payload": {"username": "late"}}


# =============================================================================================
# "The original client of the series ... works against this server unchanged"
# =============================================================================================

def browser_headers(host: str) -> list[tuple[str, str]]:
    """What a browser adds to `new WebSocket("ws://" + host, "beej-chat-protocol")`."""
    return [("Pragma", "no-cache"), ("Cache-Control", "no-cache"),
            ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120"),
            ("Accept-Encoding", "gzip, deflate, br"), ("Accept-Language", "en-US,en;q=0.9"),
            ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]


def test_the_original_v1_client_only_ever_receives_what_it_can_render(chat):
    server = chat()
    host = f"localhost:{server.port}"
    # The original page at http://localhost:PORT/ runs
    #   ws = new WebSocket("ws://" + localURL.host, "beej-chat-protocol")
    original = server.peer([V1], path="/", host=host, origin=f"http://{host}",
                           headers=browser_headers(host))
    assert original.subprotocol == V1
    # The browser's permessage-deflate offer is taken, each message compressed afresh.
    assert original.response.headers.get("Sec-WebSocket-Extensions") == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    # onSocketOpen: sendMessage("chat-join", {username: getChatUsername()})
    field = "Guest 1f2e"
    original.send_json(m.JOIN, username=field)
    assert original.recv() == {"type": m.JOIN, "payload": {"username": field}}
    original.name = field

    def send():   # the page's send(): {username: field, message: input}, both always present
        original.send_json(m.MESSAGE, username=field, message=text)

    alice = join(server, "alice")
    original.expect(m.JOIN, username="alice")
    bob = server.peer([V2])
    bob.send_json(m.JOIN, username="GUEST 1F2E")
    assert bob.expect(m.ERROR)["payload"]["code"] == m.NAME_TAKEN
    bob.send_json(m.JOIN, username="bob")
    original.expect(m.JOIN, username="bob")

    # v2 refusals of every kind go to alice alone.
    alice.send_text("{not json")
    alice.send_json("chat-typing", typing=True)
    alice.send_frame(OP_BINARY, b"\x00\x01")
    alice.send_json(m.MESSAGE, message=5)
    alice.send_text('{"type": "chat-message", "payload": "hi"}')
    alice.send_json(m.RENAME, username="guest 1f2e")
    alice.send_json(m.JOIN, username="again")
    alice.say("   ")
    alice.say("z" * (MAX_MESSAGE_LENGTH + 1))
    alice.send_json(m.RENAME, username="\u202eevil")
    bob.barrier()
    assert errors(alice.barrier()) == [m.BAD_JSON, m.UNKNOWN_TYPE, m.BINARY_UNSUPPORTED,
                                    m.BAD_FIELD, m.BAD_ENVELOPE, m.NAME_TAKEN,
                                    m.ALREADY_JOINED, m.MESSAGE_EMPTY, m.MESSAGE_TOO_LONG,
                                    m.NAME_INVALID]
    bob.barrier()
    assert errors(bob.messages()) == [m.NAME_TAKEN], "only bob's own refusal reached bob"
    # A v2 rename reaches the original client as a leave and a join.
    alice.send_json(m.RENAME, username="alice2")
    original.expect(m.LEAVE, username="alice")
    original.expect(m.JOIN, username="alice2")
    alice.say("hi from v2", username="Guest 1f2e")
    original.expect(m.MESSAGE, username="alice2", message="hi from v2")

    text = 'hello <b>goats</b> & "friends" /'
    send()
    original.expect(m.MESSAGE, username=field, message=text)
    field, text = "alice2", "not alice"   # the user types someone else's name
    send()
    original.expect(m.MESSAGE, username="Guest 1f2e", message=text)
    field, text = "  Beej  ", "now Beej"   # a free name: a rename, then the message
    send()
    original.expect(m.LEAVE, username="Guest 1f2e")
    original.expect(m.JOIN, username="Beej")
    original.expect(m.MESSAGE, username="Beej", message=text)
    original.name = "Beej"
    field, text = "Beej", ""                 # Enter on an empty input
    send()
    original.send_text("{oops")

    # A v2 flooder is kicked; a v1 flooder too.
    for version, name in ((2, "flood2"), (1, "flood1")):
        flooder = join(server, name, version)
        original.expect(m.JOIN, username=name)
        flooder.send_texts(json.dumps({"type": m.MESSAGE,
                                       "payload": {"username": name, "message": f"spam {i}"}})
                           for i in range(BURST + FLOOD_KICK + 20))
        assert flooder.wait_close() == 1008
        original.expect(m.LEAVE, username=name)

    # Comings and goings of every kind.
    carol = join(server, "carol")
    dave = join(server, "dave", 1)
    html = join(server, "<img src=x onerror=alert(1)> 😀")
    html.say("<script>alert('x')</script>")
    stranger = server.peer([V2])   # never joins
    stranger.say("hello?")
    stranger.close()
    bob.close()
    carol.reset()
    dave.sock.shutdown(socket.SHUT_WR)
    original.until(lambda _: {"bob", "carol", "dave"} <= set(left(original.messages())))
    eve = join(server, "eve")
    eve.say("I am Beej", username="Beej")
    original.expect(m.MESSAGE, username="eve", message="I am Beej")
    alice.close()
    original.expect(m.LEAVE, username="alice2")
    original.barrier()

    for opcode, msg in original.log:
        assert_the_original_client_can_render(opcode, msg)
    msgs = original.messages()
    for name in ("alice", "Guest 1f2e", "flood2", "flood1", "bob", "carol", "dave", "alice2"):
        assert left(msgs, name) == [name], f"leave of {name!r} not exactly once"
    senders = {who for who, _ in said(msgs)}
    assert senders <= {"Guest 1f2e", "Beej", "alice2", "flood2", "flood1",
                       "<img src=x onerror=alert(1)> 😀", "eve"}
    assert ("<img src=x onerror=alert(1)> 😀", "<script>alert('x')</script>") in said(msgs)
    assert ("Beej", "") not in said(msgs)


def test_a_firefox_style_handshake_is_a_chat_connection(shared):
    # Firefox sends "Connection: keep-alive, Upgrade"; header names and tokens in any case.
    port = shared.port
    head = (f"GET / HTTP/1.1\r\nhost: localhost:{port}\r\nUser-Agent: Mozilla/5.0 Firefox/120\r\n"
            "Accept: */*\r\nsec-websocket-version: 13\r\n"
            f"Origin: http://localhost:{port}\r\nSec-WebSocket-Protocol: {V1}\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate\r\n"
            f"Sec-WebSocket-Key: {GOOD_KEY}\r\nConnection: keep-alive, Upgrade\r\n"
            "Sec-Fetch-Mode: websocket\r\nPragma: no-cache\r\nUpgrade: WebSocket\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        response = parse_response_head(data[:data.index(b"\r\n\r\n") + 4])
        assert response.status == 101
        assert response.headers.get("Sec-WebSocket-Accept") == accept_key(GOOD_KEY)
        assert response.headers.get("Sec-WebSocket-Protocol") == V1
        assert response.headers.get("Sec-WebSocket-Extensions") == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover")


def test_a_chat_message_in_fragments_with_a_ping_between_is_one_message(chat):
    # CONTRACT.md: "Every message is one WebSocket text message"; RFC 6455 section 5.4
    # lets a client send one in fragments, with control frames between them.
    server = chat()
    watcher = join(server, "watcher")
    for version in (1, 2):
        peer = join(server, f"fragments v{version}", version)
        text = json.dumps({"type": m.MESSAGE, "payload": {"username": peer.name,
                                                          "message": f"in pieces é {version}"}})
        data = text.encode()
        peer.send_frame(OP_TEXT, data[:7], fin=False)
        peer.send_frame(OP_PING, b"between")
        peer.send_frame(OP_CONTINUATION, data[7:8], fin=False)   # splits nothing special
        peer.send_frame(OP_CONTINUATION, data[8:], fin=True)
        got = watcher.expect(m.MESSAGE)["payload"]
        assert (got["username"], got["message"]) == (peer.name, f"in pieces é {version}")


# =============================================================================================
# "chat-leave when someone leaves, whether by a Close frame, a dropped TCP connection,
# or a server-side kick" -- and docs/protocol.md: "broadcast exactly once, however it ends"
# =============================================================================================

def end_by(peer: Peer, kind: str) -> int | None:
    """End `peer`'s connection the way `kind` says; the server's close code if it sends one."""
    if kind == "close frame":
        peer.close(1000)
        return None
    if kind == "tcp eof":   # a FIN without a Close frame
        peer.sock.shutdown(socket.SHUT_WR)
        peer.wait_eof(time.monotonic() + TIMEOUT)
        peer.drop()
        return None
    if kind == "tcp reset":
        peer.reset()
        return None
    if kind == "kick":
        peer.send_texts(json.dumps({"type": m.MESSAGE,
                                    "payload": {"username": peer.name, "message": f"spam {i}"}})
                        for i in range(BURST + FLOOD_KICK + 20))
    elif kind == "unmasked frame":
        peer.send_frame(OP_TEXT, b'{"type":"chat-message","payload":{"message":"x"}}',
                        masked=False)
    elif kind == "invalid utf-8":
        peer.send_frame(OP_TEXT, b'{"type":"chat-message","payload":{"message":"\xff\xfe"}}')
    elif kind == "too big":
        peer.say("x" * (MAX_WS_MESSAGE + 1000))
    return peer.wait_close()


SERVER_CLOSE_CODES = {"kick": 1008, "unmasked frame": 1002, "invalid utf-8": 1007,
                      "too big": 1009}


@pytest.mark.parametrize("kind", ["close frame", "tcp eof", "tcp reset", "kick",
                                  "unmasked frame", "invalid utf-8", "too big"])
def test_a_leave_is_broadcast_exactly_once_however_the_connection_ends(chat, kind):
    server = chat()
    watchers = [join(server, "watcher one", 1), join(server, "watcher two", 2)]
    for version in (1, 2):
        name = f"goer v{version}"
        goer = join(server, name, version)
        for watcher in watchers:
            watcher.expect(m.JOIN, username=name)
        code = end_by(goer, kind)
        assert code == SERVER_CLOSE_CODES.get(kind), f"{kind}: close code {code}"
        for watcher in watchers:
            watcher.expect(m.LEAVE, username=name)
            watcher.barrier()
            assert left(watcher.messages(), name) == [name]
    for opcode, msg in watchers[0].log:
        assert_the_original_client_can_render(opcode, msg)
    # The room is as it should be: the name is free again, the watchers are all that is left.
    fresh = join(server, "goer v2")
    assert fresh.welcome["users"] == ["watcher one", "watcher two", "goer v2"]


def test_a_connection_that_never_joined_leaves_silently(chat):
    server = chat()
    watchers = [join(server, "watcher one", 1), join(server, "watcher two", 2)]
    for watcher in watchers:
        watcher.barrier()
    quiet = [server.peer([V1]), server.peer([V2]), server.peer([V2]), server.peer([V1])]
    # Before joining, a connection hears no broadcast.
    watchers[0].say("anyone?", username="watcher one")
    watchers[1].say("me too")
    watchers[1].barrier()
    for peer in quiet[1:3]:
        assert peer.barrier() == []
    quiet[1].say("hi")                              # v2: not-joined
    assert quiet[1].expect(m.ERROR)["payload"]["code"] == m.NOT_JOINED
    quiet[1].reset()                                # a reset...
    quiet[0].say("hi")                              # (v1 without a username: dropped)
    quiet[0].close()                                # ...a Close frame...
    assert quiet[0].log == []
    quiet[2].sock.shutdown(socket.SHUT_WR)          # ...a TCP close...
    quiet[2].wait_eof(time.monotonic() + TIMEOUT)
    quiet[3].send_frame(OP_TEXT, b"x", masked=False)
    assert quiet[3].wait_close() == 1002            # ...a protocol error
    for watcher in watchers:
        before = watcher.barrier()
        assert [msg["type"] for msg in before if msg["type"] != m.MESSAGE] == [], before
        assert left(watcher.messages()) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_closes_every_websocket_with_1001_and_exits_0(chat, signum):
    server = chat()
    peers = [join(server, "a", 1), join(server, "b", 2), join(server, "c", 2), join(server, "d", 1)]
    unjoined = server.peer([V2])
    for peer in peers:
        peer.barrier()
    server.proc.send_signal(signum)
    for peer in peers + [unjoined]:
        assert peer.wait_close() == 1001
    assert server.stop() == 0
    log = server.stderr()
    assert "Traceback" not in log, log
    for peer in peers:
        for other in peers:
            assert len(left(peer.messages(), other.name)) <= 1


# =============================================================================================
# v2: "a welcome to the joiner with the list of present users and the recent history,
# server-assigned message ids and timestamps"; v1 and v2 "see each other's messages"
# =============================================================================================

def test_the_welcome_carries_users_and_history_with_ids_and_times_from_v1_and_v2(chat):
    server = chat()
    old, new = join(server, "old", 1), join(server, "new", 2)
    t0 = int(time.time() * 1000)
    for i in range(3):
        old.say(f"v1 line {i}", username="old")
        old.expect(m.MESSAGE, message=f"v1 line {i}")
        new.say(f"v2 line {i}")
        new.expect(m.MESSAGE, message=f"v2 line {i}")
    t1 = int(time.time() * 1000)
    late = join(server, "late")
    welcome = late.welcome
    assert welcome["username"] == "late" and welcome["users"] == ["old", "new", "late"]
    history = welcome["history"]
    assert [(item["id"], item["username"], item["message"]) for item in history] == [
        (2 * i + 1, "old", f"v1 line {i}") if j == 0 else (2 * i + 2, "new", f"v2 line {i}")
        for i in range(3) for j in range(2)]
    times = [item["time"] for item in history]
    assert times == sorted(times) and t0 - 1000 <= times[0] and times[-1] <= t1 + 1000
    # What v2 clients saw live carries the same ids and times as the history.
    live = [msg["payload"] for msg in new.messages() if msg["type"] == m.MESSAGE]
    assert live == history
    assert welcome["limits"] == {"maxMessageLength": MAX_MESSAGE_LENGTH, "maxUsernameLength": 32,
                                 "ratePerSecond": 20.0, "burst": BURST}


# =============================================================================================
# "The username that the server broadcasts is always the one it holds for that connection,
# never a name another connection holds": a randomized session, checked from outside
# =============================================================================================

FUZZ_NAMES = ["Beej", "beej", "BEEJ", "Ｂｅｅｊ", " Beej ", "Beej (2)", "Beej (3)", "Goat",
              "goat\t", "Goat (2)", "x" * 40, "x" * 32, "x" * 29 + " (2)", "", "  ", "\u202eevil",
              "a\u200db", "\ud800", "Straße", "STRASSE", "ﬀ", "ff", "\u00a0Goat"]


def fuzz_value(rng):
    pick = rng.randrange(10)
    if pick < 5:
        return rng.choice(FUZZ_NAMES)
    return rng.choice([5, -1, 0, None, True, False, [], {}, ["Beej"], {"username": "Beej"},
                       1e300, 2 ** 70, "x" * 33])


def fuzz_frame(rng, k: int, version: int) -> tuple[int, str | bytes]:
    """One random client message from fuzzer `k`: mostly plausible, some garbage."""
    roll = rng.randrange(100)
    tag = f"[f{k}] "
    if roll < 25:
        return OP_TEXT, json.dumps({"type": m.JOIN, "payload": {"username": fuzz_value(rng)}})
    if roll < 40:
        return OP_TEXT, json.dumps({"type": m.RENAME, "payload": {"username": fuzz_value(rng)}})
    if roll < 75:
        payload = {"message": tag + rng.choice(["hi", " hello ", "a\nb", "", "\ud800!",
                                                "y" * rng.choice([10, 3990, 9995, 9996])])}
        if rng.random() < 0.7:
            payload["username"] = fuzz_value(rng)
        if rng.random() < 0.1:
            payload["message"] = rng.choice([5, None, ["x"], ""])
        return OP_TEXT, json.dumps({"type": m.MESSAGE, "payload": payload})
    if roll < 80:
        return OP_BINARY, os.urandom(rng.randrange(0, 40))
    return OP_TEXT, rng.choice([
        "", "null", "[]", "{}", "{oops", "NaN", '{"type": "chat-join"}',
        '{"type": "chat-message", "payload": "hi"}', '{"type": null, "payload": {}}',
        '{"type": "chat-leave", "payload": {"username": "Beej"}}',
        '{"type": "chat-welcome", "payload": {}}', '{"type": "chat-error", "payload": {}}',
        "[" * 5000 + "]" * 5000,
        '{"type": "chat-message", "payload": {"message": ' + "9" * 5000 + "}}",
        '{"type": "chat-message", "payload": {"message": 1e999}}',
        '{"type": "chat-join", "payload": {"username": "Beej", "username": "Goat"}}'])


class RoomView:
    """The room as a v2 watcher sees it, checked event by event: no two
    present users share a name (exactly, or as docs/protocol.md compares
    names), and every chat-message's name is present and belongs to the one
    connection (the tag in the text) that has used it since it appeared."""

    def __init__(self, users: list[str]) -> None:
        self.users = list(users)         # in join order
        self.owner: dict[str, int] = {}  # name -> fuzzer number, once it has spoken

    def check_unique(self) -> None:
        assert len(set(self.users)) == len(self.users), self.users
        assert len({m.name_key(name) for name in self.users}) == len(self.users), self.users

    def apply(self, msg: dict) -> None:
        kind, payload = msg["type"], msg["payload"]
        if kind == m.JOIN:
            self.users.append(payload["username"])
        elif kind == m.RENAME:
            old, new = payload["from"], payload["to"]
            assert old in self.users, msg
            self.users[self.users.index(old)] = new
            if old in self.owner:
                self.owner[new] = self.owner.pop(old)
        elif kind == m.LEAVE:
            self.users.remove(payload["username"])
            self.owner.pop(payload["username"], None)
        elif kind == m.MESSAGE:
            name, text = payload["username"], payload["message"]
            assert name in self.users, msg
            assert text.startswith("[f"), msg
            k = int(text[2:text.index("]")])
            if name in self.owner:
                assert self.owner[name] == k, f"{name!r} was said by f{self.owner[name]}: {msg!r}"
            else:
                assert k not in self.owner.values(), f"f{k} speaks under two names: {msg!r}"
                self.owner[name] = k
        self.check_unique()


def test_a_random_session_never_gives_one_name_to_two_connections(chat):
    import random
    rng = random.Random(6455)
    server = chat("--rate", "0")   # no rate limit: every message reaches the rules
    watcher = join(server, "watcher")
    view = RoomView(watcher.welcome["users"])
    fuzzers = [server.peer(PROTOCOLS[1 + k % 2]) for k in range(8)]
    for _ in range(60):
        for k, peer in enumerate(fuzzers):
            opcode, data = fuzz_frame(rng, k, peer.version)
            payload = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
            peer.send_frame(opcode, payload)
    # Each fuzzer ends under a name of its own, saying so.
    for k, peer in enumerate(fuzzers):
        name = f"final {k}"
        if peer.version == 2:
            peer.send_json(m.JOIN, username=name)
            peer.send_json(m.RENAME, username=name)
            peer.say(f"[f{k}] end")
        else:
            peer.say(f"[f{k}] end", username=name)
    ends = set()

    def see(msg):
        view.apply(msg)
        if msg["type"] == m.MESSAGE and msg["payload"]["message"].endswith("] end"):
            ends.add(msg["payload"]["username"])
        return len(ends) == len(fuzzers)
    watcher.until(see, 20)
    assert ends == {f"final {k}" for k in range(len(fuzzers))}
    assert len(view.owner) >= len(fuzzers)
    for k, peer in enumerate(fuzzers):   # what each was sent is well-formed for its version
        peer.until(lambda msg: msg["type"] == m.MESSAGE
                   and msg["payload"]["message"] == f"[f{k}] end", 20)
    late = join(server, "late")
    assert late.welcome["users"] == view.users + ["late"]


# =============================================================================================
# "Methods other than GET and HEAD are refused ... and never serve a file";
# "Anything that would leave the web root ... is a 404 or 403, never a file outside it"
# =============================================================================================

@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
                                    "PROPFIND", "FOO", "get", "Head"])
@pytest.mark.parametrize("target", ["/", "/index.html", "/sub/page.txt"])
def test_other_methods_get_405_with_allow_and_never_a_file(shared, method, target):
    status, headers, body = http(shared.port, request(method, target, shared.port,
                                                      "Content-Length: 0\r\n"))
    assert status == 405, status
    allowed = {token.strip() for token in headers.get("allow", "").split(",")}
    assert allowed == {"GET", "HEAD"}, headers
    assert INDEX_MARK not in body and b"inside" not in body


def test_connect_and_a_post_upgrade_are_refused_and_serve_no_file(shared):
    port = shared.port
    status, headers, body = http(port, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n"
                                       f"Host: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
    assert status == 405 and "GET" in headers.get("allow", "") and INDEX_MARK not in body
    status, headers, body = http(port, request(
        "POST", "/", port, "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {V2}\r\nContent-Length: 0\r\n").replace(
            "Connection: close\r\n", ""))
    assert 400 <= status < 500 and INDEX_MARK not in body


def traversal_targets(site: Path) -> list[str]:
    secret = str(site / "secret.txt")
    return ["/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt", "/.%2e/secret.txt",
            "/..%2fsecret.txt", "/..%2Fsecret.txt", "/sub/../../secret.txt",
            "/sub/%2e%2e/%2e%2e/secret.txt", "/..%5csecret.txt", "/%2e%2e%5csecret.txt",
            "/" + secret, "/%2f" + secret.lstrip("/").replace("/", "%2f"),
            "/link.txt", "/linkdir/secret2.txt", "/linkdir/", "/./../secret.txt"]


def test_no_path_leaves_the_web_root(shared, site):
    for method in ("GET", "HEAD"):
        for target in traversal_targets(site):
            status, _, body = http(shared.port, request(method, target, shared.port))
            assert status in (403, 404), (method, target, status)
            assert SECRET_MARK not in body, (method, target)
    # Forms that are not a path at all are refused too (4xx), never a file.
    for target in (f"http://127.0.0.1:{shared.port}/../secret.txt",
                   f"http://127.0.0.1:{shared.port}/../../" + str(site / "secret.txt"),
                   "*", "secret.txt", "../secret.txt"):
        status, _, body = http(shared.port, request("GET", target, shared.port))
        assert 400 <= status < 500 and SECRET_MARK not in body, (target, status)
    # ...while the root itself still serves.
    status, _, body = http(shared.port, request("GET", "/sub/page.txt", shared.port))
    assert status == 200 and body == b"inside\n"


def test_the_default_page_keeps_the_original_ids_and_all_it_references_is_served(chat):
    # CONTRACT.md: the page keeps #chat-username, #chat-input, #chat-send, #chat-output,
    # and is "plain HTML, CSS and JavaScript with no build step, served by the chat server".
    import re
    server = chat()
    status, _, body = http(server.port, request("GET", "/", server.port))
    assert status == 200
    page = body.decode("utf-8")
    for element in ("chat-username", "chat-input", "chat-send", "chat-output"):
        assert re.search(rf'\bid="{element}"', page), element
    references = set(re.findall(r'(?:src|href)="([^"#:]+)"', page))
    assert "chat.js" in references
    for ref in references:
        status, _, _ = http(server.port, request("GET", "/" + ref.lstrip("/"), server.port))
        assert status == 200, ref


def test_the_chat_needs_nothing_beyond_the_standard_library():
    # CONTRACT.md, "Runtime dependencies": none beyond the Python standard library.
    # -I -S: no site-packages, no .pth files; only the standard library and the repository.
    code = ("import sys, chat.__main__, chat.client, chat.app, chat.room; "
            "print(sorted({n.split('.')[0] for n in sys.modules} - set(sys.stdlib_module_names)"
            " - set(sys.builtin_module_names)))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", "import sys; sys.path.insert(0, "
                          f"{str(ROOT)!r}); " + code], capture_output=True, text=True,
                         timeout=2 * TIMEOUT, cwd="/")
    assert out.returncode == 0, out.stderr
    assert set(eval(out.stdout)) <= {"chat", "rawws", "__main__"}, out.stdout


def test_get_and_head_serve_the_default_page_with_the_right_content_types(chat):
    server = chat()   # the default web root, www/
    types = {"/": "text/html", "/index.html": "text/html", "/chat.js": "text/javascript",
             "/style.css": "text/css", "/favicon.svg": "image/svg+xml"}
    for path, kind in types.items():
        status, headers, body = http(server.port, request("GET", path, server.port))
        assert status == 200 and headers["content-type"].split(";")[0] == kind, (path, headers)
        assert int(headers["content-length"]) == len(body) > 0
        status, head_headers, head_body = http(server.port, request("HEAD", path, server.port))
        assert status == 200 and head_body == b""
        assert head_headers["content-length"] == headers["content-length"]
        assert head_headers["content-type"] == headers["content-type"]


# =============================================================================================
# "A WebSocket upgrade request (RFC 6455 section 4) on any path, including /, is a chat
# connection" -- also the paths of files, which a GET would serve
# =============================================================================================

@pytest.mark.parametrize("path", ["/index.html", "/sub/page.txt", "/nowhere", "/../secret.txt",
                                  "/%ff%fe", "/?room=1", "/a/b/c/"])
def test_an_upgrade_on_any_path_is_a_chat_connection_never_a_file(shared, path):
    peer = shared.peer([V1], path=path)
    assert peer.subprotocol == V1
    name = f"path {path}"
    peer.send_json(m.JOIN, username=name)
    assert peer.recv() == {"type": m.JOIN, "payload": {"username": name}}
    peer.close()


# =============================================================================================
# "A malformed handshake gets a 4xx response, never a crash: 400 in general, and 426 with
# Sec-WebSocket-Version: 13 for a missing or unsupported version."
# =============================================================================================

GOOD_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


@pytest.mark.parametrize("drop, add, status", [
    ("Sec-WebSocket-Version", [], 426),
    ("Sec-WebSocket-Version", [("Sec-WebSocket-Version", "8")], 426),
    ("Sec-WebSocket-Version", [("Sec-WebSocket-Version", "thirteen")], 426),
    ("Sec-WebSocket-Key", [], 400),
    ("Sec-WebSocket-Key", [("Sec-WebSocket-Key", "c2hvcnQ=")], 400),
    ("Sec-WebSocket-Key", [("Sec-WebSocket-Key", "not base64 at all!")], 400),
    ("", [("Sec-WebSocket-Key", GOOD_KEY)], 400),                      # two keys
    ("Connection", [("Connection", "keep-alive")], 400),
    ("Host", [], 400),
    ("", [("Host", "127.0.0.1")], 400),                                # two Hosts
])
def test_a_malformed_handshake_gets_a_4xx_and_the_server_carries_on(shared, drop, add, status):
    fields = [("Host", f"127.0.0.1:{shared.port}"), ("Upgrade", "websocket"),
              ("Connection", "Upgrade"), ("Sec-WebSocket-Key", GOOD_KEY),
              ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Protocol", V2)]
    fields = [(k, v) for k, v in fields if k != drop] + add
    head = "GET / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n"
    got, headers, body = http(shared.port, head)
    assert got == status, (got, body)
    assert INDEX_MARK not in body
    if status == 426:
        assert headers.get("sec-websocket-version") == "13"
    # HTTP/1.0 cannot upgrade either.
    got, _, _ = http(shared.port, head.replace("HTTP/1.1", "HTTP/1.0", 1))
    assert 400 <= got < 500
    # The server carries on.
    peer = shared.peer([V1])
    peer.send_json(m.JOIN, username=f"after {drop or 'dup'} {status}")
    assert peer.recv()["type"] == m.JOIN
    peer.close()


# =============================================================================================
# "No client can make the server use unbounded memory or block other clients."
# =============================================================================================

def test_a_client_that_never_reads_is_dropped_with_one_leave_and_blocks_no_one(chat):
    # --max-send-buffer is the documented bound; long messages reach it sooner, and
    # with no rate limit two talkers can send as much as the kernel's buffers take.
    server = chat("--max-send-buffer", "262144", "--max-message-length", "100000",
                  "--rate", "0")
    join(server, "sleeper", 2, rcvbuf=4096)   # joins, then never reads again
    watcher = join(server, "watcher", 1)
    talkers = [join(server, "talker one"), join(server, "talker two")]
    readers = [watcher] + talkers
    for peer in readers:
        peer.barrier()
    # Up to 250 messages of 100,000 characters: 25 MB for the sleeper, far more than
    # the limit plus what the kernel's socket buffers on both sides can hold (~3 MB
    # on Linux loopback with the default tcp_wmem).
    for i in range(250):
        talker = talkers[i % 2]
        text = f"{i:03d}" + "t" * 99997
        talker.say(text)
        for peer in readers:   # the readers hear every message, none held up
            got = peer.expect(m.MESSAGE, 2.0)["payload"]
            assert (got["username"], got["message"]) == (talker.name, text)
        if left(watcher.messages(), "sleeper"):
            break
    else:
        pytest.fail("a client that never reads was not dropped after 25 MB")
    for peer in readers:
        peer.barrier()
        assert left(peer.messages(), "sleeper") == ["sleeper"]
        assert errors(peer.messages()) == []


def test_stalled_clients_block_no_one_and_a_huge_frame_header_is_refused_at_once(chat):
    server = chat()
    watcher = join(server, "watcher")
    # Half an HTTP request, then silence.
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    slow.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    # Half a frame: a header announcing 1,000 bytes, then 10 of them.
    stalled = join(server, "stalled")
    stalled.sock.sendall(encode_frame(OP_TEXT, b"x" * 1000, mask_key=os.urandom(4))[:18])
    # A header announcing 2**62 bytes: refused from the header (1009), nothing buffered.
    huge = join(server, "huge")
    huge.sock.sendall(bytes((0x81, 0x80 | 127)) + struct.pack("!Q", 1 << 62) + os.urandom(4))
    assert huge.wait_close() == 1009
    try:
        talker = join(server, "talker", 1)
        t0 = time.monotonic()
        for i in range(5):
            talker.say(f"round {i}")
            assert talker.expect(m.MESSAGE)["payload"]["message"] == f"round {i}"
            assert watcher.expect(m.MESSAGE)["payload"]["message"] == f"round {i}"
        assert time.monotonic() - t0 < 2.0
        watcher.barrier()
        assert left(watcher.messages(), "huge") == ["huge"]
    finally:
        slow.close()
