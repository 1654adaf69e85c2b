"""End to end: the page in www/ in a real (headless) Chromium, against `python -m chat`.

The browser is driven over the DevTools protocol by tests/cdp.py, which
speaks it with rawws's own client. Each test types into the page the way a
person does (click, type, Enter) and reads what the page shows in
#chat-output; `window.rawwsChat` (the page's read-only hooks) is used only
to know when the page has connected and joined.

Without Chromium these tests are skipped, except under CI=true, where a
missing browser is a failure. RAWWS_SCREENSHOT=1 also writes
docs/screenshot.png from the conversation in `test_conversation_screenshot`.
"""
from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

try:
    from tests import cdp
except ImportError:                      # tests/ run as a rootdir, not a package
    import cdp

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
WWW = ROOT / "www"
SCREENSHOT = ROOT / "docs" / "screenshot.png"
WAIT = 10.0                               # seconds for anything the page should do promptly


# ---- the chat server --------------------------------------------------------

class ChatServer:
    """`python -m chat` in a subprocess, on `port` (0: a free one); `args` are added
    to its command line (--certfile: then its url is https://)."""

    def __init__(self, port: int = 0, args: tuple[str, ...] = ()) -> None:
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chat", "--host", "127.0.0.1", "--port", str(port),
             "--root", str(WWW), *args],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        lines: queue.Queue[str | None] = queue.Queue()
        # A reader thread drains the output for the server's whole life, so
        # its logging can never fill the pipe and block it.
        threading.Thread(target=self._drain, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + WAIT
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise TimeoutError(f"the chat server printed no 'Serving on' line:\n{self.log}")
            if line is None:
                self.stop()
                raise RuntimeError(f"the chat server exited at start:\n{self.log}")
            if line.startswith(("Serving on http://", "Serving on https://")):
                scheme, address = line.split()[-1].rstrip("/").split("://", 1)
                self.port = int(address.rsplit(":", 1)[1])
                self.url = f"{scheme}://127.0.0.1:{self.port}/"
                return

    def _drain(self, lines: queue.Queue) -> None:
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))
            lines.put(line.strip())
        lines.put(None)

    @property
    def log(self) -> str:
        return "\n".join(self.output[-30:])

    def stop(self) -> int | None:
        """SIGTERM, as the contract asks servers to take it; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode


@pytest.fixture(scope="module")
def server(browser):
    chat = ChatServer()                          # after `browser`: no server when skipping
    yield chat
    chat.stop()


# ---- the browser and its pages ----------------------------------------------

@pytest.fixture(scope="session")
def browser():
    executable = cdp.find_browser()
    if executable is None:
        reason = ("no Chromium found ($RAWWS_CHROMIUM, or chromium on PATH: "
                  "apt-get install chromium)")
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    chromium = cdp.Browser.launch(executable)
    yield chromium
    chromium.close()


@pytest.fixture
def open_chat(browser):
    """open_chat(server, name) -> a page joined as `name`, set through the name field.

    Each page has a browser context of its own (its own localStorage), as two
    people on two computers would. All are closed after the test.
    """
    pages: list[cdp.Page] = []

    def open_page(chat: ChatServer, name: str, *, width: int = 1100, height: int = 700,
                  mobile: bool = False, stored_name: bool = False) -> cdp.Page:
        page = browser.new_page(width=width, height=height, mobile=mobile)
        pages.append(page)
        if stored_name:
            # A returning visitor: the page finds the name it kept last time.
            page.call("Page.addScriptToEvaluateOnNewDocument", {
                "source": f"localStorage.setItem('rawws-chat-username', {json.dumps(name)})"})
        page.navigate(chat.url)
        page.wait_for("window.rawwsChat && window.rawwsChat.joined()", WAIT)
        if not stored_name:
            page.fill("#chat-username", name)
            page.press_enter()
        page.wait_for(f"window.rawwsChat.username() === {json.dumps(name)}", WAIT)
        return page

    yield open_page
    for page in pages:
        page.close()


def unique(prefix: str) -> str:
    """A name or text no other test uses (the module's tests share one room)."""
    return f"{prefix}-{secrets.token_hex(3)}"


def say(page: cdp.Page, text: str) -> None:
    """Type a message into the message box and press Enter."""
    page.fill("#chat-input", text)
    page.press_enter()


def lines_js(kind: str) -> str:
    """JS: the #chat-output children of one data-kind, as an array."""
    return f"Array.from(document.querySelectorAll('#chat-output > [data-kind={json.dumps(kind)}]'))"


def message_js(user: str, text: str) -> str:
    """JS: the message line from `user` whose text is exactly `text` (or undefined)."""
    return (f"{lines_js('message')}.find(e => e.dataset.user === {json.dumps(user)} && "
            f"e.querySelector('.msg-text').textContent === {json.dumps(text)})")


def shown_messages(page: cdp.Page) -> list[list[str]]:
    """[user, text] of every message line, in order."""
    return page.evaluate(f"{lines_js('message')}.map(e => "
                         f"[e.dataset.user, e.querySelector('.msg-text').textContent])")


# ---- the tests ----------------------------------------------------------------

def test_two_pages_chat_through_the_ui(server, open_chat):
    ada, grace = unique("Ada"), unique("Grace")
    page_a = open_chat(server, ada)
    page_b = open_chat(server, grace)

    text = unique("Hello, Goats!")
    say(page_a, text)
    page_b.wait_for(f"!!({message_js(ada, text)})", WAIT)
    # The sender sees it too, marked as its own, and the box is empty again.
    # (Until it is shown the lookup is undefined: false, and the wait goes on.)
    page_a.wait_for(f"({message_js(ada, text)})?.classList.contains('mine') === true", WAIT)
    assert page_a.evaluate("document.getElementById('chat-input').value") == ""

    reply = unique("Hi Ada")
    say(page_b, reply)
    page_a.wait_for(f"!!({message_js(grace, reply)})", WAIT)
    assert not page_a.errors and not page_b.errors, page_a.errors + page_b.errors


def test_html_in_a_message_is_shown_as_text(server, open_chat):
    mallory, bob = unique("Mallory"), unique("Bob")
    page_m = open_chat(server, mallory)
    page_b = open_chat(server, bob)

    payload = f'<img src=x onerror="window.__pwned=1"> and <b>bold</b> {secrets.token_hex(3)}'
    say(page_m, payload)
    # A plain message after it: once that has arrived, the payload has too,
    # and anything it set off (an image load, its error handler) has had
    # its turn.
    after = unique("after")
    say(page_m, after)
    page_b.wait_for(f"!!({message_js(mallory, after)})", WAIT)

    for page in (page_b, page_m):
        shown = shown_messages(page)
        assert [mallory, payload] in shown, f"the payload is not shown as literal text: {shown}"
        assert page.evaluate(f"{message_js(mallory, payload)}.querySelector('.msg-text').childElementCount") == 0
        assert page.evaluate("document.querySelectorAll('#chat-output img').length") == 0
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert not page.errors, page.errors


def test_closing_a_page_shows_a_leave(server, open_chat):
    stays, goes = unique("Stays"), unique("Goes")
    page_s = open_chat(server, stays)
    page_g = open_chat(server, goes)
    # It came in as a guest and took its name: both show in the conversation.
    users = "Array.from(document.querySelectorAll('#chat-users [data-user]')).map(e => e.dataset.user)"
    page_s.wait_for(f"{users}.includes({json.dumps(goes)})", WAIT)
    page_s.wait_for(f"{lines_js('rename')}.some(e => e.dataset.to === {json.dumps(goes)})", WAIT)

    page_g.close()
    page_s.wait_for(f"{lines_js('leave')}.some(e => e.dataset.user === {json.dumps(goes)})", WAIT)
    assert goes not in page_s.evaluate(users)
    assert stays in page_s.evaluate(users)


def test_page_loads_without_console_errors(server, browser):
    page = browser.new_page(width=1100, height=700)
    try:
        page.navigate(server.url)
        page.wait_for("window.rawwsChat && window.rawwsChat.joined()", WAIT)
        assert page.evaluate("window.rawwsChat.protocol()") == "beej-chat-protocol-v2"
        assert page.evaluate("document.getElementById('chat-status').dataset.state") == "open"
        # Whatever is still on its way (the favicon, late log entries).
        page.evaluate("new Promise(r => setTimeout(r, 300))")
        assert page.errors == [], "\n".join(page.errors)
    finally:
        page.close()


def test_page_reconnects_after_a_server_restart(open_chat):
    first = ChatServer()
    second = None
    try:
        ada, grace = unique("Ada"), unique("Grace")
        page_a = open_chat(first, ada)
        page_b = open_chat(first, grace)

        assert first.stop() == 0, f"the chat server did not exit 0 on SIGTERM:\n{first.log}"
        for page in (page_a, page_b):
            page.wait_for("window.rawwsChat.state() !== 'open'", WAIT)
            # The server said Close 1001 (going away), and the page told the user.
            page.wait_for(f"{lines_js('info')}.some(e => e.textContent.includes('went away'))", WAIT)

        second = ChatServer(port=first.port)
        for page, name in ((page_a, ada), (page_b, grace)):
            page.wait_for("window.rawwsChat.state() === 'open' && window.rawwsChat.joined()", 15)
            page.wait_for(f"window.rawwsChat.username() === {json.dumps(name)}", WAIT)

        text = unique("Back again")
        say(page_a, text)
        page_b.wait_for(f"!!({message_js(ada, text)})", WAIT)
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_narrow_phone_layout_has_no_horizontal_overflow(server, open_chat):
    name = "Wolfeschlegelsteinhausenberger"      # 30 letters, no break
    page = open_chat(server, name, width=375, height=700, mobile=True)
    long_word = "https://example.com/" + "a-very-long-path-without-any-spaces/" * 6
    say(page, long_word)
    page.wait_for(f"!!({message_js(name, long_word)})", WAIT)
    say(page, "A longer line of ordinary words, to see it wrap on a narrow screen. " * 3)
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")

    sizes = page.evaluate("""({
        inner: window.innerWidth,
        page: document.documentElement.scrollWidth,
        output: [document.getElementById('chat-output').scrollWidth,
                 document.getElementById('chat-output').clientWidth],
        input: document.getElementById('chat-input').getBoundingClientRect().right,
        send: document.getElementById('chat-send').getBoundingClientRect().right,
    })""")
    assert sizes["inner"] == 375, sizes
    assert sizes["page"] <= sizes["inner"], sizes
    assert sizes["output"][0] <= sizes["output"][1], sizes
    assert sizes["input"] <= sizes["inner"] and sizes["send"] <= sizes["inner"], sizes
    assert not page.errors, page.errors


def test_conversation_screenshot(open_chat):
    """A short conversation, in order on both pages; with RAWWS_SCREENSHOT=1, docs/screenshot.png."""
    chat = ChatServer()                          # a fresh room: no other test's history
    try:
        ada = open_chat(chat, "Ada", stored_name=True)
        grace = open_chat(chat, "Grace", stored_name=True)
        conversation = [
            (ada, "Ada", "Morning, Grace! Is the new chat server up?"),
            (grace, "Grace", "It is: WebSockets from scratch, nothing but the standard library."),
            (ada, "Ada", "Nice. Does it close cleanly when it restarts?"),
            (grace, "Grace", "Close 1001 to everyone, and this page reconnects by itself."),
            (ada, "Ada", "And if I paste <b>HTML</b> in here?"),
            (grace, "Grace", "Shown as text, never run. Try it!"),
            (ada, "Ada", "Ha, so it is. And my name stays when I come back tomorrow?"),
            (grace, "Grace", "Kept in this browser, yes. See you tomorrow!"),
        ]
        for page, name, text in conversation:
            say(page, text)
            for other in (ada, grace):
                other.wait_for(f"!!({message_js(name, text)})", WAIT)
        expected = [[name, text] for _, name, text in conversation]
        assert shown_messages(ada) == expected
        assert shown_messages(grace) == expected
        assert ada.evaluate("document.documentElement.scrollWidth <= innerWidth")
        assert not ada.errors and not grace.errors, ada.errors + grace.errors

        if os.environ.get("RAWWS_SCREENSHOT") == "1":
            ada.evaluate("document.activeElement && document.activeElement.blur()")
            ada.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            ada.screenshot(SCREENSHOT)
    finally:
        chat.stop()
