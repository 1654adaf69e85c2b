"""The chat room as pure logic: who is here, under which name, and who hears what.

The room never touches a socket. It is handed *connection handles*, objects
with the few members of `rawws.net.server.WebSocket` it uses:

    conn.send_text(text: str) -> bool      # one message to this connection only
    conn.close(code, reason)               # kick

and, for broadcasts, what `rawws.net.broadcast.broadcast` uses of them
(`send_frame_bytes`, `shared_deflate_bits`),

so the tests drive it with fakes and an injected clock. The rules it applies,
v1 and v2 side by side, are those of docs/protocol.md.

The room decides about its own connections (validation, rate limits, errors
to the sender only) and asks its backplane (chat/backplane.py) for every
change to what the whole room shares: names, message ids, history, the
user list. The backplane answers with events, and `Room.apply` is where
they change the shared state and are broadcast. The default backplane is
this process alone and answers at once; with Redis (`--backplane`) the
same events come back from a Redis stream, in the same order on every
server (docs/scaling.md).

A send to a connection that is closing or closed returns False and does
nothing, and never raises; the room just moves on. Such a connection leaves
the room the one way every connection does: the server calls the app's
`on_close`, which calls `disconnect`, and its leave is broadcast then, once.

A broadcast serializes each message once per protocol version and hands it
to the library's `broadcast`, which frames (and, for peers that agreed to
server_no_context_takeover, which the chat asks of every one, compresses)
it once and queues the very same bytes to every recipient: with N members a
message costs two encodes, not N. The room never sees a frame.

Measured with 1,000 members (half v1, half v2) and a 200-character
message, handing it to every connection handle took 0.36 ms, against 8 ms
when each recipient's copy was serialized and framed on its own (the real
handles' own work, queueing bytes, comes on top of both).
"""
from __future__ import annotations

import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rawws.close import CLOSE_POLICY_VIOLATION
from rawws.net.broadcast import broadcast

from . import messages as m
from .backplane import JOIN, LEAVE, RENAME, SAY, SYNC, Backplane, Event, LocalBackplane
from .messages import ChatError

log = logging.getLogger("chat")

# Messages a member may send while its join or rename awaits the backplane's
# answer (a round trip to Redis); past this they are refused as rate-limited.
MAX_PENDING = 64


@dataclass(frozen=True, slots=True)
class Limits:
    """The room's limits; every one is a `python -m chat` option."""

    max_message_length: int = 10000   # characters, after trimming
    max_username_length: int = 32     # characters, after trimming
    rate: float = 20.0                # messages a second, sustained; 0: no limit
    burst: int = 40                   # messages at once, after a quiet spell
    flood_kick: int = 100             # consecutive rate-limited messages before a kick; 0: never
    history_size: int = 100           # chat-messages kept for the v2 welcome
    history_bytes: int = 256 * 1024   # ...and at most this much of their JSON, so a
                                      # welcome stays small whatever the message length

    def __post_init__(self) -> None:
        if self.max_message_length < 1 or self.max_username_length < 1:
            raise ValueError("length limits must be at least 1")
        if self.rate < 0 or (self.rate > 0 and self.burst < 1):
            raise ValueError("rate must be >= 0 and burst >= 1")
        if self.flood_kick < 0 or self.history_size < 0 or self.history_bytes < 0:
            raise ValueError("flood_kick, history_size and history_bytes must be >= 0")

    def payload(self) -> dict[str, Any]:
        """The `limits` object of the v2 welcome."""
        limited = self.rate > 0
        return {"maxMessageLength": self.max_message_length,
                "maxUsernameLength": self.max_username_length,
                "ratePerSecond": self.rate if limited else None,
                "burst": self.burst if limited else None}


class TokenBucket:
    """A token bucket: holds up to `burst` tokens, gains `rate` a second, and
    each message takes one. So a connection may send `burst` messages at
    once (a paste of several lines) and `rate` a second for ever after."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self.stamp)   # a clock that steps back refills nothing
        self.stamp = now
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Member:
    """One open connection on this server; `name` is None until it joins.

    `token` names it to the backplane: (server id, token) is its owner key in
    the room's shared state. While a join or rename of its own waits for the
    backplane's answer, `busy` names it, and what the member sends meanwhile
    waits in `pending`, so its requests take effect in the order it sent them.
    """

    __slots__ = ("conn", "version", "name", "bucket", "strikes", "label", "token", "busy",
                 "pending", "gone")

    def __init__(self, conn: Any, version: int, bucket: TokenBucket | None, label: str,
                 token: int) -> None:
        self.conn = conn
        self.version = version
        self.name: str | None = None
        self.bucket = bucket
        self.strikes = 0          # consecutive rate-limited messages
        self.label = label        # for log lines: who this is on the network
        self.token = token
        self.busy: str | None = None     # JOIN or RENAME while its outcome is awaited
        self.pending: deque[tuple[str, Any]] = deque()
        self.gone = False         # disconnected while its join was awaited

    def __repr__(self) -> str:
        return f"<Member v{self.version} {self.name!r} {self.label}>"


class Room:
    """One chat room shared by v1 and v2 connections, on one server or many.

    The application calls `connect` when a WebSocket opens, `receive` /
    `receive_binary` for each message, and `disconnect` when it closes
    (as often as it likes: a member leaves once). `kick` removes a member
    from the server side.

    The room decides everything about its own connections (validation, rate
    limits, errors to the sender only) and asks its backplane
    (chat/backplane.py) for every change to the shared state: a join, a
    message, a rename, a leave. The backplane answers with events, and
    `apply(event)` is the one place where the shared state (who holds which
    name, in which order, the history, the last message id) changes and
    where every broadcast starts. The default `LocalBackplane` answers at
    once, in-process; a `RedisBackplane` answers when the event comes back
    from Redis, in the same order on every server.
    """

    def __init__(self, limits: Limits | None = None, *,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 backplane: Backplane | None = None) -> None:
        self.limits = limits or Limits()
        self._clock = clock                  # wall clock, seconds: the `time` fields
        self._monotonic = monotonic          # for the rate limit: never jumps
        # This server's connections.
        self._members: dict[int, Member] = {}   # id(conn) -> member, every open connection
        self._by_token: dict[int, Member] = {}  # member.token -> member, until its leave is out
        self._tokens = itertools.count(1)
        # The joined members' handles by protocol version: who hears which text.
        self._audience: dict[int, dict[int, Any]] = {1: {}, 2: {}}
        # The room's shared state, as the backplane's events built it: every
        # user of every server, as owner (server id, token) -> name in join
        # order, and name_key(name) -> owner.
        self._users: dict[tuple[str, int], str] = {}
        self._names: dict[str, tuple[str, int]] = {}
        # The last chat-messages as (v2 payload JSON, its size in UTF-8 bytes).
        self._history: deque[tuple[str, int]] = deque()
        self._history_bytes = 0                 # the sum of those sizes
        self.last_id = 0                        # the highest message id seen
        self.backplane = backplane if backplane is not None else LocalBackplane()
        self.server_id = self.backplane.server_id
        self.backplane.attach(self)

    # --- what the application calls ---------------------------------------

    def connect(self, conn: Any, version: int, label: str = "") -> Member:
        if version not in m.CLIENT_TYPES:
            raise ValueError(f"unknown protocol version {version!r}")
        bucket = None
        if self.limits.rate > 0:
            bucket = TokenBucket(self.limits.rate, self.limits.burst, self._monotonic())
        member = Member(conn, version, bucket, label, next(self._tokens))
        self._members[id(conn)] = member
        self._by_token[member.token] = member
        return member

    def receive(self, conn: Any, text: str) -> None:
        """One text message from `conn`."""
        member = self._members.get(id(conn))
        if member is None:   # already left (kicked, dropped) or never connected
            return
        # Every message costs a token, garbage too: the rate limit is the first
        # check, so a flood of bad JSON is answered `rate-limited` like any
        # other flood (and counts towards the kick). The text is parsed first
        # only so that the refusal can echo the message's type.
        try:
            env = m.parse_envelope(text)
        except ChatError as err:
            if self._admit(member, err.type):
                self._refuse(member, err)
            return
        if not self._admit(member, env.type):
            return
        if member.busy:   # its join or rename is on its way: this one waits for it
            if len(member.pending) >= MAX_PENDING:
                self._refuse(member, ChatError(m.RATE_LIMITED, type=env.type))
            else:
                member.pending.append(("envelope", env))
            return
        self._dispatch(member, env)

    def receive_binary(self, conn: Any, data: bytes) -> None:
        """One binary message from `conn`: the chat is JSON text only."""
        member = self._members.get(id(conn))
        if member is None or not self._admit(member, None):
            return
        self._refuse(member, ChatError(m.BINARY_UNSUPPORTED))

    def disconnect(self, conn: Any) -> None:
        """`conn` is gone; its leave is broadcast if it had joined. Idempotent."""
        member = self._members.get(id(conn))
        if member is not None:
            self._leave(member)

    def kick(self, conn: Any, code: int = CLOSE_POLICY_VIOLATION, reason: str = "") -> None:
        """Remove `conn` from the room (its leave is broadcast now) and close it."""
        member = self._members.get(id(conn))
        if member is None:
            return
        log.info("kick %s (%s): %d %s", member.label, member.name, code, reason)
        self._leave(member)
        member.conn.close(code, reason)

    # --- what tests, logs and the backplane look at ------------------------------

    @property
    def users(self) -> list[str]:
        """Names present in the whole room, in join order."""
        return list(self._users.values())

    @property
    def history(self) -> list[dict[str, Any]]:
        """The v2 payloads of the last chat-messages, oldest first."""
        return [json.loads(payload) for payload, _size in self._history]

    @property
    def local_users(self) -> list[tuple[int, str]]:
        """(token, name) of this server's joined members, in join order."""
        return [(owner[1], name) for owner, name in self._users.items()
                if owner[0] == self.server_id and owner[1] in self._by_token]

    @property
    def servers(self) -> set[str]:
        """The ids of the servers whose users are in the room."""
        return {server for server, _token in self._users}

    def holder(self, name: str) -> tuple[str, int] | None:
        """The owner (server id, token) holding `name` (or a name equal to it), if any."""
        return self._names.get(m.name_key(name))

    def member(self, conn: Any) -> Member | None:
        return self._members.get(id(conn))

    def member_by_token(self, token: int) -> Member | None:
        """This server's member with that token, while it is connected."""
        member = self._by_token.get(token)
        return member if member is not None and id(member.conn) in self._members else None

    def __len__(self) -> int:
        return len(self._members)

    # --- the rules --------------------------------------------------------------

    def _admit(self, member: Member, kind: str | None) -> bool:
        """Take a token for one incoming message, or refuse it as rate-limited."""
        if member.bucket is None or member.bucket.take(self._monotonic()):
            member.strikes = 0
            return True
        member.strikes += 1
        if self.limits.flood_kick and member.strikes >= self.limits.flood_kick:
            self.kick(member.conn, CLOSE_POLICY_VIOLATION, "too many messages")
        else:
            self._refuse(member, ChatError(m.RATE_LIMITED, type=kind))
        return False

    def _dispatch(self, member: Member, env: m.Envelope) -> None:
        try:
            if env.type not in m.CLIENT_TYPES[member.version]:
                raise ChatError(m.UNKNOWN_TYPE, type=env.type)
            self._handlers[member.version, env.type](self, member, env)
        except ChatError as err:
            self._refuse(member, err)

    def _refuse(self, member: Member, err: ChatError) -> None:
        """v2 hears a chat-error; v1 has no such message, so its message is dropped."""
        log.debug("refused %s (%s): %s", member.label, member.name, err)
        if member.version == 2:
            self._send(member, m.v2_error(err, self._now_ms()))

    def _v2_join(self, member: Member, env: m.Envelope) -> None:
        if member.name is not None:
            raise ChatError(m.ALREADY_JOINED, type=env.type)
        name = self._v2_name(env)
        if self.holder(name) is not None:
            raise ChatError(m.NAME_TAKEN, type=env.type)
        self._ask(member, m.JOIN, self.backplane.join, [name])

    def _v2_message(self, member: Member, env: m.Envelope) -> None:
        if member.name is None:
            raise ChatError(m.NOT_JOINED, type=env.type)
        self._say(member, m.clean_message(m.require_str(env, "message"),
                                          self.limits.max_message_length))

    def _v2_rename(self, member: Member, env: m.Envelope) -> None:
        if member.name is None:
            raise ChatError(m.NOT_JOINED, type=env.type)
        name = self._v2_name(env)
        holder = self.holder(name)
        if holder is not None and holder != self._owner(member):
            raise ChatError(m.NAME_TAKEN, type=env.type)
        if name != member.name:   # renaming to the held name changes nothing
            self._ask(member, m.RENAME, self.backplane.rename, member.name, name)

    def _v2_name(self, env: m.Envelope) -> str:
        try:
            return m.clean_username(m.require_str(env, "username"),
                                    self.limits.max_username_length)
        except ChatError as err:
            err.type = env.type
            raise

    def _v1_join(self, member: Member, env: m.Envelope) -> None:
        name = self._v1_name(env)
        if name is None:
            raise ChatError(m.NAME_INVALID, type=env.type)
        if member.name is None:
            self._ask(member, m.JOIN, self.backplane.join, self._free_variants(name))
        else:   # a second join: v1's way to change name, like the original server
            self._v1_rename(member, name)

    def _v1_message(self, member: Member, env: m.Envelope) -> None:
        text = m.clean_message(m.require_str(env, "message"), self.limits.max_message_length)
        name = self._v1_name(env)
        if member.name is None:
            if name is None:
                raise ChatError(m.NOT_JOINED, type=env.type)
            self._ask(member, m.JOIN, self.backplane.join, self._free_variants(name))
        elif name is not None:
            self._v1_rename(member, name)
        if member.busy:   # the join or rename goes first; the message once it is done
            member.pending.appendleft(("say", text))
        else:
            self._say(member, text)

    def _v1_name(self, env: m.Envelope) -> str | None:
        raw = m.get_str(env, "username")
        return None if raw is None else m.clean_username_v1(raw, self.limits.max_username_length)

    def _v1_rename(self, member: Member, name: str) -> None:
        """The v1 client sent a name other than the held one: take it when free,
        else keep the held name (it is never another member's)."""
        holder = self.holder(name)
        if name != member.name and (holder is None or holder == self._owner(member)):
            self._ask(member, m.RENAME, self.backplane.rename, member.name, name)

    def _free_variants(self, name: str, count: int = 4) -> list[str]:
        """`name`, or the first `count` of `name (2)`, `name (3)`... that no one
        holds, the name cut so the variant fits the length limit. The first
        is the one to take; the others are for a backplane that finds it was
        taken elsewhere meanwhile."""
        found = [name] if self.holder(name) is None else []
        limit = self.limits.max_username_length
        n = 2
        while len(found) < count:   # ends: at most len(self._names) variants are taken
            suffix = f" ({n})"
            if len(suffix) >= limit:   # a limit too short for variants: no more names
                if not found:
                    raise ChatError(m.NAME_TAKEN, type=m.JOIN)
                break
            variant = name[:limit - len(suffix)].rstrip() + suffix
            if self.holder(variant) is None:
                found.append(variant)
            n += 1
        return found

    _handlers: dict[tuple[int, str], Callable[[Room, Member, m.Envelope], None]] = {
        (1, m.JOIN): _v1_join,
        (1, m.MESSAGE): _v1_message,
        (2, m.JOIN): _v2_join,
        (2, m.MESSAGE): _v2_message,
        (2, m.RENAME): _v2_rename,
    }

    # --- requests to the backplane ------------------------------------------------

    def _ask(self, member: Member, kind: str, request: Callable[..., None], *args: Any) -> None:
        """A join or rename: the member is busy until `apply` or `refused` answers
        (with the LocalBackplane, before this returns)."""
        member.busy = kind
        request(member.token, *args, self._now_ms())

    def _say(self, member: Member, text: str) -> None:
        fields = m.message_fields(member.name, text)   # the text is serialized once, for both
        self.backplane.say(member.token, fields, self._now_ms())

    def _leave(self, member: Member) -> None:
        """Forget `member` here; its leave goes to the backplane if it had joined. Once."""
        if not self._remove(member):
            return
        if member.busy == m.JOIN:   # its join comes back later: its leave follows it then
            member.gone = True
            return
        del self._by_token[member.token]
        if member.name is not None:
            log.info("leave %s %r", member.label, member.name)
            self.backplane.leave(member.token, self._now_ms())

    def _remove(self, member: Member) -> bool:
        """Take `member` out of this server's tables; False when it was already gone."""
        key = id(member.conn)
        if self._members.get(key) is not member:
            return False
        del self._members[key]
        if member.name is not None:
            del self._audience[member.version][key]
        return True

    def refused(self, token: int, kind: str) -> None:
        """The backplane's answer to a join or rename (`kind`: JOIN or RENAME)
        that found the name taken."""
        kind = m.JOIN if kind == JOIN else m.RENAME
        member = self._by_token.get(token)
        if member is None or member.busy != kind:
            return
        member.busy = None
        if member.gone:
            del self._by_token[token]
            return
        self._refuse(member, ChatError(m.NAME_TAKEN, type=kind))
        self._resume(member)

    def _resume(self, member: Member) -> None:
        """Its join or rename is answered: what it sent meanwhile goes on, in order."""
        while member.pending and not member.busy and id(member.conn) in self._members:
            what, item = member.pending.popleft()
            if what == "say":
                if member.name is not None:   # a v1 message whose join was refused is dropped
                    self._say(member, item)
            else:
                self._dispatch(member, item)

    # --- events: the one place the shared state changes -----------------------------

    def apply(self, event: Event) -> None:
        """One event of the room, in the room's order: update the state, broadcast it."""
        self._appliers[event.kind](self, event)

    def seed(self, users: list[tuple[str, int, str]], history: list[str], last_id: int) -> None:
        """Start from a backplane's snapshot: users (server, token, name) in join
        order, the history's v2 payloads oldest first, the last message id."""
        for server, token, name in users:
            self._users[server, token] = name
            self._names[m.name_key(name)] = (server, token)
        for payload in history:
            self._remember(payload)
        self.last_id = max(self.last_id, last_id)

    def _owner(self, member: Member) -> tuple[str, int]:
        return (self.server_id, member.token)

    def _local(self, owner: tuple[str, int]) -> Member | None:
        return self._by_token.get(owner[1]) if owner[0] == self.server_id else None

    def _apply_join(self, event: Event) -> None:
        owner = (event.server, event.member)
        if owner in self._users:   # told twice (a resync): nothing changes
            return
        key = m.name_key(event.name)
        stale = self._names.get(key)
        if stale is not None:   # the backplane gave the name on: its holder is gone
            self._forget(stale, event.time)
        self._users[owner] = event.name
        self._names[key] = owner
        member = self._local(owner)
        if member is not None and member.busy == m.JOIN:
            member.busy = None
            member.name = event.name
            if member.gone:   # left before its join came back: the join, then its leave
                self._broadcast([m.v1_join(event.name)], [m.v2_join(event.name, event.time)])
                del self._by_token[member.token]
                self.backplane.leave(member.token, self._now_ms())
                return
            self._audience[member.version][id(member.conn)] = member.conn
            log.info("join %s as %r (v%d)", member.label, event.name, member.version)
            if member.version == 2:
                self._send(member, m.v2_welcome(event.name, self.users,
                                                [payload for payload, _size in self._history],
                                                self.limits.payload(), self._now_ms()))
        self._broadcast([m.v1_join(event.name)], [m.v2_join(event.name, event.time)])
        if member is not None:
            self._resume(member)

    def _apply_say(self, event: Event) -> None:
        if event.id > self.last_id:
            self.last_id = event.id
        payload = m.v2_message_payload(event.id, event.fields, event.time)
        self._remember(payload)
        self._broadcast([m.v1_message(event.fields)], [m.v2_message(payload)])

    def _remember(self, payload: str) -> None:
        """Keep a message for the welcome: the last `history_size` of them, fewer
        when they would pass `history_bytes`."""
        history = self._history
        size = len(payload.encode("utf-8"))   # measured once; kept beside it for its removal
        history.append((payload, size))
        self._history_bytes += size
        while history and (len(history) > self.limits.history_size
                           or self._history_bytes > self.limits.history_bytes):
            self._history_bytes -= history.popleft()[1]

    def _apply_rename(self, event: Event) -> None:
        owner = (event.server, event.member)
        old = self._users.get(owner)
        if old is None or old == event.name:
            return
        if self._names.get(m.name_key(old)) == owner:
            del self._names[m.name_key(old)]
        stale = self._names.get(m.name_key(event.name))
        if stale is not None and stale != owner:
            self._forget(stale, event.time)
        self._users[owner] = event.name   # keeps its place in the join order
        self._names[m.name_key(event.name)] = owner
        member = self._local(owner)
        if member is not None:
            member.name = event.name
            if member.busy == m.RENAME:
                member.busy = None
            log.info("rename %s %r -> %r", member.label, old, event.name)
        # v1 has no rename message: its clients see the old name leave and the new one join.
        self._broadcast([m.v1_leave(old), m.v1_join(event.name)],
                        [m.v2_rename(old, event.name, event.time)])
        if member is not None:
            self._resume(member)

    def _apply_leave(self, event: Event) -> None:
        self._forget((event.server, event.member), event.time)

    def _forget(self, owner: tuple[str, int], time_ms: int) -> None:
        """`owner` is no longer in the room: its leave, to everyone here."""
        name = self._users.pop(owner, None)
        if name is None:
            return
        if self._names.get(m.name_key(name)) == owner:
            del self._names[m.name_key(name)]
        self._broadcast([m.v1_leave(name)], [m.v2_leave(name, time_ms)])

    def _apply_sync(self, event: Event) -> None:
        """A server says who it has (after it lost the backplane a while): what
        differs from what we knew of it becomes leaves, renames and joins."""
        if event.server == self.server_id:
            return   # this server's own users are what it knows best
        listed = dict(event.users)
        for owner in [o for o in self._users if o[0] == event.server and o[1] not in listed]:
            self._forget(owner, event.time)
        for token, name in event.users:
            known = self._users.get((event.server, token))
            if known is None:
                self._apply_join(Event(JOIN, event.server, token, event.time, name=name))
            elif known != name:
                self._apply_rename(Event(RENAME, event.server, token, event.time, name=name))

    def drop_server(self, server: str, time_ms: int | None = None) -> None:
        """Every user of `server` leaves (it is gone and no event will say so)."""
        when = self._now_ms() if time_ms is None else time_ms
        for owner in [o for o in self._users if o[0] == server]:
            self._forget(owner, when)

    _appliers: dict[str, Callable[[Room, Event], None]] = {
        JOIN: _apply_join,
        SAY: _apply_say,
        RENAME: _apply_rename,
        LEAVE: _apply_leave,
        SYNC: _apply_sync,
    }

    # --- sending ------------------------------------------------------------------------

    def _broadcast(self, v1_texts: list[str], v2_texts: list[str]) -> None:
        """Send each version's messages to every joined member of that version.

        The hot path: each text goes to the library's `broadcast`, which
        encodes it once per wire form and hands the same bytes to each
        handle. No copy of the audience: nothing changes it during the
        loop, since a handle's send only queues bytes, and a connection ends
        (and reaches `disconnect`) only when the server flushes, after this.
        A send to a closing connection returns False (ignored: its on_close
        brings its leave).
        """
        for version, texts in ((1, v1_texts), (2, v2_texts)):
            audience = self._audience[version]
            if audience:
                for text in texts:
                    broadcast(audience.values(), text, on_error=self._send_failed)

    def _send_failed(self, conn: Any, error: Exception) -> None:
        """A handle must not raise; if one does, the others still hear (logged here)."""
        member = self._members.get(id(conn))
        label, name = (member.label, member.name) if member is not None else (repr(conn), None)
        log.error("send to %s (%s) failed: %r", label, name, error, exc_info=error)

    def _send(self, member: Member, text: str) -> None:
        """One message to one member (welcome, error); a closing one just doesn't get it."""
        try:
            member.conn.send_text(text)
        except Exception:   # as in _broadcast: never the room's problem
            log.exception("send to %s (%s) failed", member.label, member.name)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    now_ms = _now_ms   # the room's clock, for its backplane
