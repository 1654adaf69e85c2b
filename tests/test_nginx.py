"""Behind a load balancer: deploy/nginx.conf (Debian's nginx, tests/nginx_server.py)
in front of two chat servers sharing one Redis (tests/redis_server.py).

nginx serves the page itself and hands every WebSocket upgrade to the chat
servers, round robin; the first test checks the plumbing with rawws's own
client, the second has two Chromium pages (tests/cdp.py) land on different
backends and chat through the page's UI.
"""
from __future__ import annotations

import json
import os
import socket

import pytest

try:
    from tests import cdp
    from tests.chat_cluster import ROOT, ChatClient, ChatProcess, health, wait_until
    from tests.nginx_server import nginx  # noqa: F401 (a fixture)
    from tests.redis_server import redis_server  # noqa: F401 (a fixture)
except ImportError:                      # tests/ run as a rootdir, not a package
    import cdp
    from chat_cluster import ROOT, ChatClient, ChatProcess, health, wait_until
    from nginx_server import nginx  # noqa: F401
    from redis_server import redis_server  # noqa: F401

WWW = ROOT / "www"
WAIT = 10.0


@pytest.fixture
def backends(redis_server):
    """Two chat servers on one Redis: [ChatProcess, ChatProcess]."""
    redis = redis_server()
    servers = [ChatProcess("--backplane", redis.url, "--root", str(WWW)) for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     f"Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ", 2)[1]), headers, body


def connections(server: ChatProcess) -> int:
    return health(server.port)["connections"]


def test_nginx_serves_the_page_and_spreads_websockets_over_the_servers(backends, nginx):
    proxy = nginx([server.port for server in backends], WWW)
    status, headers, body = http_get(proxy.port, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert body == (WWW / "index.html").read_bytes()
    assert "nginx" in headers.get("Server", "")        # served by nginx, not a backend
    status, _, body = http_get(proxy.port, "/healthz")
    assert status == 200 and json.loads(body)["backplane"] == "up"

    users = [ChatClient(proxy.port, version, name)
             for version, name in ((2, "Ada"), (1, "Bob"), (2, "Cy"), (1, "Dee"))]
    try:
        # Round robin: two on each server.
        wait_until(lambda: [connections(server) for server in backends] == [2, 2],
                   what="two connections on each chat server")
        users[0].say("hello through nginx")
        users[3].say("and back")
        for user in users:
            user.wait_text("hello through nginx")
            user.wait_text("and back")
    finally:
        for user in users:
            user.close()


@pytest.mark.browser
def test_two_browser_pages_on_different_backends_chat_through_nginx(backends, nginx):
    executable = cdp.find_browser()
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no Chromium found; CI=true requires it", pytrace=False)
        pytest.skip("no Chromium found (apt-get install chromium)")
    proxy = nginx([server.port for server in backends], WWW)
    browser = cdp.Browser.launch(executable)
    pages = []
    try:
        for name in ("Ada", "Grace"):
            page = browser.new_page(width=1000, height=700)
            pages.append(page)
            page.navigate(proxy.url)
            page.wait_for("window.rawwsChat && window.rawwsChat.joined()", WAIT)
            page.fill("#chat-username", name)
            page.press_enter()
            page.wait_for(f"window.rawwsChat.username() === {json.dumps(name)}", WAIT)
        # One page on each chat server.
        wait_until(lambda: [connections(server) for server in backends] == [1, 1],
                   what="one page on each chat server")
        ada, grace = pages
        for page, name, text, other in ((ada, "Ada", "Hello from backend one", grace),
                                        (grace, "Grace", "And hello from two", ada)):
            page.fill("#chat-input", text)
            page.press_enter()
            other.wait_for(
                "Array.from(document.querySelectorAll('#chat-output > [data-kind=\"message\"]'))"
                f".some(e => e.dataset.user === {json.dumps(name)} && "
                f"e.querySelector('.msg-text').textContent === {json.dumps(text)})", WAIT)
        users = ("Array.from(document.querySelectorAll('#chat-users [data-user]'))"
                 ".map(e => e.dataset.user)")
        assert sorted(ada.evaluate(users)) == ["Ada", "Grace"]
        assert not ada.errors and not grace.errors, ada.errors + grace.errors
    finally:
        for page in pages:
            page.close()
        browser.close()
