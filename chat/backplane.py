"""The room's shared state, in one process or across many: the backplanes.

A `Room` (chat/room.py) decides what its own connections may do, and asks
its backplane for every change to what the whole room shares: a join (a
name claimed), a message (an id given), a rename, a leave. The backplane
answers with `Event`s, handed to `room.apply(event)` in the room's one
order, or with `room.refused(token, kind)` when a name is taken.

* `LocalBackplane`, the default: one process is the whole room. It decides
  at once, from the room's own state, and applies the event before it
  returns: the chat as it always was.
* `RedisBackplane` (`python -m chat --backplane redis://HOST:PORT/DB`): every
  server that names the same Redis and room serves one room. Each request
  is one Lua script, run atomically by Redis: it checks and claims the name,
  or takes the next message id, and appends the event to a Redis Stream
  (XADD). Every server reads that stream (XREAD BLOCK, on a connection of
  its own) and applies what it reads, its own events too: so every server
  delivers every event, in the order of the stream. docs/scaling.md says
  why Streams rather than pub/sub.

Keys, for room R (prefix `rawws:chat:R:`):

    stream           the events, XADD ... MAXLEN ~ 10000: the catch-up window
    msgid            the last message id (INCR)
    order            the last join number (INCR): the user list's order
    names            hash: name_key -> "server\\ttoken\\torder\\tname"
    held:SERVER      hash: token -> name_key, the names one server holds
    alive:SERVER     a heartbeat, SET with an expiry (`ttl`), renewed every ttl/3
    servers          set of the servers that have said hello
    history          list: the v2 payloads of the last messages (LTRIM)

A server that dies without a word stops renewing its `alive:` key; the next
heartbeat of any other server (a script, so only one of them does it) finds
it expired and appends a leave for each name in its `held:` hash. Names are
renewed with their server's heartbeat, not one by one.

While Redis is away the backplane answers as the LocalBackplane does, so
the server's own users keep chatting among themselves; when it is back,
the server says hello (`sync`: re-claims its users' names, and tells the
others who it has now), the reader resumes from the last stream id it saw,
and so it misses nothing Redis accepted meanwhile (unless the stream's cap
dropped it: then the server reads the room's users again).
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rawws.close import CLOSE_POLICY_VIOLATION
from rawws.errors import RedisError
from rawws.net.loop import EventLoop, Timer
from rawws.net.redis import Reconnector, RedisConnection, ReplyFuture, parse_url
from rawws.resp import NEED_DATA, RespParser, encode_command

from .messages import name_key

if TYPE_CHECKING:
    from .room import Room

log = logging.getLogger("chat.backplane")

# Event kinds.
JOIN, SAY, RENAME, LEAVE, SYNC = "join", "say", "rename", "leave", "sync"

DEFAULT_ROOM = "main"
DEFAULT_TTL = 15.0             # seconds a server's heartbeat lives: its users' leaves
                               # reach the others within ttl + ttl/3 of its death
DEFAULT_STREAM_LENGTH = 10_000   # events kept for servers catching up
DEFAULT_CONNECT_TIMEOUT = 5.0
READ_COUNT = 1000              # events per XREAD at most
READ_BLOCK_MS = 10_000         # an idle XREAD returns empty after this, and is sent again


@dataclass(frozen=True, slots=True)
class Event:
    """One change to the room's shared state, as every server applies it.

    The owner of a name is (server, member): the server's id and the
    member's token there.
    """

    kind: str        # JOIN, SAY, RENAME, LEAVE, SYNC
    server: str
    member: int
    time: int        # ms since the epoch, the publishing server's clock
    name: str = ""   # join: the name; rename: the new name
    old: str = ""    # rename: the name before
    id: int = 0      # say: the message id
    fields: str = ""   # say: messages.message_fields(name, text)
    op: int = 0      # the publisher's request number
    users: tuple[tuple[int, str], ...] = ()   # sync: (token, name) of the server's users


class Backplane:
    """What a Room asks of its backplane; every method answers later or at once."""

    server_id = "local"
    room: Room

    @property
    def is_up(self) -> bool:
        return True

    @property
    def state(self) -> str:
        """For /healthz: "off" (one process), or "up" or "down" (Redis)."""
        return "off"

    def attach(self, room: Room) -> None:
        self.room = room

    def join(self, member: int, candidates: list[str], time: int) -> None:
        """Claim the first free name of `candidates`: a JOIN event, or refused(member, JOIN)."""
        raise NotImplementedError

    def say(self, member: int, fields: str, time: int) -> None:
        """A message: a SAY event with the next id."""
        raise NotImplementedError

    def rename(self, member: int, old: str, new: str, time: int) -> None:
        """A RENAME event, or refused(member, RENAME) when `new` is taken."""
        raise NotImplementedError

    def leave(self, member: int, time: int) -> None:
        """A LEAVE event for whatever name the member holds."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class LocalBackplane(Backplane):
    """One process is the whole room: decided from the room's state, applied at once."""

    def __init__(self, server_id: str = "local") -> None:
        self.server_id = server_id

    def join(self, member: int, candidates: list[str], time: int) -> None:
        for name in candidates:
            if self.room.holder(name) is None:
                self.room.apply(Event(JOIN, self.server_id, member, time, name=name))
                return
        self.room.refused(member, JOIN)

    def say(self, member: int, fields: str, time: int) -> None:
        self.room.apply(Event(SAY, self.server_id, member, time, id=self.room.last_id + 1,
                              fields=fields))

    def rename(self, member: int, old: str, new: str, time: int) -> None:
        holder = self.room.holder(new)
        if holder is not None and holder != (self.server_id, member):
            self.room.refused(member, RENAME)
            return
        self.room.apply(Event(RENAME, self.server_id, member, time, name=new, old=old))

    def leave(self, member: int, time: int) -> None:
        self.room.apply(Event(LEAVE, self.server_id, member, time))


# ---- Redis ----------------------------------------------------------------------

# Every script starts with this: ARGV[1] is the key prefix, ARGV[2] the
# stream's length cap, ARGV[3] this server's id, ARGV[4] a time in ms.
# Scripts name their keys from the prefix (a single Redis, not Cluster).
_PRELUDE = r"""
local P, maxlen, me, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local function parse(v)
  return string.match(v, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$')
end
local function alive(server)
  return redis.call('EXISTS', P .. 'alive:' .. server) == 1
end
local function xadd(...)
  return redis.call('XADD', P .. 'stream', 'MAXLEN', '~', maxlen, '*', ...)
end
-- The name `key` is held by `v` ("server\ttoken\torder\tname"), whose server
-- is gone: its leave, and the name is free.
local function evict(key, v)
  local s, m, _, n = parse(v)
  redis.call('HDEL', P .. 'held:' .. s, m)
  redis.call('HDEL', P .. 'names', key)
  xadd('k', 'leave', 's', s, 'm', m, 't', now, 'n', n)
end
local function claim(key, token, order, name)
  redis.call('HSET', P .. 'names', key, me .. '\t' .. token .. '\t' .. order .. '\t' .. name)
  redis.call('HSET', P .. 'held:' .. me, token, key)
end
"""

SCRIPTS = {
    # ARGV[5] token, ARGV[6] op, then (name, key) pairs: the first free is taken.
    "join": r"""
local token, op = ARGV[5], ARGV[6]
for i = 7, #ARGV, 2 do
  local name, key = ARGV[i], ARGV[i + 1]
  local v = redis.call('HGET', P .. 'names', key)
  if v and not alive((parse(v))) then evict(key, v); v = false end
  if not v then
    claim(key, token, redis.call('INCR', P .. 'order'), name)
    xadd('k', 'join', 's', me, 'm', token, 't', now, 'p', op, 'n', name)
    return name
  end
end
return false
""",
    # ARGV[5] token, ARGV[6] op, ARGV[7] the message's fields, ARGV[8] history size.
    "say": r"""
local token, op, fields, keep = ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
local id = redis.call('INCR', P .. 'msgid')
xadd('k', 'say', 's', me, 'm', token, 't', now, 'p', op, 'i', id, 'f', fields)
if keep > 0 then
  redis.call('RPUSH', P .. 'history', '{"id":' .. id .. ',' .. fields .. ',"time":' .. now .. '}')
  redis.call('LTRIM', P .. 'history', -keep, -1)
else
  redis.call('DEL', P .. 'history')
end
return id
""",
    # ARGV[5] token, ARGV[6] op, ARGV[7] new name, ARGV[8] its key. 1 done, 0 taken.
    "rename": r"""
local token, op, name, key = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local oldkey = redis.call('HGET', P .. 'held:' .. me, token)
if not oldkey then return 0 end
local v = redis.call('HGET', P .. 'names', oldkey)
if not v then return 0 end
local s, m, order, old = parse(v)
if s ~= me or m ~= token then return 0 end
if key ~= oldkey then
  local h = redis.call('HGET', P .. 'names', key)
  if h then
    if alive((parse(h))) then return 0 end
    evict(key, h)
  end
  redis.call('HDEL', P .. 'names', oldkey)
end
claim(key, token, order, name)
xadd('k', 'rename', 's', me, 'm', token, 't', now, 'p', op, 'n', name, 'o', old)
return 1
""",
    # ARGV[5] token, ARGV[6] op.
    "leave": r"""
local token, op = ARGV[5], ARGV[6]
local key = redis.call('HGET', P .. 'held:' .. me, token)
if not key then return 0 end
redis.call('HDEL', P .. 'held:' .. me, token)
local v = redis.call('HGET', P .. 'names', key)
if not v then return 0 end
local s, m, _, n = parse(v)
if s ~= me or m ~= token then return 0 end
redis.call('HDEL', P .. 'names', key)
xadd('k', 'leave', 's', me, 'm', token, 't', now, 'p', op, 'n', n)
return 1
""",
    # ARGV[5] ttl in ms. Renews this server; reaps every server whose heartbeat
    # expired. Returns {users reaped, the servers alive}.
    "heartbeat": r"""
redis.call('SET', P .. 'alive:' .. me, '1', 'PX', ARGV[5])
redis.call('SADD', P .. 'servers', me)
local reaped = 0
for _, s in ipairs(redis.call('SMEMBERS', P .. 'servers')) do
  if not alive(s) then
    local held = redis.call('HGETALL', P .. 'held:' .. s)
    for i = 1, #held, 2 do
      local v = redis.call('HGET', P .. 'names', held[i + 1])
      if v then
        local vs, vm = parse(v)
        if vs == s and vm == held[i] then evict(held[i + 1], v); reaped = reaped + 1 end
      end
    end
    redis.call('DEL', P .. 'held:' .. s)
    redis.call('SREM', P .. 'servers', s)
  end
end
return {reaped, redis.call('SMEMBERS', P .. 'servers')}
""",
    # ARGV[5] ttl in ms, ARGV[6] the highest message id this server has seen,
    # then (token, name, key) of each of its users. Says hello after a
    # (re)connection: renews the heartbeat, keeps message ids growing past
    # what this server has seen, makes Redis hold exactly this server's
    # users (a name another live server took meanwhile is a conflict), and
    # tells the other servers who it has (a `sync` event). Returns the
    # tokens in conflict.
    "sync": r"""
redis.call('SET', P .. 'alive:' .. me, '1', 'PX', ARGV[5])
redis.call('SADD', P .. 'servers', me)
local last = tonumber(ARGV[6])
if tonumber(redis.call('GET', P .. 'msgid') or '0') < last then
  redis.call('SET', P .. 'msgid', last)
end
local want = {}
for i = 7, #ARGV, 3 do want[ARGV[i]] = ARGV[i + 2] end
local held = redis.call('HGETALL', P .. 'held:' .. me)
for i = 1, #held, 2 do
  local token, key = held[i], held[i + 1]
  if want[token] ~= key then
    redis.call('HDEL', P .. 'held:' .. me, token)
    local v = redis.call('HGET', P .. 'names', key)
    if v then
      local s, m = parse(v)
      if s == me and m == token then redis.call('HDEL', P .. 'names', key) end
    end
  end
end
local users, conflicts = {}, {}
for i = 7, #ARGV, 3 do
  local token, name, key = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local v = redis.call('HGET', P .. 'names', key)
  local order = false
  if v then
    local s, m, o = parse(v)
    if s == me and m == token then order = o
    elseif alive(s) then table.insert(conflicts, token); name = false
    else evict(key, v) end
  end
  if name then
    claim(key, token, order or redis.call('INCR', P .. 'order'), name)
    table.insert(users, token .. '\t' .. name)
  end
end
xadd('k', 'sync', 's', me, 't', now, 'u', table.concat(users, '\n'))
return conflicts
""",
    # This server stops: the leaves of every user it still holds, and it is gone.
    "goodbye": r"""
local held = redis.call('HGETALL', P .. 'held:' .. me)
for i = 1, #held, 2 do
  local v = redis.call('HGET', P .. 'names', held[i + 1])
  if v then
    local s, m = parse(v)
    if s == me and m == held[i] then evict(held[i + 1], v) end
  end
end
redis.call('DEL', P .. 'held:' .. me, P .. 'alive:' .. me)
redis.call('SREM', P .. 'servers', me)
return 1
""",
    # The room as it is: the last stream id, the names, the history, the last
    # message id, the servers.
    "snapshot": r"""
local last = redis.call('XREVRANGE', P .. 'stream', '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
return {id, redis.call('HGETALL', P .. 'names'), redis.call('LRANGE', P .. 'history', 0, -1),
        redis.call('GET', P .. 'msgid') or '0', redis.call('SMEMBERS', P .. 'servers')}
""",
}
SCRIPTS = {name: _PRELUDE + body for name, body in SCRIPTS.items()}
SHAS = {name: hashlib.sha1(source.encode()).hexdigest() for name, source in SCRIPTS.items()}


class BackplaneUnavailable(Exception):
    """`--backplane` could not be reached at start."""


class RedisBackplane(Backplane):
    """The room shared through Redis (module docstring): scripts in, a stream out.

    Two connections, each kept up by a `Reconnector`: `command` runs the
    scripts (pipelined), `reader` runs XREAD BLOCK from the last stream id
    seen. `start(on_ready)` checks that Redis answers, seeds the room from
    its snapshot, and calls `on_ready(None)` once this server has said
    hello, or `on_ready(error)`.
    """

    def __init__(self, loop: EventLoop, url: str, room: str = DEFAULT_ROOM, *,
                 ttl: float = DEFAULT_TTL, stream_length: int = DEFAULT_STREAM_LENGTH,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        self.loop = loop
        self.address = parse_url(url)
        self.room_name = room
        self.prefix = f"rawws:chat:{room}:"
        self.stream = self.prefix + "stream"
        self.ttl = ttl
        self.stream_length = stream_length
        self.connect_timeout = connect_timeout
        self.server_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.local = LocalBackplane(self.server_id)   # the answers while Redis is away
        self.last_seen = "0-0"        # the last stream id applied
        self.synced = False           # said hello on the current command connection
        self.delivered = 0            # events applied from the stream
        self._ops = itertools.count(1)
        # Requests whose reply was lost with the connection, so answered
        # locally: if Redis did run them, their event is skipped when read.
        self._done_locally: set[int] = set()
        self._done_order: deque[int] = deque()
        self._on_ready: Callable[[Exception | None], object] | None = None
        self._heartbeat: Timer | None = None
        self._startup_timer: Timer | None = None
        self._absent: dict[str, float] = {}   # servers of the room unknown to Redis, since when
        self._closed = False
        self._resync_due = False   # the reader found a gap: read the room's users again
        self.command = Reconnector(loop, self.address, name="backplane",
                                   on_up=self._command_up, on_down=self._command_down,
                                   connect_timeout=connect_timeout)
        self.reader = Reconnector(loop, self.address, name="backplane reader",
                                  on_up=self._reader_up, connect_timeout=connect_timeout,
                                  quiet=True)

    def __repr__(self) -> str:
        return f"<RedisBackplane {self.address} room={self.room_name!r} {self.server_id}>"

    @property
    def is_up(self) -> bool:
        return self.synced and self.command.is_up

    @property
    def state(self) -> str:
        return "up" if self.is_up else "down"

    # ---- starting and stopping ------------------------------------------------------

    def start(self, on_ready: Callable[[Exception | None], object]) -> None:
        """Connect once to check Redis and read the room, then keep both connections up."""
        self._on_ready = on_ready
        probe = RedisConnection(self.loop, self.address)

        def connected(future: ReplyFuture) -> None:
            if future.error() is not None:
                self._ready(BackplaneUnavailable(str(future.error())))
                return
            self._load_scripts(probe)
            self._eval(probe, "snapshot").add_done_callback(seeded)

        def seeded(future: ReplyFuture) -> None:
            probe.close()
            if future.error() is not None:
                self._ready(BackplaneUnavailable(f"Redis at {self.address}: {future.error()}"))
                return
            self._seed(future.result())
            self._startup_timer = self.loop.call_later(self.connect_timeout, lambda: self._ready(
                BackplaneUnavailable(f"Redis at {self.address} did not answer the hello")))
            self.command.start()
            self.reader.start()

        probe.connect(self.connect_timeout).add_done_callback(connected)

    def _ready(self, error: Exception | None) -> None:
        if self._startup_timer is not None:
            self._startup_timer.cancel()
            self._startup_timer = None
        callback, self._on_ready = self._on_ready, None
        if callback is not None:
            callback(error)

    def attach(self, room: Room) -> None:
        self.room = room
        self.local.attach(room)

    def close(self) -> None:
        """Stop, saying goodbye: the leaves of the users still held go out now
        rather than when the heartbeat expires. After the event loop has
        stopped, so with a blocking socket and a short timeout."""
        was_up = self.is_up
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self.command.close()
        self.reader.close()
        if was_up:
            try:
                with socket.create_connection((self.address.host, self.address.port),
                                              timeout=2.0) as sock:
                    sock.sendall(encode_command("SELECT", self.address.db)
                                 + encode_command("EVAL", SCRIPTS["goodbye"], 0, self.prefix,
                                                  self.stream_length, self.server_id,
                                                  self._now()))
                    parser = RespParser()
                    replies = 0
                    while replies < 2 and (data := sock.recv(4096)):
                        parser.feed(data)
                        while replies < 2 and parser.next_reply() is not NEED_DATA:
                            replies += 1
            except (OSError, RedisError) as error:
                log.warning("backplane: could not say goodbye to Redis: %s", error)

    def _seed(self, snapshot: list) -> None:
        last_id, names, history, msgid, _servers = snapshot
        self.last_seen = last_id.decode()
        users = []
        for i in range(1, len(names), 2):
            server, token, order, name = names[i].decode().split("\t", 3)
            users.append((int(order), server, int(token), name))
        users.sort()
        self.room.seed([(server, token, name) for _order, server, token, name in users],
                       [payload.decode() for payload in history], int(msgid))
        log.info("backplane: room %r on %s: %d user(s), %d message(s) of history, "
                 "this server is %s", self.room_name, self.address, len(users), len(history),
                 self.server_id)

    # ---- the command connection -------------------------------------------------------

    def _load_scripts(self, connection: RedisConnection) -> None:
        # Pipelined ahead of every EVALSHA on this connection, so none finds
        # its script missing, even on a Redis that just restarted empty.
        for source in SCRIPTS.values():
            connection.command("SCRIPT", "LOAD", source)

    def _eval(self, connection: RedisConnection, script: str, *args: Any,
              time: int = 0) -> ReplyFuture:
        return connection.command("EVALSHA", SHAS[script], 0, self.prefix, self.stream_length,
                                  self.server_id, time, *args)

    def _command_up(self, connection: RedisConnection) -> None:
        connection.command("CLIENT", "SETNAME", f"rawws-chat:{self.server_id}:command")
        self._load_scripts(connection)
        users = self.room.local_users
        args: list[Any] = [int(self.ttl * 1000), self.room.last_id]
        for token, name in users:
            args += [token, name, name_key(name)]
        self._eval(connection, "sync", *args, time=self._now()).add_done_callback(
            lambda future: self._synced(connection, future))

    def _synced(self, connection: RedisConnection, future: ReplyFuture) -> None:
        if future.error() is not None:
            if connection.is_open:   # a script error, not a lost connection
                log.error("backplane: hello refused by Redis: %s", future.error())
                connection.close()
            return
        self.synced = True
        for token in future.result():
            # A name another server's user took while this server was away
            # from Redis: that user keeps it; ours is closed.
            token = int(token)
            member = self.room.member_by_token(token)
            if member is not None:
                log.warning("backplane: %r was taken on another server while Redis was "
                            "away; closing %s", member.name, member.label)
                self.room.kick(member.conn, CLOSE_POLICY_VIOLATION,
                               "name taken on another server")
            self.room.apply(Event(LEAVE, self.server_id, token, self._now()))
        if self._heartbeat is None:
            self._schedule_heartbeat()
        self._resync()   # a gap the reader found while this connection was away
        self._ready(None)

    def _command_down(self, _error: Exception) -> None:
        self.synced = False

    def _schedule_heartbeat(self) -> None:
        self._heartbeat = self.loop.call_later(self.ttl / 3, self._beat)

    def _beat(self) -> None:
        if self._closed:
            return
        connection = self.command.connection
        if self.is_up and connection is not None:
            self._eval(connection, "heartbeat", int(self.ttl * 1000),
                       time=self._now()).add_done_callback(self._beaten)
        self._schedule_heartbeat()

    def _beaten(self, future: ReplyFuture) -> None:
        if future.error() is not None:
            return
        reaped, alive = future.result()
        if reaped:
            log.info("backplane: %d user(s) of stopped servers left", reaped)
        # Users of a server that Redis no longer knows (it died while Redis
        # was away, or Redis restarted empty) have no one to say they left:
        # after a whole ttl without that server, this server says so itself.
        alive = {server.decode() for server in alive}
        now = self.loop_time()
        for server in self.room.servers - alive - {self.server_id}:
            since = self._absent.setdefault(server, now)
            if now - since >= self.ttl:
                log.info("backplane: server %s is gone; its users leave", server)
                self.room.drop_server(server)
                del self._absent[server]
        for server in list(self._absent):
            if server in alive:
                del self._absent[server]

    # ---- requests ------------------------------------------------------------------------

    def _request(self, script: str, args: list[Any], time: int,
                 answered: Callable[[object], object], fallback: Callable[[], object]) -> None:
        """Run `script`, or `fallback` (the local answer) while Redis is away or
        when the reply is lost with the connection."""
        if self._closed:   # stopped: the goodbye speaks for every user left
            return
        connection = self.command.connection
        if not self.is_up or connection is None:
            fallback()
            return
        op = next(self._ops)

        def done(future: ReplyFuture) -> None:
            error = future.error()
            if error is None:
                answered(future.result())
                return
            if self._closed:
                return
            if connection.is_open:
                log.error("backplane: %s failed in Redis: %s", script, error)
            self._remember_local(op)
            fallback()

        self._eval(connection, script, *args[:1], op, *args[1:], time=time).add_done_callback(done)

    def _remember_local(self, op: int) -> None:
        self._done_locally.add(op)
        self._done_order.append(op)
        while len(self._done_order) > 10_000:
            self._done_locally.discard(self._done_order.popleft())

    def join(self, member: int, candidates: list[str], time: int) -> None:
        args: list[Any] = [member]
        for name in candidates:
            args += [name, name_key(name)]

        def answered(name: object) -> None:
            if name is None:
                self.room.refused(member, JOIN)
            # else the JOIN event comes back on the stream

        self._request("join", args, time, answered,
                      lambda: self.local.join(member, candidates, time))

    def say(self, member: int, fields: str, time: int) -> None:
        self._request("say", [member, fields, self.room.limits.history_size], time,
                      lambda _id: None, lambda: self.local.say(member, fields, time))

    def rename(self, member: int, old: str, new: str, time: int) -> None:
        def answered(done: object) -> None:
            if not done:
                self.room.refused(member, RENAME)

        self._request("rename", [member, new, name_key(new)], time, answered,
                      lambda: self.local.rename(member, old, new, time))

    def leave(self, member: int, time: int) -> None:
        self._request("leave", [member], time, lambda _done: None,
                      lambda: self.local.leave(member, time))

    # ---- the stream -------------------------------------------------------------------------

    def _reader_up(self, connection: RedisConnection) -> None:
        connection.command("CLIENT", "SETNAME", f"rawws-chat:{self.server_id}:reader")
        # Is the last event this server read still in the stream? If not, the
        # cap dropped it, and maybe more it had not read (it was away for more
        # than the last `stream_length` events), or Redis restarted empty.
        since = self.last_seen
        if since != "0-0":
            connection.command("XRANGE", self.stream, since, since).add_done_callback(
                lambda future: self._check_gap(future))
        self._read(connection)

    def _check_gap(self, future: ReplyFuture) -> None:
        if future.error() is not None or future.result():
            return   # the connection went again, or nothing was lost
        log.warning("backplane: the stream no longer holds the last event this server read "
                    "(away past the last %d events, or Redis restarted); reading the room's "
                    "users again", self.stream_length)
        self._resync_due = True
        self._resync()

    def _resync(self) -> None:
        """Read the room's users again, on the command connection: now if it is up,
        else once it is back (the reader may reconnect first)."""
        connection = self.command.connection
        if self._resync_due and connection is not None and connection.is_open and self.synced:
            self._resync_due = False
            self._eval(connection, "snapshot").add_done_callback(self._resynced)

    def _resynced(self, future: ReplyFuture) -> None:
        """After a gap: every other server's users as Redis holds them now, applied
        as one `sync` event per server (the joins, renames and leaves we missed).
        The messages missed are not shown: only the history of later joiners has them."""
        if future.error() is not None:
            return
        _last_id, names, _history, msgid, servers = future.result()
        held: dict[str, list[tuple[int, int, str]]] = {}
        for i in range(1, len(names), 2):
            server, token, order, name = names[i].decode().split("\t", 3)
            held.setdefault(server, []).append((int(order), int(token), name))
        now = self._now()
        # Only the servers Redis knows: one that has not said hello again yet
        # (after a restart) will; one that is gone is dropped after a ttl.
        for server in sorted({server.decode() for server in servers} - {self.server_id}):
            users = tuple((token, name) for _order, token, name in sorted(held.get(server, [])))
            self.room.apply(Event(SYNC, server, 0, now, users=users))
        self.room.last_id = max(self.room.last_id, int(msgid))

    def _read(self, connection: RedisConnection) -> None:
        connection.command("XREAD", "COUNT", READ_COUNT, "BLOCK", READ_BLOCK_MS, "STREAMS",
                           self.stream, self.last_seen).add_done_callback(
            lambda future: self._on_read(connection, future))

    def _on_read(self, connection: RedisConnection, future: ReplyFuture) -> None:
        if future.error() is not None:
            return   # the connection went: the Reconnector brings a new one, from last_seen
        for _stream, entries in future.result() or ():
            for entry_id, fields in entries:
                self.last_seen = entry_id.decode()
                event = self._decode(fields)
                if event is None:
                    continue
                if event.server == self.server_id and event.op in self._done_locally:
                    self._done_locally.discard(event.op)   # already answered locally
                    continue
                self.delivered += 1
                try:
                    self.room.apply(event)
                except Exception:
                    log.exception("backplane: applying %r failed", event)
        if connection.is_open and not self._closed:
            self._read(connection)

    def _decode(self, fields: list[bytes]) -> Event | None:
        try:
            f = {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields), 2)}
            users: tuple[tuple[int, str], ...] = ()
            if f.get("u"):
                users = tuple((int(token), name) for token, name in
                              (line.split("\t", 1) for line in f["u"].split("\n")))
            return Event(f["k"], f["s"], int(f.get("m", 0)), int(f["t"]), name=f.get("n", ""),
                         old=f.get("o", ""), id=int(f.get("i", 0)), fields=f.get("f", ""),
                         op=int(f.get("p", 0)), users=users)
        except (KeyError, ValueError, UnicodeDecodeError) as error:
            log.warning("backplane: skipping an event that is not ours: %r (%s)", fields, error)
            return None

    def _now(self) -> int:
        return self.room.now_ms()

    @staticmethod
    def loop_time() -> float:
        return time.monotonic()
