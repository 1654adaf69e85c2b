"""`python -m chat.client`: a terminal chat client speaking beej-chat-protocol-v2.

    python -m chat.client ws://127.0.0.1:3490/ --name Beej
    python -m chat.client wss://chat.example:3490/ --cafile ca.pem   # over TLS, verified

Type a line to say it. Commands: `/name NEW` changes your name, `/users`
lists who is here, `/quit` (or Ctrl-D, or Ctrl-C) leaves, `/help` lists
these; a line starting with `//` is sent as a message starting with `/`.

One thread owns the connection: it waits on the socket and on a wake-up
pipe with `selectors`. A second thread only reads stdin (a blocking read
that selectors cannot share portably with buffered input) and hands lines
over through a queue, writing one byte to the pipe for each.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import random
import selectors
import ssl
import sys
import threading
import time
from typing import Any, TextIO

from rawws.net.client import ClientConnection, connect
from rawws.net.tls import client_context
from rawws.errors import ConnectionClosed, HandshakeError, WebSocketError
from rawws.protocol import BinaryMessage, TextMessage
from rawws.tools.trace import WireTracer, printable as trace_printable

from .messages import PROTOCOL_V2

HELP = """commands:
  /name NEW   change your name
  /users      who is here
  /quit       leave (Ctrl-D and Ctrl-C too)
  //text      send a message that starts with /"""


def printable(text: str) -> str:
    """Text from other people, made safe for a terminal: control characters
    (an escape sequence could move the cursor, retitle the window or worse)
    are shown as `\\x1b`-style escapes; newlines, tabs and backslashes stay."""
    return trace_printable(text, keep="\n\t\\")


def clock(ms: Any) -> str:
    """`HH:MM:SS` local time of a server timestamp in milliseconds."""
    seconds = ms / 1000 if isinstance(ms, (int, float)) else time.time()
    return time.strftime("%H:%M:%S", time.localtime(seconds))


class ChatClient:
    """The client's state (name, users) and the rendering of server messages."""

    def __init__(self, conn: ClientConnection, name: str, out: TextIO) -> None:
        self.conn = conn
        self.wanted = name
        self.name: str | None = None
        self.users: list[str] = []
        self.out = out
        self.joining = False            # chat-join sent, no welcome or refusal yet
        self.pending: list[str] = []    # lines typed before the welcome, sent after it

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def send(self, kind: str, **payload: Any) -> None:
        self.conn.send_text(json.dumps({"type": kind, "payload": payload}))

    def join(self) -> None:
        self.joining = True
        self.send("chat-join", username=self.wanted)

    @property
    def busy(self) -> bool:
        """True while typed lines wait for the join to be answered."""
        return self.joining and bool(self.pending)

    def command(self, line: str) -> bool:
        """Act on one line the user typed; False means quit."""
        line = line.rstrip("\r\n")
        if self.joining and line.strip() and line.strip() != "/quit":
            self.pending.append(line)   # replayed in order once the welcome comes
            return True
        if line.startswith("//"):
            line = line[1:]
        elif line.startswith("/"):
            word, _, rest = line.partition(" ")
            if word == "/quit":
                return False
            if word == "/name" and rest.strip():
                self.wanted = rest.strip()
                if self.name is not None:
                    self.send("chat-rename", username=self.wanted)
                else:
                    self.join()
            elif word == "/users":
                self.say(f"* {len(self.users)} here: {', '.join(map(printable, self.users))}")
            else:
                self.say(HELP)
            return True
        if line.strip():
            if self.name is not None:
                self.send("chat-message", message=line)
            else:
                self.say("! not joined yet: /name NAME to join")
        return True

    def show(self, text: str) -> None:
        """Render one message from the server."""
        try:
            msg = json.loads(text)
            kind, p = msg["type"], msg["payload"]
            getattr(self, "on_" + kind.replace("chat-", ""), self.on_other)(p)
        except (ValueError, KeyError, TypeError, AttributeError):
            self.say(f"? {printable(text)}")

    def on_welcome(self, p: dict) -> None:
        self.name = p["username"]
        self.joining = False
        self.users = list(p["users"])
        for h in p["history"]:
            self.on_message(h)
        others = [u for u in self.users if u != self.name]
        self.say(f"* joined as {printable(self.name)}; here: "
                 f"{', '.join(map(printable, others)) or 'no one else'}")
        pending, self.pending = self.pending, []
        for line in pending:
            self.command(line)

    def on_join(self, p: dict) -> None:
        if p["username"] not in self.users:
            self.users.append(p["username"])
        if p["username"] != self.name:
            self.say(f"[{clock(p.get('time'))}] * {printable(p['username'])} joined")

    def on_leave(self, p: dict) -> None:
        if p["username"] in self.users:
            self.users.remove(p["username"])
        self.say(f"[{clock(p.get('time'))}] * {printable(p['username'])} left")

    def on_rename(self, p: dict) -> None:
        old, new = p["from"], p["to"]
        self.users = [new if u == old else u for u in self.users]
        if old == self.name:
            self.name = new
        self.say(f"[{clock(p.get('time'))}] * {printable(old)} is now {printable(new)}")

    def on_message(self, p: dict) -> None:
        self.say(f"[{clock(p.get('time'))}] <{printable(p['username'])}> {printable(p['message'])}")

    def on_error(self, p: dict) -> None:
        self.say(f"! {printable(str(p.get('code')))}: {printable(str(p.get('message')))}")
        if p.get("code") in ("name-taken", "name-invalid") and self.name is None:
            self.joining = False
            self.say("! pick another name with /name NAME"
                     + (f" ({len(self.pending)} line(s) wait to be sent)" if self.pending else ""))

    def on_other(self, p: dict) -> None:
        self.say(f"? {printable(json.dumps(p, ensure_ascii=False))}")


def read_stdin(lines: queue.Queue[str | None], wake: int, stdin: TextIO) -> None:
    """The stdin thread: hand each line over, then None at end of input."""
    try:
        for line in stdin:
            lines.put(line)
            os.write(wake, b"\0")
    except (OSError, ValueError):
        pass
    lines.put(None)
    try:
        os.write(wake, b"\0")
    except OSError:
        pass


def run(conn: ClientConnection, client: ChatClient, stdin: TextIO) -> int:
    lines: queue.Queue[str | None] = queue.Queue()
    wake_r, wake_w = os.pipe()
    threading.Thread(target=read_stdin, args=(lines, wake_w, stdin), daemon=True,
                     name="stdin").start()
    sel = selectors.DefaultSelector()
    sel.register(conn.sock, selectors.EVENT_READ, "socket")
    sel.register(wake_r, selectors.EVENT_READ, "stdin")
    client.join()
    try:
        while True:
            # Messages may already wait in the connection's buffer (several
            # can arrive in one read), so drain it before waiting on the socket.
            if not receive(conn, client, wait=0.0):
                return 0
            for key, _ in sel.select():
                if key.data == "stdin":
                    os.read(wake_r, 4096)
                    while True:
                        try:
                            line = lines.get_nowait()
                        except queue.Empty:
                            break
                        try:
                            going_on = line is not None and client.command(line)
                        except ConnectionClosed:
                            going_on = True   # the socket side reports the close
                        if not going_on:
                            finish_join(conn, client)
                            conn.close()
                            return 0
                elif not receive(conn, client, wait=1.0):
                    return 0
    except KeyboardInterrupt:
        conn.close(1000, "bye")
        return 0
    finally:
        sel.close()
        os.close(wake_r)


def finish_join(conn: ClientConnection, client: ChatClient, limit: float = 5.0) -> None:
    """Before leaving, let a pending join be answered so typed lines go out."""
    deadline = time.monotonic() + limit
    while client.busy and time.monotonic() < deadline:
        if not receive(conn, client, wait=0.1):
            return


def receive(conn: ClientConnection, client: ChatClient, wait: float) -> bool:
    """Show every message available within `wait` seconds; False once closed."""
    while True:
        try:
            event = conn.recv_event(timeout=wait)
        except TimeoutError:
            return True
        except ConnectionClosed as closed:
            reason = f" {closed.reason}" if closed.reason else ""
            client.say(f"* connection closed ({closed.code}{reason})")
            return False
        wait = 0.0
        if isinstance(event, TextMessage):
            client.show(event.data)
        elif isinstance(event, BinaryMessage):
            client.say(f"? {len(event.data)} bytes of binary")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chat.client",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:3490/",
                        help="the chat server (default ws://127.0.0.1:3490/)")
    parser.add_argument("--name", default=f"Guest {random.randrange(0x10000):x}",
                        help="your name (default: Guest and a random number)")
    parser.add_argument("--origin", default=None, help="send this Origin header")
    parser.add_argument("--cafile", metavar="FILE", default=None,
                        help="for wss://: trust the CA certificate(s) in FILE (PEM) besides "
                             "the system's; the certificate and host name are always verified")
    parser.add_argument("--trace", action="store_true",
                        help="print every byte sent and received, annotated, on stderr")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for the connection (default 10)")
    args = parser.parse_args(argv)
    try:
        context = client_context(args.cafile) if args.cafile is not None else None
    except (OSError, ValueError) as error:   # ssl.SSLError too: not a PEM file
        print(f"chat.client: cannot use --cafile {args.cafile}: "
              f"{getattr(error, 'strerror', None) or error}", file=sys.stderr)
        return 1
    try:
        conn = connect(args.url, subprotocols=[PROTOCOL_V2], origin=args.origin,
                       timeout=args.timeout, ssl_context=context,
                       trace=WireTracer(sys.stderr) if args.trace else None)
    except HandshakeError as error:
        print(f"chat.client: refused: {error.status} {error.reason}", file=sys.stderr)
        return 1
    except ssl.SSLCertVerificationError as error:
        print(f"chat.client: cannot connect to {args.url}: the server's certificate is not "
              f"trusted: {error.verify_message}", file=sys.stderr)
        return 1
    except (OSError, ValueError, WebSocketError) as error:
        print(f"chat.client: cannot connect to {args.url}: {error}", file=sys.stderr)
        return 1
    client = ChatClient(conn, args.name, sys.stdout)
    client.say(f"* connected to {args.url}; /help for commands")
    try:
        return run(conn, client, sys.stdin)
    except KeyboardInterrupt:   # Ctrl-C during the close
        return 0


if __name__ == "__main__":
    sys.exit(main())
