"""A small Chromium DevTools Protocol driver for the browser tests.

The DevTools protocol is JSON over a WebSocket, so this drives a headless
Chromium with the project's own blocking client (`rawws.net.client`) and no
other package:

    with Browser.launch() as browser:
        page = browser.new_page()
        page.navigate("http://127.0.0.1:3490/")
        page.wait_for("window.rawwsChat.joined()")
        page.fill("#chat-input", "Hello, Goats!")
        page.press_enter()

How it works:
- Chromium starts with `--remote-debugging-port=0` and prints
  `DevTools listening on ws://...` on stderr; we connect there.
- Each page is a target attached with `flatten=true`, so commands and events
  for it travel on the one browser socket, tagged with its `sessionId`.
- Everything is single-threaded: `call()` sends a command with a fresh id and
  reads messages until the answer with that id arrives. Events read along
  the way are queued on their page, so nothing is lost while waiting for
  another page's answer.
- Every wait has a deadline; nothing blocks forever.

`python -m tests.cdp URL [OUT.png]` loads a page and prints what it logged
(a quick check of the driver by hand).
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from rawws.net.client import ClientConnection, connect
from rawws.errors import ConnectionClosed

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Headless, and quiet: no network of its own (updates, sync, QUIC probes),
# and no timer throttling of pages that are not in front, because the tests
# keep several pages open at once and each must run its reconnect timers.
BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
    "--hide-scrollbars",
    "--mute-audio",
    "--disable-breakpad",
    "--disable-crash-reporter",
)

DEVTOOLS_LINE = re.compile(rb"DevTools listening on (ws://\S+)")


class CDPError(Exception):
    """The browser answered a command with an error."""


class JavaScriptError(Exception):
    """An expression given to `Page.evaluate` threw."""


def find_browser() -> str | None:
    """The Chromium to use: $RAWWS_CHROMIUM, else the first one on PATH."""
    explicit = os.environ.get("RAWWS_CHROMIUM")
    if explicit:
        return shutil.which(explicit)
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium process and the DevTools socket to it."""

    def __init__(self, process: subprocess.Popen, profile: Path, ws: ClientConnection) -> None:
        self.process = process
        self.profile = profile
        self.ws = ws
        self._next_id = 0
        self._answers: dict[int, dict] = {}
        self._events: deque[dict] = deque()          # browser-level events
        self.pages: dict[str, Page] = {}              # by session id

    # ---- life ----------------------------------------------------------

    @classmethod
    def launch(cls, executable: str | None = None, *, timeout: float = 20.0,
               extra_flags: tuple[str, ...] = ()) -> Browser:
        executable = executable or find_browser()
        if not executable:
            raise FileNotFoundError("no Chromium found (looked for " + ", ".join(BROWSER_NAMES) + ")")
        profile = Path(tempfile.mkdtemp(prefix="rawws-chromium-"))
        log_path = profile / "stderr.log"
        # stderr goes to a file, not a pipe: Chromium keeps writing to it
        # (dbus noise and the like) and a pipe nobody reads would fill up.
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [executable, *BROWSER_FLAGS, *extra_flags, f"--user-data-dir={profile / 'profile'}",
                 "--remote-debugging-port=0", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True)
        try:
            url = _wait_devtools_url(process, log_path, timeout)
            ws = connect(url, timeout=timeout)
        except BaseException:
            _stop_process(process)
            shutil.rmtree(profile, ignore_errors=True)
            raise
        return cls(process, profile, ws)

    def close(self) -> None:
        """Close the socket, end the browser, remove its profile. Safe to repeat."""
        if self.ws is not None:
            try:
                self.call("Browser.close", timeout=3)
            except (CDPError, ConnectionClosed, TimeoutError, OSError):
                pass
            try:
                self.ws.close(timeout=1)
            except OSError:
                pass
            self.ws = None
        _stop_process(self.process)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stderr_tail(self, lines: int = 20) -> str:
        """The end of Chromium's stderr, for failure messages."""
        try:
            text = (self.profile / "stderr.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ---- commands and events -------------------------------------------

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        """Send a command without waiting; returns its id (see `answer`)."""
        if self.ws is None:
            raise ConnectionClosed(None, "the browser is closed")
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send_text(json.dumps(message))
        return self._next_id

    def answer(self, command_id: int, timeout: float) -> dict:
        """Wait for the answer to a command sent with `send`; its result."""
        deadline = time.monotonic() + timeout
        while command_id not in self._answers:
            self.pump(deadline - time.monotonic())
        message = self._answers.pop(command_id)
        if "error" in message:
            error = message["error"]
            raise CDPError(f"{error.get('message')} ({error.get('code')}): {error.get('data', '')}")
        return message.get("result", {})

    def call(self, method: str, params: dict | None = None, *, session: str | None = None,
             timeout: float = 10.0) -> dict:
        """Send a command and wait for its result."""
        try:
            return self.answer(self.send(method, params, session), timeout)
        except TimeoutError:
            raise TimeoutError(f"no answer to {method} within {timeout} s") from None

    def pump(self, timeout: float) -> None:
        """Read one message from the browser (waiting up to `timeout`) and file it."""
        if self.ws is None:
            raise ConnectionClosed(None, "the browser is closed")
        if timeout <= 0:
            raise TimeoutError("DevTools wait timed out")
        raw = self.ws.recv(timeout)
        message = json.loads(raw)
        if "id" in message:
            self._answers[message["id"]] = message
            return
        page = self.pages.get(message.get("sessionId", ""))
        if page is not None:
            page._on_event(message["method"], message.get("params", {}))
        else:
            self._events.append(message)

    # ---- pages ---------------------------------------------------------

    def new_page(self, *, isolated: bool = True, width: int | None = None,
                 height: int | None = None, mobile: bool = False) -> Page:
        """Open a blank tab and attach to it.

        isolated: in a browser context of its own (its own cookies and
        localStorage), like a separate browser profile; two isolated pages
        are two different people.
        """
        context = None
        params: dict[str, Any] = {"url": "about:blank"}
        if isolated:
            context = self.call("Target.createBrowserContext")["browserContextId"]
            params["browserContextId"] = context
        target = self.call("Target.createTarget", params)["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, target, session, context)
        self.pages[session] = page
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            page.call(method)
        # Every tab acts as if it had the focus, as a window in front would.
        page.call("Emulation.setFocusEmulationEnabled", {"enabled": True})
        if width and height:
            page.set_viewport(width, height, mobile=mobile)
        return page


class Page:
    """One tab, driven through its DevTools session."""

    def __init__(self, browser: Browser, target_id: str, session_id: str, context_id: str | None) -> None:
        self.browser = browser
        self.target_id = target_id
        self.session_id = session_id
        self.context_id = context_id
        self.events: deque[tuple[str, dict]] = deque()
        self.console: list[str] = []       # every console message, "type: text"
        self.errors: list[str] = []        # console errors, uncaught exceptions, error log entries
        self.closed = False

    def _on_event(self, method: str, params: dict) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_text(arg) for arg in params.get("args", []))
            self.console.append(f"{params.get('type')}: {text}")
            if params.get("type") in ("error", "assert"):
                self.errors.append(f"console.{params.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            description = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"uncaught exception: {description} "
                               f"({details.get('url', '')}:{details.get('lineNumber')})")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append(f"log {entry.get('level')}: {entry.get('text')}")
            if entry.get("level") == "error":
                self.errors.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".rstrip())
        self.events.append((method, params))

    def call(self, method: str, params: dict | None = None, *, timeout: float = 10.0) -> dict:
        return self.browser.call(method, params, session=self.session_id, timeout=timeout)

    def wait_event(self, method: str, timeout: float = 10.0) -> dict:
        """Wait for the next event `method` on this page (taking it off the queue)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, (name, params) in enumerate(self.events):
                if name == method:
                    del self.events[i]
                    return params
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {method} within {timeout} s")
            try:
                self.browser.pump(remaining)
            except TimeoutError:
                raise TimeoutError(f"no {method} within {timeout} s") from None

    # ---- navigation and script -----------------------------------------

    def navigate(self, url: str, timeout: float = 10.0) -> None:
        """Load `url` and wait for its load event."""
        self.events = deque(e for e in self.events if e[0] != "Page.loadEventFired")
        result = self.call("Page.navigate", {"url": url}, timeout=timeout)
        if result.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {result['errorText']}")
        self.wait_event("Page.loadEventFired", timeout)

    def evaluate(self, expression: str, *, timeout: float = 10.0) -> Any:
        """Run a JavaScript expression in the page; its value (promises awaited)."""
        result = self.call("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True,
            "userGesture": True}, timeout=timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            description = details.get("exception", {}).get("description") or details.get("text")
            raise JavaScriptError(f"{expression!r} threw: {description}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 10.0, interval: float = 0.05) -> Any:
        """Evaluate `expression` until it is truthy; its value. TimeoutError with the last value."""
        deadline = time.monotonic() + timeout
        value = None
        while True:
            value = self.evaluate(expression, timeout=max(1.0, deadline - time.monotonic()))
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{expression!r} still {value!r} after {timeout} s")
            # Let events arrive while waiting, so the queue stays current.
            try:
                self.browser.pump(min(interval, max(0.001, deadline - time.monotonic())))
            except TimeoutError:
                pass

    # ---- input, as a user gives it ---------------------------------------

    def click(self, selector: str) -> None:
        """A left click in the middle of the element `selector`."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            f" if (!e) return null; e.scrollIntoView({{block: 'nearest'}});"
            f" const r = e.getBoundingClientRect();"
            f" return {{x: r.left + r.width / 2, y: r.top + r.height / 2}}; }})()")
        if not box:
            raise LookupError(f"no element matches {selector!r}")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {
                "type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1})

    def insert_text(self, text: str) -> None:
        """Type `text` into the focused element (as an IME or paste would)."""
        self.call("Input.insertText", {"text": text})

    def fill(self, selector: str, text: str) -> None:
        """Click into a text field, select what it holds, and type `text` over it."""
        self.click(selector)
        self.evaluate(f"document.querySelector({json.dumps(selector)}).select()")
        self.insert_text(text)

    def press_enter(self) -> None:
        """Press and release Enter in the focused element."""
        key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13,
               "nativeVirtualKeyCode": 13}
        self.call("Input.dispatchKeyEvent", {"type": "keyDown", "text": "\r", **key})
        self.call("Input.dispatchKeyEvent", {"type": "keyUp", **key})

    # ---- the window ------------------------------------------------------

    def set_viewport(self, width: int, height: int, *, mobile: bool = False,
                     scale: float = 1.0) -> None:
        self.call("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile})

    def screenshot(self, path: str | Path | None = None) -> bytes:
        """A PNG of the viewport; written to `path` when given."""
        data = base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"},
                                          timeout=20)["data"])
        if path is not None:
            Path(path).write_bytes(data)
        return data

    def close(self) -> None:
        """Close the tab (its pagehide handlers run) and drop its browser context."""
        if self.closed:
            return
        self.closed = True
        browser = self.browser
        try:
            browser.call("Target.closeTarget", {"targetId": self.target_id})
            if self.context_id:
                browser.call("Target.disposeBrowserContext", {"browserContextId": self.context_id})
        except (CDPError, ConnectionClosed, TimeoutError, OSError):
            pass
        browser.pages.pop(self.session_id, None)


# ---- helpers ----------------------------------------------------------------

def _remote_text(obj: dict) -> str:
    """A console argument (a Runtime.RemoteObject) as text."""
    if "value" in obj:
        return str(obj["value"])
    return str(obj.get("description") or obj.get("unserializableValue") or obj.get("type"))


def _wait_devtools_url(process: subprocess.Popen, log_path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = DEVTOOLS_LINE.search(log_path.read_bytes())
        if match:
            return match.group(1).decode()
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Chromium exited with {process.returncode} before DevTools was up:\n{tail}")
        time.sleep(0.05)
    raise TimeoutError(f"Chromium printed no DevTools URL within {timeout} s")


def _stop_process(process: subprocess.Popen) -> None:
    """End Chromium and its helpers (renderers, zygote: its own process group)."""
    try:
        process.wait(timeout=2)                   # after Browser.close it exits by itself
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(process, signal.SIGKILL)        # stragglers of the group, if any
    try:
        process.wait(timeout=3)
    except subprocess.TimeoutExpired:
        pass


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m tests.cdp URL [OUT.png]", file=sys.stderr)
        return 2
    with Browser.launch() as browser:
        page = browser.new_page(width=1100, height=700)
        page.navigate(args[0])
        time.sleep(0.5)
        try:
            page.browser.pump(0.5)
        except TimeoutError:
            pass
        print("title:", page.evaluate("document.title"))
        for line in page.console:
            print(line)
        if len(args) > 1:
            page.screenshot(args[1])
            print("wrote", args[1])
        return 1 if page.errors else 0


if __name__ == "__main__":
    sys.exit(main())
