"""The static file server as a client sees it: HTTP/1.1 over a real socket, same port as WebSockets."""
from __future__ import annotations

import os
import time

import pytest

from rawws.net.client import connect
from rawws.echo import EchoApp
from rawws.frames import OP_TEXT

SECRET = b"TOP-SECRET-do-not-serve"
INDEX = b"<!doctype html><title>test</title><p>hello</p>\n"


@pytest.fixture
def site(tmp_path):
    """A web root, with a secret file next to it (outside) and a symlink pointing at it."""
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "style.css").write_bytes(b"body { color: black }\n")
    (root / "sub" / "page.txt").write_bytes(b"in a sub directory\n")
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "www-secret").mkdir()
    (tmp_path / "www-secret" / "index.html").write_bytes(SECRET)   # shares the root's prefix
    os.symlink(tmp_path / "secret.txt", root / "link-out")
    return root


@pytest.fixture
def server(serve, site):
    return serve(EchoApp(), web_root=site, handshake_timeout=5.0)


def get(target: str, *, method: str = "GET", extra: str = "", version: str = "HTTP/1.1") -> bytes:
    return f"{method} {target} {version}\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode("latin-1")


def test_get_root_serves_index_html(server, raw):
    client = raw(server)
    client.send(get("/"))
    response, body = client.read_response()
    assert response.status == 200
    assert response.headers.get("Content-Type").startswith("text/html")
    assert int(response.headers.get("Content-Length")) == len(INDEX)
    assert body == INDEX


def test_content_types(server, raw):
    client = raw(server)
    client.send(get("/style.css") + get("/sub/page.txt"))
    css, _ = client.read_response()
    text, body = client.read_response()
    assert css.headers.get("Content-Type").startswith("text/css")
    assert text.headers.get("Content-Type").startswith("text/plain")
    assert body == b"in a sub directory\n"


def test_head_has_headers_but_no_body(server, raw):
    client = raw(server)
    client.send(get("/", method="HEAD"))
    response, body = client.read_response(head=True)
    assert response.status == 200
    assert int(response.headers.get("Content-Length")) == len(INDEX)
    assert body == b""
    # No body bytes follow: the next response starts right away.
    client.send(get("/style.css"))
    response, body = client.read_response()
    assert response.status == 200 and body == b"body { color: black }\n"


def test_keep_alive_two_requests_on_one_connection(server, raw):
    client = raw(server)
    for _ in range(2):
        client.send(get("/"))
        response, body = client.read_response()
        assert response.status == 200 and body == INDEX
        assert "close" not in response.headers.get_tokens("Connection")


def test_pipelined_requests_answered_in_order(server, raw):
    client = raw(server)
    client.send(get("/") + get("/missing") + get("/style.css", method="HEAD") + get("/sub/page.txt"))
    statuses = []
    for head in (False, False, True, False):
        response, _ = client.read_response(head=head)
        statuses.append(response.status)
    assert statuses == [200, 404, 200, 200]


def test_connection_close_closes(server, raw):
    client = raw(server)
    client.send(get("/", extra="Connection: close\r\n") + get("/style.css"))
    response, body = client.read_response()
    assert response.status == 200 and body == INDEX
    assert "close" in response.headers.get_tokens("Connection")
    assert client.expect_eof() == b""                    # the second request is not answered


def test_http_1_0_closes_by_default(server, raw):
    client = raw(server)
    client.send(b"GET / HTTP/1.0\r\n\r\n")
    response, body = client.read_response()
    assert response.status == 200 and body == INDEX
    assert client.expect_eof() == b""


def test_missing_file_is_404(server, raw):
    client = raw(server)
    client.send(get("/nope.html"))
    response, _ = client.read_response()
    assert response.status == 404
    client.send(get("/"))                                # the connection stays usable
    assert client.read_response()[0].status == 200


def test_post_is_405_with_allow_and_its_body_is_not_a_request(server, raw):
    client = raw(server)
    smuggled = get("/style.css")
    client.send(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\n\r\n" % len(smuggled) + smuggled)
    response, body = client.read_response()
    assert response.status == 405
    assert {method.strip() for method in response.headers.get("Allow").split(",")} == {"GET", "HEAD"}
    assert INDEX not in body
    assert client.expect_eof() == b""                    # nothing answered the smuggled GET


@pytest.mark.parametrize("method", ["PUT", "DELETE", "OPTIONS"])
def test_other_methods_never_serve_a_file(server, raw, method):
    client = raw(server)
    client.send(get("/", method=method, extra="Content-Length: 0\r\n"))
    response, body = client.read_response()
    assert 400 <= response.status < 600
    assert INDEX not in body


@pytest.mark.parametrize("target", [
    "/../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/..%2fsecret.txt",
    "/..%2Fsecret.txt",
    "/%2e%2e%2fsecret.txt",
    "/.%2e/secret.txt",
    "/sub/../../secret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "/..\\secret.txt",
    "/%5c..%5csecret.txt",
    "//secret.txt",
    "/link-out",
    "/../www-secret/index.html",
    "/%2e%2e/www-secret/",
    "http://127.0.0.1/../secret.txt",
])
def test_traversal_over_the_wire_never_leaves_the_root(server, raw, target):
    client = raw(server)
    client.send(get(target))
    response, body = client.read_response()
    assert response.status in (400, 403, 404)
    assert SECRET not in body


def test_headers_up_to_8_kib_are_accepted(server, raw):
    client = raw(server)
    headers = "".join(f"X-Filler-{n}: {'a' * 190}\r\n" for n in range(40))
    assert 8000 <= len(headers) <= 8192
    client.send(get("/", extra=headers))
    assert client.read_response()[0].status == 200


def test_request_head_over_16_kib_is_431(server, raw):
    client = raw(server)
    headers = "".join(f"X-Filler-{n}: {'a' * 480}\r\n" for n in range(40))   # ~20 KiB
    client.send(get("/", extra=headers))
    response, _ = client.read_response()
    assert response.status == 431
    assert client.expect_eof() == b""


def test_request_line_over_8_kib_is_414(server, raw):
    client = raw(server)
    client.send(get("/" + "a" * 9000))
    response, _ = client.read_response()
    assert response.status == 414
    assert client.expect_eof() == b""


def test_endless_request_line_is_refused_early(server, raw):
    # No line feed ever: refused once the limit is passed, not buffered forever.
    client = raw(server)
    client.send(b"GET /" + b"a" * 20000)
    response, _ = client.read_response()
    assert response.status == 414


def test_slowloris_is_dropped_after_http_timeout(serve, site, raw):
    server = serve(EchoApp(), web_root=site, handshake_timeout=0.5)
    client = raw(server)
    client.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    started = time.monotonic()
    dropped = False
    while time.monotonic() - started < 4:
        try:
            client.send(b"X-a: b\r\n")                   # trickle, never finish the head
        except OSError:
            dropped = True
            break
        time.sleep(0.1)
        client.sock.settimeout(0.01)
        try:
            if client.sock.recv(4096) == b"":
                dropped = True
                break
        except TimeoutError:
            pass
        except ConnectionResetError:
            dropped = True
            break
    elapsed = time.monotonic() - started
    assert dropped, "the slow client was never dropped"
    assert 0.3 <= elapsed < 3


def test_idle_keep_alive_connection_is_dropped_after_http_timeout(serve, site, raw):
    server = serve(EchoApp(), web_root=site, handshake_timeout=0.5)
    client = raw(server)
    client.send(get("/"))
    assert client.read_response()[0].status == 200
    started = time.monotonic()
    assert client.expect_eof() == b""
    assert time.monotonic() - started < 3


def test_files_and_websockets_on_one_port(server, raw):
    client = raw(server)
    client.send(get("/"))
    assert client.read_response()[1] == INDEX
    with connect(f"ws://127.0.0.1:{server.port}/") as ws:
        ws.send_text("same port")
        assert ws.recv(timeout=5) == "same port"
    client.send(get("/style.css"))
    assert client.read_response()[0].status == 200


def test_upgrade_after_a_file_on_the_same_connection(server, raw):
    client = raw(server)
    client.send(get("/"))
    assert client.read_response()[1] == INDEX
    client.upgrade("/")
    client.send_frame(OP_TEXT, b"upgraded")
    frame = client.recv_frame()
    assert (frame.opcode, frame.payload) == (OP_TEXT, b"upgraded")


def test_bad_upgrade_on_a_file_path_gets_4xx_not_the_file(server, raw):
    client = raw(server)
    client.send(get("/index.html", extra="Upgrade: websocket\r\nConnection: Upgrade\r\n"))
    response, body = client.read_response()
    assert 400 <= response.status < 500
    assert INDEX not in body


def test_if_none_match_gives_304(server, raw):
    client = raw(server)
    client.send(get("/"))
    response, _ = client.read_response()
    etag = response.headers.get("ETag")
    client.send(get("/", extra=f"If-None-Match: {etag}\r\n"))
    response, body = client.read_response()
    assert response.status == 304 and body == b""
    client.send(get("/"))                                 # no stray body bytes before this
    assert client.read_response()[1] == INDEX


def test_no_web_root_is_404_for_files(serve, raw):
    client = raw(serve(EchoApp()))
    client.send(get("/"))
    assert client.read_response()[0].status == 404


def test_pipelining_client_that_never_reads_is_paused(serve, site, raw):
    # Requests are tiny and answers large: without backpressure the server
    # would buffer answers for as long as the client keeps asking.
    (site / "big.bin").write_bytes(os.urandom(64 * 1024))
    server = serve(EchoApp(), web_root=site, read_pause_bytes=256 * 1024)
    client = raw(server, timeout=1.0)
    batch = get("/big.bin") * 1000
    sent = 0
    limit = 64 * 1024 * 1024
    with pytest.raises(TimeoutError):     # sendall blocks once the server stops reading
        while sent < limit:
            client.send(batch)
            sent += len(batch)
    conn = next(iter(server.connections))
    assert len(conn.out) < 256 * 1024 + 256 * 1024 // 40 * (64 * 1024 + 400)
    assert len(conn.out) < 64 * 1024 * 1024
    client.reset()


def test_many_pipelined_requests_all_answered_when_the_client_reads(serve, site, raw):
    # The requests the server holds back while paused are answered once its
    # output drains, even though no new bytes arrive from the client.
    body = os.urandom(64 * 1024)
    (site / "big.bin").write_bytes(body)
    server = serve(EchoApp(), web_root=site, read_pause_bytes=128 * 1024)
    client = raw(server)
    client.send(get("/big.bin") * 200 + get("/", extra="Connection: close\r\n"))
    for _ in range(200):
        response, received = client.read_response()
        assert response.status == 200 and received == body
    assert client.read_response()[1] == INDEX
    assert client.expect_eof() == b""


# ---- what a reviewer found: each answered, none left hanging ---------------

def test_head_with_upgrade_headers_is_answered_like_a_head(server, raw):
    client = raw(server)
    client.send(get("/", method="HEAD", extra="Upgrade: websocket\r\nConnection: Upgrade\r\n")
                + get("/style.css"))
    head, _ = client.read_response(head=True)
    assert head.status == 200
    # No body followed the HEAD's head: the next bytes are the next answer.
    follow_up, body = client.read_response()
    assert follow_up.status == 200 and body == b"body { color: black }\n"


def test_unparsable_if_modified_since_is_ignored(server, raw):
    client = raw(server)
    client.send(get("/", extra="If-Modified-Since: 1 Jan 99999999999999999999 00:00:00 GMT\r\n"))
    response, body = client.read_response()
    assert response.status == 200 and body == INDEX


def test_bytes_after_a_closing_answer_are_not_buffered(serve, site, raw):
    # More than the kernel takes at once, so the answer stays queued; with a
    # high read-pause mark the server keeps reading what the peer sends next.
    (site / "big.bin").write_bytes(os.urandom(16 * 1024 * 1024))
    server = serve(EchoApp(), web_root=site, handshake_timeout=5.0, read_pause_bytes=64 * 1024 * 1024)
    client = raw(server)
    client.send(get("/big.bin", extra="Connection: close\r\n"))
    client.sock.settimeout(0.2)
    junk = b"x" * 65536
    sent = 0
    deadline = time.monotonic() + 3
    while sent < 32 * 1024 * 1024 and time.monotonic() < deadline:   # we never read
        try:
            sent += client.sock.send(junk)
        except (TimeoutError, OSError):
            break
    buffered = [len(conn.session.parser._buf) for conn in list(server.connections)
                if hasattr(conn.session, "parser")]
    assert all(size < 1024 * 1024 for size in buffered), buffered


def test_many_keep_alive_requests_keep_one_timer(serve, site, raw):
    server = serve(EchoApp(), web_root=site, handshake_timeout=30.0)
    client = raw(server)
    client.send(get("/style.css") * 300)
    for _ in range(300):
        assert client.read_response()[0].status == 200
    assert len(server.loop._timers) < 20
