"""The chat over real sockets on 127.0.0.1: handshake policy, v1 and v2 side
by side, leaves on every kind of disconnect, bad input, the page, and the
`python -m chat` / `python -m chat.client` commands. Every wait is bounded."""
import json
import os
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

from chat import messages as m
from chat.room import Limits
from rawws.net.client import connect
from rawws.errors import ConnectionClosed, HandshakeError

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 5.0


def url(server):
    return f"ws://127.0.0.1:{server.port}/"


def open_chat(server, protocols=(m.PROTOCOL_V2,), **options):
    return connect(url(server), subprotocols=list(protocols), timeout=TIMEOUT, **options)


def recv_json(conn, timeout=TIMEOUT):
    return json.loads(conn.recv(timeout=timeout))


def wait_for(conn, kind, timeout=TIMEOUT):
    """The next message of type `kind`, skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        msg = recv_json(conn, max(0.01, deadline - time.monotonic()))
        if msg["type"] == kind:
            return msg


def send(conn, kind, **payload):
    conn.send_text(json.dumps({"type": kind, "payload": payload}))


def join(server, name, version=2):
    conn = open_chat(server, (m.PROTOCOL_V2,) if version == 2 else (m.PROTOCOL_V1,))
    send(conn, m.JOIN, username=name)
    if version == 2:
        wait_for(conn, m.WELCOME)
    wait_for(conn, m.JOIN)
    return conn


def raw_handshake(port, headers):
    """Send an upgrade request by hand; return (status, headers dict, body)."""
    lines = ["GET / HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             "Sec-WebSocket-Version: 13"] + [f"{k}: {v}" for k, v in headers]
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and (data.startswith(b"HTTP/1.1 101") or _complete(data)):
                break
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), fields, body


def _complete(data):
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def assert_left(conn, name, timeout=TIMEOUT):
    assert wait_for(conn, m.LEAVE, timeout)["payload"]["username"] == name


def wait_until(predicate, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# --- the handshake --------------------------------------------------------------------------

def test_a_handshake_without_a_subprotocol_is_refused_400_naming_both(chat_server):
    server, _ = chat_server()
    status, headers, body = raw_handshake(server.port, [])
    assert status == 400
    assert headers["content-type"].startswith("text/plain")
    assert m.PROTOCOL_V1.encode() in body and m.PROTOCOL_V2.encode() in body


def test_a_handshake_offering_only_other_subprotocols_is_refused_400(chat_server):
    server, _ = chat_server()
    with pytest.raises(HandshakeError) as info:
        open_chat(server, ["chat", "superchat"])
    assert info.value.status == 400


@pytest.mark.parametrize("offered", [[m.PROTOCOL_V1, m.PROTOCOL_V2],
                                     [m.PROTOCOL_V2, m.PROTOCOL_V1]])
def test_v2_is_chosen_when_both_are_offered(chat_server, offered):
    server, _ = chat_server()
    conn = open_chat(server, offered)
    assert conn.subprotocol == m.PROTOCOL_V2
    conn.close()


def test_v1_alone_is_accepted_as_v1(chat_server):
    server, _ = chat_server()
    conn = open_chat(server, ["chat", m.PROTOCOL_V1])
    assert conn.subprotocol == m.PROTOCOL_V1
    conn.close()


def test_any_path_is_a_chat_endpoint(chat_server):
    server, _ = chat_server()
    conn = connect(f"ws://127.0.0.1:{server.port}/some/where?x=1",
                   subprotocols=[m.PROTOCOL_V2], timeout=TIMEOUT)
    send(conn, m.JOIN, username="a")
    assert recv_json(conn)["type"] == m.WELCOME
    conn.close()


def test_the_servers_own_origin_is_accepted(chat_server):
    server, _ = chat_server()
    open_chat(server, origin=f"http://127.0.0.1:{server.port}").close()


def test_no_origin_is_accepted(chat_server):
    server, _ = chat_server()
    status, _, _ = raw_handshake(server.port, [("Sec-WebSocket-Protocol", m.PROTOCOL_V2)])
    assert status == 101


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1"])
def test_a_foreign_origin_is_refused_403(chat_server, origin):
    server, _ = chat_server()
    with pytest.raises(HandshakeError) as info:
        open_chat(server, origin=origin)
    assert info.value.status == 403


def test_allowed_origin_admits_that_origin(chat_server):
    server, _ = chat_server(allowed_origins=["http://chat.example"])
    open_chat(server, origin="http://chat.example").close()
    with pytest.raises(HandshakeError):
        open_chat(server, origin="http://evil.example")


def test_allowed_origin_star_admits_any(chat_server):
    server, _ = chat_server(allowed_origins=["*"])
    open_chat(server, origin="http://evil.example").close()


# --- chatting ------------------------------------------------------------------------------------

def test_v2_join_message_and_leave(chat_server):
    server, _ = chat_server()
    a = join(server, "a")
    b = open_chat(server)
    send(b, m.JOIN, username="b")
    welcome = recv_json(b)
    assert welcome["type"] == m.WELCOME and welcome["payload"]["users"] == ["a", "b"]
    assert wait_for(a, m.JOIN)["payload"]["username"] == "b"
    send(a, m.MESSAGE, message="hello")
    for conn in (a, b):
        payload = wait_for(conn, m.MESSAGE)["payload"]
        assert (payload["id"], payload["username"], payload["message"]) == (1, "a", "hello")
    b.close()
    assert_left(a, "b")
    a.close()


def test_v1_join_message_and_leave(chat_server):
    server, _ = chat_server()
    a = join(server, "a", version=1)
    b = join(server, "b", version=1)
    assert recv_json(a) == {"type": "chat-join", "payload": {"username": "b"}}
    send(b, m.MESSAGE, username="b", message="Hello, Goats!")
    expected = {"type": "chat-message", "payload": {"username": "b", "message": "Hello, Goats!"}}
    assert recv_json(a) == expected and recv_json(b) == expected
    b.close()
    assert recv_json(a) == {"type": "chat-leave", "payload": {"username": "b"}}
    a.close()


def test_v1_and_v2_share_the_room(chat_server):
    server, _ = chat_server()
    old = join(server, "old", version=1)
    new = join(server, "new", version=2)
    wait_for(old, m.JOIN)
    send(old, m.MESSAGE, username="old", message="from v1")
    assert wait_for(new, m.MESSAGE)["payload"]["message"] == "from v1"
    assert recv_json(old)["payload"]["message"] == "from v1"
    send(new, m.MESSAGE, message="from v2")
    assert recv_json(old) == {"type": "chat-message",
                              "payload": {"username": "new", "message": "from v2"}}
    old.close(), new.close()


def test_v1_taken_name_gets_a_variant_over_the_wire(chat_server):
    server, _ = chat_server()
    first = join(server, "Beej")
    second = open_chat(server, [m.PROTOCOL_V1])
    send(second, m.JOIN, username="Beej")
    assert recv_json(second)["payload"]["username"] == "Beej (2)"
    first.close(), second.close()


# --- leaving, however it happens ---------------------------------------------------------------

def test_leave_on_a_close_frame(chat_server):
    server, _ = chat_server()
    watcher, goer = join(server, "watcher"), join(server, "goer")
    goer.close(1000)
    assert_left(watcher, "goer")
    watcher.close()


def test_leave_on_a_tcp_close_without_a_close_frame(chat_server):
    server, _ = chat_server()
    watcher, goer = join(server, "watcher"), join(server, "goer", version=1)
    goer.sock.close()
    assert_left(watcher, "goer")
    watcher.close()


def test_leave_on_a_tcp_reset(chat_server):
    server, _ = chat_server()
    watcher, goer = join(server, "watcher", version=1), join(server, "goer")
    goer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    goer.sock.close()   # SO_LINGER 0: the close sends RST
    assert_left(watcher, "goer")
    watcher.close()


def test_a_closing_connection_hears_no_more_and_leaves_once_its_close_completes(chat_server):
    """A connection the server has started closing stays in the room (the room
    hears of it only through on_close); a broadcast meanwhile skips it, since
    its handle's send returns False, and the others hear as ever."""
    server, app = chat_server()
    handles, on_open = [], app.on_open
    app.on_open = lambda ws: (handles.append(ws), on_open(ws))
    watcher, goer = join(server, "watcher"), join(server, "goer")
    wait_for(watcher, m.JOIN)
    closing = threading.Event()

    def start_closing():   # on the server's loop, as a kick would
        handle = next(ws for ws in handles if app.room.member(ws).name == "goer")
        handle.close(1000, "bye")
        closing.set()

    server.loop.call_soon_threadsafe(start_closing)
    assert closing.wait(TIMEOUT)
    send(watcher, m.MESSAGE, message="while goer is closing")
    assert wait_for(watcher, m.MESSAGE)["payload"]["message"] == "while goer is closing"
    with pytest.raises(ConnectionClosed):   # goer gets the Close, not the message
        while True:
            assert json.loads(goer.recv(timeout=TIMEOUT))["type"] != m.MESSAGE
    assert goer.close_code == 1000
    assert_left(watcher, "goer")            # its Close answered: on_close, one leave
    send(watcher, m.MESSAGE, message="after")
    assert recv_json(watcher)["payload"]["message"] == "after"   # no second leave between
    wait_until(lambda: app.room.users == ["watcher"])
    watcher.close()


def test_server_shutdown_closes_every_websocket_with_1001_and_empties_the_room(chat_server):
    server, app = chat_server()
    conns = [join(server, name) for name in ("a", "b", "c")]
    server.shutdown()
    for conn in conns:
        with pytest.raises(ConnectionClosed):
            while True:
                conn.recv(timeout=TIMEOUT)
        assert conn.close_code == 1001
        conn.close()
    wait_until(lambda: len(app.room) == 0)


def test_a_kick_is_a_1008_close_and_a_leave(chat_server):
    server, _ = chat_server(limits=Limits(rate=1, burst=1, flood_kick=3))
    watcher, flooder = join(server, "watcher"), open_chat(server)
    send(flooder, m.JOIN, username="flooder")
    wait_for(watcher, m.JOIN)
    for _ in range(5):
        try:
            send(flooder, m.MESSAGE, message="spam")
        except ConnectionClosed:
            break
    assert_left(watcher, "flooder")
    with pytest.raises(ConnectionClosed):
        while True:
            flooder.recv(timeout=TIMEOUT)
    assert flooder.close_code == 1008
    watcher.close()


# --- bad input ------------------------------------------------------------------------------------

def test_v2_bad_json_gets_a_chat_error_and_the_connection_stays(chat_server):
    server, _ = chat_server()
    conn = join(server, "a")
    conn.send_text("{not json")
    error = recv_json(conn)
    assert error["type"] == m.ERROR and error["payload"]["code"] == m.BAD_JSON
    send(conn, m.MESSAGE, message="still here")
    assert wait_for(conn, m.MESSAGE)["payload"]["message"] == "still here"
    conn.close()


def test_v1_bad_json_is_ignored_and_others_notice_nothing(chat_server):
    server, _ = chat_server()
    other = join(server, "other")
    v1 = join(server, "v1", version=1)
    wait_for(other, m.JOIN)
    for text in ("{not json", "[]", '{"type": "chat-message", "payload": "hi"}', "x" * 1000):
        v1.send_text(text)
    send(v1, m.MESSAGE, message="fine")
    assert recv_json(v1)["payload"] == {"username": "v1", "message": "fine"}
    assert recv_json(other)["payload"]["message"] == "fine"
    v1.close(), other.close()


def test_v2_binary_message_gets_binary_unsupported(chat_server):
    server, _ = chat_server()
    conn = join(server, "a")
    conn.send_binary(b"\x00\x01\x02")
    assert recv_json(conn)["payload"]["code"] == m.BINARY_UNSUPPORTED
    conn.close()


def test_a_message_over_the_websocket_size_limit_closes_1009(chat_server):
    server, _ = chat_server(max_message_size=1024)
    watcher, big = join(server, "watcher"), join(server, "big")
    send(big, m.MESSAGE, message="x" * 2000)
    with pytest.raises(ConnectionClosed):
        while True:
            big.recv(timeout=TIMEOUT)
    assert big.close_code == 1009
    assert_left(watcher, "big")
    watcher.close()


# --- the commands --------------------------------------------------------------------------------

@pytest.fixture
def chat_process(tmp_path):
    """Start `python -m chat --port 0 ...`; return (process, port)."""
    procs = []

    def start(*args):
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        log = open(tmp_path / f"chat-{len(procs)}.log", "w+")   # a file: a pipe could fill up
        proc = subprocess.Popen([sys.executable, "-m", "chat", "--port", "0", *args],
                                stdout=subprocess.PIPE, stderr=log, text=True, cwd="/", env=env)
        procs.append((proc, log))
        line = proc.stdout.readline()
        if not line.startswith("Serving on http://127.0.0.1:"):
            log.seek(0)
            pytest.fail(f"no Serving line: {line!r}\n{log.read()}")
        return proc, int(line.rsplit(":", 1)[1].strip("/\n"))

    yield start
    for proc, log in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        proc.stdout.close(), log.close()


def http_get(port, path="/"):
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


def test_python_m_chat_serves_the_page_from_www_whatever_the_cwd(chat_process):
    proc, port = chat_process()
    head, body = http_get(port)
    assert head.startswith("HTTP/1.1 200")
    assert "content-type: text/html" in head.lower()
    assert b'id="chat-output"' in body


def test_sigterm_closes_websockets_1001_and_exits_0(chat_process):
    proc, port = chat_process()
    conn = connect(f"ws://127.0.0.1:{port}/", subprotocols=[m.PROTOCOL_V1], timeout=TIMEOUT)
    proc.send_signal(signal.SIGTERM)
    with pytest.raises(ConnectionClosed):
        while True:
            conn.recv(timeout=TIMEOUT)
    assert conn.close_code == 1001
    conn.close()
    assert proc.wait(TIMEOUT) == 0


def test_python_m_chat_limit_options_reach_the_welcome(chat_process):
    proc, port = chat_process("--max-message-length", "500", "--max-username-length", "12",
                              "--rate", "15", "--burst", "25")
    conn = connect(f"ws://127.0.0.1:{port}/", subprotocols=[m.PROTOCOL_V2], timeout=TIMEOUT)
    send(conn, m.JOIN, username="a")
    assert recv_json(conn)["payload"]["limits"] == {
        "maxMessageLength": 500, "maxUsernameLength": 12, "ratePerSecond": 15.0, "burst": 25}
    conn.close()


def test_python_m_chat_handshake_timeout_option_drops_an_unfinished_request(chat_process):
    proc, port = chat_process("--handshake-timeout", "0.3")
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")   # never finished
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - started < TIMEOUT


def test_python_m_chat_keepalive_options_close_a_silent_peer_with_1011(chat_process):
    proc, port = chat_process("--ping-interval", "0.2", "--ping-timeout", "0.2",
                              "--close-timeout", "0.3")
    conn = connect(f"ws://127.0.0.1:{port}/", subprotocols=[m.PROTOCOL_V2], timeout=TIMEOUT)
    # This client answers pings only while it reads; it reads nothing for a while.
    time.sleep(0.8)
    with pytest.raises(ConnectionClosed):
        while True:
            conn.recv(timeout=TIMEOUT)
    assert conn.close_code == 1011


def test_python_m_chat_allowed_origin_option(chat_process):
    proc, port = chat_process("--allowed-origin", "http://one.example", "http://two.example")
    for origin in ("http://one.example", "http://two.example"):
        connect(f"ws://127.0.0.1:{port}/", subprotocols=[m.PROTOCOL_V2], origin=origin,
                timeout=TIMEOUT).close()
    with pytest.raises(HandshakeError):
        connect(f"ws://127.0.0.1:{port}/", subprotocols=[m.PROTOCOL_V2],
                origin="http://three.example", timeout=TIMEOUT)


def read_until(stream, text, timeout=TIMEOUT):
    """A child's output up to and including `text`, waiting at most `timeout`."""
    deadline = time.monotonic() + timeout
    seen = ""
    while text not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{text!r} not printed; got {seen!r}"
        ready, _, _ = select.select([stream], [], [], remaining)
        if ready:   # os.read, not readline: a buffered reader could hide lines from select
            chunk = os.read(stream.fileno(), 65536)
            assert chunk, f"end of output before {text!r}; got {seen!r}"
            seen += chunk.decode("utf-8", "replace")
    return seen


def test_the_terminal_client_chats_and_quits(chat_server):
    server, _ = chat_server()
    watcher = join(server, "watcher")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "chat.client", url(server), "--name", "term"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert wait_for(watcher, m.JOIN)["payload"]["username"] == "term"
        proc.stdin.write("hello from the terminal\n")
        proc.stdin.flush()
        assert wait_for(watcher, m.MESSAGE)["payload"] == {
            "id": 1, "username": "term", "message": "hello from the terminal",
            "time": pytest.approx(time.time() * 1000, abs=60_000)}
        proc.stdin.write("/name renamed\n")
        proc.stdin.flush()
        assert wait_for(watcher, m.RENAME)["payload"]["to"] == "renamed"
        send(watcher, m.MESSAGE, message="hi \x1b[2J term")
        seen = read_until(proc.stdout, "<watcher> hi")
        assert "* term is now renamed" in seen
        assert "<watcher> hi \\x1b[2J term" in seen     # escape sequences are shown, not run
        proc.stdin.write("/quit\n")
        proc.stdin.flush()
        assert proc.wait(TIMEOUT) == 0
        assert_left(watcher, "renamed")
        assert "<term> hello from the terminal" in seen
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()
    watcher.close()


def test_the_terminal_client_exits_0_at_end_of_input(chat_server):
    server, _ = chat_server()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "chat.client", url(server), "--name", "eof"],
                          input="", capture_output=True, text=True, env=env, timeout=TIMEOUT * 2)
    assert proc.returncode == 0, proc.stderr


def test_the_terminal_client_sends_lines_typed_before_its_join_is_answered_in_order(chat_server):
    server, _ = chat_server()
    watcher = join(server, "watcher")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "chat.client", url(server), "--name", "piped"],
                          input="first\n/name renamed\nsecond\n", capture_output=True,
                          text=True, env=env, timeout=TIMEOUT * 2)
    assert proc.returncode == 0, proc.stderr
    assert wait_for(watcher, m.MESSAGE)["payload"]["username"] == "piped"
    assert wait_for(watcher, m.RENAME)["payload"]["to"] == "renamed"
    second = wait_for(watcher, m.MESSAGE)["payload"]
    assert (second["username"], second["message"]) == ("renamed", "second")
    watcher.close()


def test_the_terminal_client_reports_a_refused_connection(chat_server):
    server, _ = chat_server()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "chat.client", url(server), "--origin",
                           "http://evil.example"], input="", capture_output=True, text=True,
                          env=env, timeout=TIMEOUT * 2)
    assert proc.returncode == 1 and "403" in proc.stderr


def run_chat(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "chat", *args], capture_output=True, text=True,
                          env=env, timeout=TIMEOUT * 2, stdin=subprocess.DEVNULL)


def test_python_m_chat_refuses_a_missing_web_root(tmp_path):
    proc = run_chat("--port", "0", "--root", str(tmp_path / "nowhere"))
    assert proc.returncode == 1 and "not a folder" in proc.stderr and proc.stdout == ""


def test_python_m_chat_reports_a_port_in_use():
    with socket.create_server(("127.0.0.1", 0)) as busy:
        proc = run_chat("--port", str(busy.getsockname()[1]))
    assert proc.returncode == 1 and "cannot listen" in proc.stderr and "Traceback" not in proc.stderr
