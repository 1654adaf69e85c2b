"""End to end over TLS: the page from `python -m chat --certfile` in headless Chromium.

Chromium trusts the test certificate through
`--ignore-certificate-errors-spki-list` with the SHA-256 of its public key
(tests/tls_certs.py): that one key is accepted, every other certificate
error still stands. An https page may only open wss: sockets (mixed
content is blocked), so a page that joins has chatted over wss.

Skipped without Chromium, failing under CI=true, as tests/test_browser.py.
"""
from __future__ import annotations

import json
import os

import pytest

try:
    from tests import cdp
    from tests.test_browser import WAIT, ChatServer, message_js, say, unique
except ImportError:                      # tests/ run as a rootdir, not a package
    import cdp
    from test_browser import WAIT, ChatServer, message_js, say, unique

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def tls_browser(tls_certs):
    executable = cdp.find_browser()
    if executable is None:
        reason = "no Chromium found ($RAWWS_CHROMIUM, or chromium on PATH)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    chromium = cdp.Browser.launch(executable, extra_flags=(
        f"--ignore-certificate-errors-spki-list={tls_certs.spki_sha256}",))
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def tls_chat(tls_browser, tls_certs):
    chat = ChatServer(args=("--certfile", str(tls_certs.cert), "--keyfile", str(tls_certs.key)))
    yield chat
    chat.stop()


def open_page(browser: cdp.Browser, chat: ChatServer, name: str) -> cdp.Page:
    page = browser.new_page(width=1100, height=700)
    page.navigate(chat.url)
    page.wait_for("window.rawwsChat && window.rawwsChat.joined()", WAIT)
    page.fill("#chat-username", name)
    page.press_enter()
    page.wait_for(f"window.rawwsChat.username() === {json.dumps(name)}", WAIT)
    return page


def test_the_server_says_https(tls_chat):
    assert tls_chat.url.startswith("https://127.0.0.1:")


def test_two_pages_chat_over_wss(tls_browser, tls_chat):
    ada, grace = unique("Ada"), unique("Grace")
    page_a = open_page(tls_browser, tls_chat, ada)
    page_b = open_page(tls_browser, tls_chat, grace)
    try:
        for page in (page_a, page_b):
            assert page.evaluate("location.protocol") == "https:"
            assert page.evaluate("window.rawwsChat.protocol()") == "beej-chat-protocol-v2"
        text = unique("Hello over TLS")
        say(page_a, text)
        page_b.wait_for(f"!!({message_js(ada, text)})", WAIT)
        reply = unique("Hi back, encrypted")
        say(page_b, reply)
        page_a.wait_for(f"!!({message_js(grace, reply)})", WAIT)
        assert not page_a.errors and not page_b.errors, page_a.errors + page_b.errors
    finally:
        page_a.close()
        page_b.close()
