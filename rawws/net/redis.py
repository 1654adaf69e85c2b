"""A non-blocking Redis client on the `rawws.net.loop` event loop.

    loop = EventLoop()
    redis = RedisConnection(loop, "redis://127.0.0.1:6379/0", on_lost=print)
    redis.connect(timeout=5.0).add_done_callback(lambda ready: ...)
    redis.command("SET", "greeting", "hello")
    redis.command("GET", "greeting").add_done_callback(lambda f: print(f.result()))

The protocol lives in `rawws.resp` (encoding commands, parsing replies,
the limits); this module moves its bytes and keeps the books:

* Pipelining. `command()` never waits: it queues the encoded command and
  returns a `ReplyFuture`. Every command queued in one turn of the loop goes
  out in one write, however many there are, and Redis answers in order, so
  each reply settles the oldest future still waiting (a FIFO). An error reply
  fails only its own future, with a `ReplyError`; the connection carries on.
* Blocking reads get a connection of their own. Redis answers a connection's
  commands in order, so everything pipelined behind an `XREAD BLOCK` or a
  `BLPOP` waits until it returns. Open a second `RedisConnection` for them.
  `SUBSCRIBE` and `PSUBSCRIBE` work the same way: once subscribed, the
  connection hands each published message to `on_push` (RESP2 sends them as
  arrays that answer no command), and takes only (un)subscribe commands and
  PING.
* Connecting does not block the loop: a host name is resolved on a helper
  thread (an IP address needs none), the TCP connect is non-blocking, and
  the connection is ready once `SELECT db` has answered +OK, which also
  proves the peer speaks RESP. `connect(timeout)` covers all three.
* Losing the connection (the server closed it, a reset, bytes that are not
  RESP) fails every waiting future with `RedisConnectionError` and calls
  `on_lost(error)` once. Nothing reconnects by itself: `Reconnector` does
  that, with exponential backoff up to a cap, logging once that Redis is
  down and once that it is back.

Everything here runs on the loop's thread; none of it is thread-safe.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import os
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import RedisConnectionError, RedisError, ReplyError, RespProtocolError
from ..resp import NEED_DATA, RespParser, encode_command
from .loop import EVENT_READ, EVENT_WRITE, EventLoop, Timer
from .sendqueue import SendQueue

log = logging.getLogger("rawws.redis")

DEFAULT_PORT = 6379
DEFAULT_CONNECT_TIMEOUT = 5.0
RECV_SIZE = 64 * 1024
# Commands queued and not yet taken by the kernel, in bytes: past this a new
# command fails at once rather than queueing (a server that stopped reading).
DEFAULT_MAX_BUFFERED = 64 * 1024 * 1024
# A connection that hears nothing for KEEPALIVE_IDLE seconds sends TCP
# keepalive probes, so a vanished host (no FIN, no reset) is noticed in
# about a minute rather than the kernel's two hours.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 30, 10, 3

# In RESP2 a subscribed connection receives these arrays unasked.
PUSH_KINDS = frozenset({b"message", b"pmessage"})
SUBSCRIPTION_COMMANDS = frozenset({"SUBSCRIBE", "UNSUBSCRIBE", "PSUBSCRIBE", "PUNSUBSCRIBE"})


# ---- addresses -----------------------------------------------------------------

@dataclass(frozen=True)
class RedisAddress:
    """Where a Redis server is, and which of its numbered databases to use."""

    host: str
    port: int = DEFAULT_PORT
    db: int = 0

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"


def parse_url(url: str) -> RedisAddress:
    """`redis://HOST[:PORT][/DB]` as a RedisAddress; ValueError says what is wrong.

    An IPv6 host is written in brackets (`redis://[::1]:6379`). Passwords,
    TLS (`rediss://`) and options in a query are not supported.
    """
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"{url!r}: a Redis URL starts with redis://")
    if "@" in parts.netloc:
        raise ValueError(f"{url!r}: credentials in the URL are not supported")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: a Redis URL has no query or fragment here")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number from 1 to 65535") from None
    path = parts.path.strip("/")
    if path and not (path.isascii() and path.isdigit()):
        raise ValueError(f"{url!r}: the path is the database number, such as /0")
    return RedisAddress(parts.hostname, port, int(path or 0))


# ---- futures -------------------------------------------------------------------

class ReplyFuture:
    """A reply still to come: later its value, or the error it failed with.

    `add_done_callback(fn)` calls `fn(future)` once it is settled (at once if
    it already is); `result()` then gives the value or raises the error: a
    `ReplyError` for an error reply, `RedisConnectionError` when the
    connection went before the reply came.
    """

    __slots__ = ("_done", "_value", "_error", "_callbacks")

    def __init__(self) -> None:
        self._done = False
        self._value: object = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[ReplyFuture], object]] = []

    def __repr__(self) -> str:
        state = ("waiting" if not self._done else
                 f"failed {self._error!r}" if self._error is not None else f"= {self._value!r}")
        return f"<ReplyFuture {state}>"

    def done(self) -> bool:
        return self._done

    def result(self) -> object:
        if not self._done:
            raise RuntimeError("the reply has not come yet")
        if self._error is not None:
            raise self._error
        return self._value

    def error(self) -> BaseException | None:
        """The error it failed with, or None (also while it waits)."""
        return self._error

    def add_done_callback(self, callback: Callable[[ReplyFuture], object]) -> None:
        if self._done:
            _call(callback, self)
        else:
            self._callbacks.append(callback)

    def set_result(self, value: object) -> None:
        self._settle(value, None)

    def set_error(self, error: BaseException) -> None:
        self._settle(None, error)

    def _settle(self, value: object, error: BaseException | None) -> None:
        if self._done:
            return
        self._done, self._value, self._error = True, value, error
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _call(callback, self)


def _call(callback: Callable, *args: object) -> None:
    """A callback's exception is logged, never allowed to stop the replies after it."""
    try:
        callback(*args)
    except Exception:
        log.exception("unhandled error in Redis callback %r", callback)


# ---- one connection ------------------------------------------------------------

class RedisConnection:
    """One TCP connection to a Redis server; commands pipelined, replies FIFO.

    States: "new" until `connect()`, "connecting" until `SELECT db` has
    answered, "open", then "closed" for good (a new connection replaces it).
    Commands may be queued from `connect()` on; they go out once connected.
    `on_lost(error)` is called once if an open connection is lost, not when
    `close()` ends it nor when connecting fails (the future of `connect()`
    says so). `on_push(message)` gets what a subscribed connection receives,
    such as `[b"message", channel, data]`.
    """

    def __init__(self, loop: EventLoop, address: RedisAddress | str, *,
                 on_lost: Callable[[RedisConnectionError], object] | None = None,
                 on_push: Callable[[list], object] | None = None,
                 max_buffered: int = DEFAULT_MAX_BUFFERED, **parser_limits: int) -> None:
        self.loop = loop
        self.address = parse_url(address) if isinstance(address, str) else address
        self.on_lost = on_lost
        self.on_push = on_push
        self.max_buffered = max_buffered
        self.state = "new"
        self.sock: socket.socket | None = None
        self._parser = RespParser(**parser_limits)
        self._out = SendQueue()
        # Futures waiting for replies, oldest first: (future, replies it
        # takes, replies so far, whether it changes subscriptions). A
        # (P)(UN)SUBSCRIBE takes one reply per channel or pattern it names.
        self._waiting: deque[tuple[ReplyFuture, int, list, bool]] = deque()
        self._subscriptions = 0        # channels and patterns, as the server last counted
        self._ready: ReplyFuture | None = None
        self._timer: Timer | None = None
        self._addresses: deque[tuple[int, tuple]] = deque()   # left to try when connecting
        self._connected = False        # TCP is up: queued commands may be written
        self._flush_due = False
        self._events = 0

    def __repr__(self) -> str:
        return f"<RedisConnection {self.address} {self.state}>"

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    @property
    def pending(self) -> int:
        """Commands sent or queued whose replies have not come yet."""
        return len(self._waiting)

    @property
    def buffered(self) -> int:
        """Bytes of commands the kernel has not taken yet."""
        return self._out.size

    # ---- connecting ------------------------------------------------------------

    def connect(self, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> ReplyFuture:
        """Start connecting; the future settles with this connection once it
        is ready, or fails with RedisConnectionError (refused, timed out,
        SELECT refused)."""
        if self.state != "new":
            raise RuntimeError(f"connect() on a connection that is {self.state}")
        self.state = "connecting"
        self._ready = ready = ReplyFuture()
        self._timer = self.loop.call_later(timeout, lambda: self._fail(
            f"no answer within {timeout:g} s"))
        # SELECT goes first, before whatever the caller queues meanwhile.
        self.command("SELECT", self.address.db).add_done_callback(self._on_selected)
        host, port = self.address.host, self.address.port
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            threading.Thread(target=self._resolve, args=(host, port),
                             name=f"resolve {host}", daemon=True).start()
        else:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            self._try_addresses([(family, (host, port))])
        return ready

    def _resolve(self, host: str, port: int) -> None:
        """On a helper thread: getaddrinfo blocks, the loop must not."""
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            reason = f"cannot resolve {host}: {error}"   # `error` is unbound after the block
            self.loop.call_soon_threadsafe(lambda: self._fail(reason))
            return
        addresses = [(family, sockaddr) for family, _, _, _, sockaddr in found]
        self.loop.call_soon_threadsafe(lambda: self._try_addresses(addresses))

    def _try_addresses(self, addresses: list[tuple[int, tuple]]) -> None:
        if self.state == "connecting":   # not timed out or closed while resolving
            self._addresses = deque(addresses)
            self._next_address("no address")

    def _next_address(self, reason: str) -> None:
        """Connect to the next address the name has (localhost may be ::1,
        then 127.0.0.1); when none is left, connecting has failed."""
        if self.sock is not None:
            self.loop.unregister(self.sock)
            self.sock.close()
            self.sock = None
        if not self._addresses:
            self._fail(reason)
            return
        family, sockaddr = self._addresses.popleft()
        self.sock = sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        _tune(sock)
        code = sock.connect_ex(sockaddr)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            self._next_address(os.strerror(code))
            return
        self._events = EVENT_WRITE
        self.loop.register(sock, EVENT_WRITE, self._on_connected)

    def _on_connected(self, _mask: int) -> None:
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._next_address(os.strerror(code))
            return
        self._connected = True
        self._events = 0
        self._write_out()   # SELECT and the commands queued behind it

    def _on_selected(self, future: ReplyFuture) -> None:
        error = future.error()
        if isinstance(error, ReplyError):
            self._fail(f"SELECT {self.address.db} refused: {error}")
        elif error is None and self.state == "connecting":
            self.state = "open"
            self._timer.cancel()
            self._ready.set_result(self)

    # ---- commands --------------------------------------------------------------

    def command(self, *args: str | bytes | int) -> ReplyFuture:
        """Queue one command; the future settles with its reply (for a
        (P)(UN)SUBSCRIBE, the list of its confirmations, one per channel).

        The reply is as `rawws.resp` parses it (str for a simple string,
        bytes, int, None, list). An error reply fails the future with
        ReplyError. On a closed connection, or past `max_buffered` bytes
        unsent, the future fails at once.
        """
        if self.state == "new":
            raise RuntimeError("connect() the connection before sending commands")
        data = encode_command(*args)
        name = args[0]
        name = (name.decode("latin-1") if isinstance(name, (bytes, bytearray))
                else str(name)).upper()
        subscription = name in SUBSCRIPTION_COMMANDS
        replies = 1
        if subscription:
            # Each channel is confirmed by a reply of its own; with no channel
            # named, the number of replies is the server's to know.
            replies = len(args) - 1
            if not replies:
                raise ValueError(f"{name}: name the channels or patterns")
        future = ReplyFuture()
        if self.state == "closed":
            future.set_error(RedisConnectionError(f"{self.address}: the connection is closed"))
            return future
        if self._out.size + len(data) > self.max_buffered:
            future.set_error(RedisError(
                f"{self.address}: {self._out.size} bytes of commands not yet taken by the server"))
            return future
        self._out.append(data)
        self._waiting.append((future, replies, [], subscription))
        if not self._flush_due and self._connected:
            # Commands queued in this turn of the loop go out together.
            self._flush_due = True
            self.loop.call_later(0, self._flush)
        return future

    def _flush(self) -> None:
        self._flush_due = False
        if self._connected and not self._events & EVENT_WRITE:
            self._write_out()

    def _write_out(self) -> None:
        out = self._out
        if out.size:
            pieces = out.head()
            try:
                sent = self.sock.send(pieces[0]) if len(pieces) == 1 else self.sock.sendmsg(pieces)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as error:
                self._fail(f"write failed: {error}")
                return
            out.consume(sent)
        events = EVENT_READ | (EVENT_WRITE if out.size else 0)
        if events != self._events:
            self.loop.modify(self.sock, events, self._on_ready)
            self._events = events

    # ---- replies ---------------------------------------------------------------

    def _on_ready(self, mask: int) -> None:
        if mask & EVENT_WRITE:
            self._write_out()
        if mask & EVENT_READ and self.state != "closed":
            self._read_in()

    def _read_in(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._fail(f"read failed: {error}")
            return
        if not data:
            self._fail("the server closed the connection")
            return
        self._parser.feed(data)
        while self.state != "closed":   # a callback may close it
            try:
                reply = self._parser.next_reply()
            except RespProtocolError as error:
                self._fail(f"not RESP: {error}")
                return
            if reply is NEED_DATA:
                return
            self._deliver(reply)

    def _deliver(self, reply: object) -> None:
        if (self._subscriptions and isinstance(reply, list) and reply
                and reply[0] in PUSH_KINDS):
            if self.on_push is not None:
                _call(self.on_push, reply)
            return
        if not self._waiting:
            self._fail(f"a reply that no command asked for: {reply!r:.80}")
            return
        future, count, replies, subscription = self._waiting[0]
        if isinstance(reply, ReplyError):
            # One error answers the whole command, however many channels it named.
            self._waiting.popleft()
            future.set_error(reply)
            return
        if subscription and isinstance(reply, list) and len(reply) == 3:
            # ["subscribe", channel, how many subscriptions now]: pushes are
            # told apart from replies while that count is above zero.
            if isinstance(reply[2], int):
                self._subscriptions = reply[2]
        replies.append(reply)
        if len(replies) < count:
            return
        self._waiting.popleft()
        future.set_result(replies if subscription else reply)

    # ---- ending ----------------------------------------------------------------

    def close(self) -> None:
        """Close now; commands still waiting fail with RedisConnectionError."""
        self._shut(RedisConnectionError(f"{self.address}: the connection is closed"))

    def _fail(self, reason: str) -> None:
        """Connecting failed or the connection broke: tell whoever is waiting."""
        was_open = self.state == "open"
        what = "lost the connection to" if was_open else "cannot connect to"
        error = RedisConnectionError(f"{what} {self.address}: {reason}")
        self._shut(error)
        if was_open and self.on_lost is not None:
            _call(self.on_lost, error)

    def _shut(self, error: RedisConnectionError) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self._connected = False
        if self._timer is not None:
            self._timer.cancel()
        if self.sock is not None:
            self.loop.unregister(self.sock)
            self.sock.close()
        waiting, self._waiting = self._waiting, deque()
        self._out = SendQueue()
        if self._ready is not None:
            self._ready.set_error(error)   # no effect once it succeeded
        for future, *_ in waiting:
            future.set_error(error)


def _tune(sock: socket.socket) -> None:
    """No Nagle delay for small pipelined writes; keepalive probes on an idle connection."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                        ("TCP_KEEPCNT", KEEPALIVE_COUNT)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


# ---- staying connected ---------------------------------------------------------

class Reconnector:
    """Keeps one connection to Redis up, reconnecting with backoff.

    `start()` connects; every time a connection is ready, `on_up(connection)`
    gets it (the owner sends what a fresh connection needs: a new XREAD, its
    subscriptions). When it is lost or an attempt fails, the next attempt
    comes after a delay that starts at `initial_delay` and doubles up to
    `max_delay`, each one drawn between half and all of that ("equal
    jitter", so many servers that lost one Redis do not all knock at once).
    `on_down(error)` is called when an open connection is lost.

    The log says once that Redis is down and once that it is back, however
    many attempts fail in between (each of those at DEBUG level only). With
    `quiet=True` those lines go to DEBUG too: for a second connection to the
    same Redis, whose owner already logs the first one's.
    """

    def __init__(self, loop: EventLoop, address: RedisAddress | str, *,
                 on_up: Callable[[RedisConnection], object],
                 on_down: Callable[[RedisConnectionError], object] | None = None,
                 on_push: Callable[[list], object] | None = None,
                 name: str = "redis", connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 initial_delay: float = 0.1, max_delay: float = 5.0, quiet: bool = False,
                 **connection_options: int) -> None:
        self.loop = loop
        self.address = parse_url(address) if isinstance(address, str) else address
        self.on_up = on_up
        self.on_down = on_down
        self.on_push = on_push
        self.name = name
        self.connect_timeout = connect_timeout
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.connection_options = connection_options
        self._level = logging.DEBUG if quiet else logging.WARNING
        self.connection: RedisConnection | None = None   # the open one, when up
        self.attempts = 0          # failed attempts since the last time it was up
        self._trying: RedisConnection | None = None
        self._timer: Timer | None = None
        self._down_since: float | None = None   # when the down line was logged
        self._closed = False

    @property
    def is_up(self) -> bool:
        return self.connection is not None and self.connection.is_open

    def start(self) -> None:
        self._attempt()

    def close(self) -> None:
        """Stop: close the connection and cancel any attempt."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for connection in (self._trying, self.connection):
            if connection is not None:
                connection.close()
        self.connection = self._trying = None

    def _attempt(self) -> None:
        self._timer = None
        if self._closed:
            return
        self._trying = RedisConnection(self.loop, self.address, on_lost=self._on_lost,
                                       on_push=self.on_push, **self.connection_options)
        self._trying.connect(self.connect_timeout).add_done_callback(self._on_attempt)

    def _on_attempt(self, future: ReplyFuture) -> None:
        if self._closed:
            return
        connection, self._trying = self._trying, None
        error = future.error()
        if error is not None:
            self.attempts += 1
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.log(self._level, "%s: Redis at %s is down (%s); retrying, at most every %g s",
                        self.name, self.address, error, self.max_delay)
            else:
                log.debug("%s: attempt %d failed: %s", self.name, self.attempts, error)
            self._retry()
            return
        if self._down_since is not None:
            log.log(min(self._level, logging.INFO), "%s: Redis at %s is back, after %.1f s",
                    self.name, self.address, time.monotonic() - self._down_since)
        else:
            log.log(min(self._level, logging.INFO), "%s: connected to Redis at %s",
                    self.name, self.address)
        self._down_since = None
        self.attempts = 0
        self.connection = connection
        _call(self.on_up, connection)

    def _on_lost(self, error: RedisConnectionError) -> None:
        self.connection = None
        if self._closed:
            return
        self._down_since = time.monotonic()
        log.log(self._level, "%s: Redis at %s is down (%s); reconnecting, at most every %g s",
                self.name, self.address, error, self.max_delay)
        if self.on_down is not None:
            _call(self.on_down, error)
        self._retry()

    def _retry(self) -> None:
        if self._closed:
            return
        delay = min(self.max_delay, self.initial_delay * 2 ** min(self.attempts, 30))
        self._timer = self.loop.call_later(random.uniform(delay / 2, delay), self._attempt)
