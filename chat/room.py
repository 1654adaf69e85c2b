"""The chat room as pure logic: who is here, under which name, and who hears what.

The room never touches a socket. It is handed *connection handles*, objects
with the few members of `rawws.net.server.WebSocket` it uses:

    conn.send_text(text: str) -> bool      # one message to this connection only
    conn.close(code, reason)               # kick

and, for broadcasts, what `rawws.net.broadcast.broadcast` uses of them
(`send_frame_bytes`, `shared_deflate_bits`),

so the tests drive it with fakes and an injected clock. The rules it applies,
v1 and v2 side by side, are those of docs/protocol.md.

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
from .messages import ChatError

log = logging.getLogger("chat")


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
    """One open connection in the room; `name` is None until it joins."""

    __slots__ = ("conn", "version", "name", "bucket", "strikes", "label")

    def __init__(self, conn: Any, version: int, bucket: TokenBucket | None, label: str) -> None:
        self.conn = conn
        self.version = version
        self.name: str | None = None
        self.bucket = bucket
        self.strikes = 0          # consecutive rate-limited messages
        self.label = label        # for log lines: who this is on the network

    def __repr__(self) -> str:
        return f"<Member v{self.version} {self.name!r} {self.label}>"


class Room:
    """One chat room shared by v1 and v2 connections.

    The application calls `connect` when a WebSocket opens, `receive` /
    `receive_binary` for each message, and `disconnect` when it closes
    (as often as it likes: a member leaves once). `kick` removes a member
    from the server side.
    """

    def __init__(self, limits: Limits | None = None, *,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or Limits()
        self._clock = clock                  # wall clock, seconds: the `time` fields
        self._monotonic = monotonic          # for the rate limit: never jumps
        self._members: dict[int, Member] = {}   # id(conn) -> member, every open connection
        self._joined: dict[int, Member] = {}    # id(conn) -> member holding a name, join order
        # The joined members' handles by protocol version: who hears which text.
        self._audience: dict[int, dict[int, Any]] = {1: {}, 2: {}}
        self._names: dict[str, Member] = {}     # name_key(name) -> member
        # The last chat-messages as (v2 payload JSON, its size in UTF-8 bytes).
        self._history: deque[tuple[str, int]] = deque()
        self._history_bytes = 0                 # the sum of those sizes
        self._last_id = 0

    # --- what the application calls ---------------------------------------

    def connect(self, conn: Any, version: int, label: str = "") -> Member:
        if version not in m.CLIENT_TYPES:
            raise ValueError(f"unknown protocol version {version!r}")
        bucket = None
        if self.limits.rate > 0:
            bucket = TokenBucket(self.limits.rate, self.limits.burst, self._monotonic())
        member = Member(conn, version, bucket, label)
        self._members[id(conn)] = member
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
        try:
            if env.type not in m.CLIENT_TYPES[member.version]:
                raise ChatError(m.UNKNOWN_TYPE, type=env.type)
            self._handlers[member.version, env.type](self, member, env)
        except ChatError as err:
            self._refuse(member, err)

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

    # --- what tests and logs look at -----------------------------------------

    @property
    def users(self) -> list[str]:
        """Names present, in join order."""
        return [member.name for member in self._joined.values()]

    @property
    def history(self) -> list[dict[str, Any]]:
        """The v2 payloads of the last chat-messages, oldest first."""
        return [json.loads(payload) for payload, _size in self._history]

    def member(self, conn: Any) -> Member | None:
        return self._members.get(id(conn))

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

    def _refuse(self, member: Member, err: ChatError) -> None:
        """v2 hears a chat-error; v1 has no such message, so its message is dropped."""
        log.debug("refused %s (%s): %s", member.label, member.name, err)
        if member.version == 2:
            self._send(member, m.v2_error(err, self._now_ms()))

    def _v2_join(self, member: Member, env: m.Envelope) -> None:
        if member.name is not None:
            raise ChatError(m.ALREADY_JOINED, type=env.type)
        name = self._v2_name(env)
        if m.name_key(name) in self._names:
            raise ChatError(m.NAME_TAKEN, type=env.type)
        self._join(member, name)

    def _v2_message(self, member: Member, env: m.Envelope) -> None:
        if member.name is None:
            raise ChatError(m.NOT_JOINED, type=env.type)
        self._say(member, m.clean_message(m.require_str(env, "message"),
                                          self.limits.max_message_length))

    def _v2_rename(self, member: Member, env: m.Envelope) -> None:
        if member.name is None:
            raise ChatError(m.NOT_JOINED, type=env.type)
        name = self._v2_name(env)
        holder = self._names.get(m.name_key(name))
        if holder is not None and holder is not member:
            raise ChatError(m.NAME_TAKEN, type=env.type)
        if name != member.name:   # renaming to the held name changes nothing
            self._rename(member, name)

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
            self._join(member, self._free_variant(name))
        else:   # a second join: v1's way to change name, like the original server
            self._v1_rename(member, name)

    def _v1_message(self, member: Member, env: m.Envelope) -> None:
        text = m.clean_message(m.require_str(env, "message"), self.limits.max_message_length)
        name = self._v1_name(env)
        if member.name is None:
            if name is None:
                raise ChatError(m.NOT_JOINED, type=env.type)
            self._join(member, self._free_variant(name))
        elif name is not None:
            self._v1_rename(member, name)
        self._say(member, text)

    def _v1_name(self, env: m.Envelope) -> str | None:
        raw = m.get_str(env, "username")
        return None if raw is None else m.clean_username_v1(raw, self.limits.max_username_length)

    def _v1_rename(self, member: Member, name: str) -> None:
        """The v1 client sent a name other than the held one: take it when free,
        else keep the held name (it is never another member's)."""
        holder = self._names.get(m.name_key(name))
        if name != member.name and (holder is None or holder is member):
            self._rename(member, name)

    def _free_variant(self, name: str) -> str:
        """`name`, or the first of `name (2)`, `name (3)`... that no one holds,
        the name cut so the variant fits the length limit."""
        if m.name_key(name) not in self._names:
            return name
        limit = self.limits.max_username_length
        n = 2
        while True:   # ends: at most len(self._names) variants are taken
            suffix = f" ({n})"
            if len(suffix) >= limit:   # a limit too short for variants: no name
                raise ChatError(m.NAME_TAKEN, type=m.JOIN)
            variant = name[:limit - len(suffix)].rstrip() + suffix
            if m.name_key(variant) not in self._names:
                return variant
            n += 1

    _handlers: dict[tuple[int, str], Callable[[Room, Member, m.Envelope], None]] = {
        (1, m.JOIN): _v1_join,
        (1, m.MESSAGE): _v1_message,
        (2, m.JOIN): _v2_join,
        (2, m.MESSAGE): _v2_message,
        (2, m.RENAME): _v2_rename,
    }

    # --- state changes, each with its broadcast -----------------------------------

    def _join(self, member: Member, name: str) -> None:
        member.name = name
        self._names[m.name_key(name)] = member
        self._joined[id(member.conn)] = member
        self._audience[member.version][id(member.conn)] = member.conn
        log.info("join %s as %r (v%d)", member.label, name, member.version)
        now = self._now_ms()
        if member.version == 2:
            self._send(member, m.v2_welcome(name, self.users,
                                            [payload for payload, _size in self._history],
                                            self.limits.payload(), now))
        self._broadcast([m.v1_join(name)], [m.v2_join(name, now)])

    def _say(self, member: Member, text: str) -> None:
        self._last_id += 1
        fields = m.message_fields(member.name, text)   # the text is serialized once, for both
        payload = m.v2_message_payload(self._last_id, fields, self._now_ms())
        self._remember(payload)
        self._broadcast([m.v1_message(fields)], [m.v2_message(payload)])

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

    def _rename(self, member: Member, new: str) -> None:
        old = member.name
        del self._names[m.name_key(old)]
        member.name = new
        self._names[m.name_key(new)] = member
        log.info("rename %s %r -> %r", member.label, old, new)
        # v1 has no rename message: its clients see the old name leave and the new one join.
        self._broadcast([m.v1_leave(old), m.v1_join(new)], [m.v2_rename(old, new, self._now_ms())])

    def _leave(self, member: Member) -> None:
        """Forget `member`; broadcast its leave if it had joined. Once per member."""
        if self._remove(member) and member.name is not None:
            log.info("leave %s %r", member.label, member.name)
            self._broadcast([m.v1_leave(member.name)], [m.v2_leave(member.name, self._now_ms())])

    def _remove(self, member: Member) -> bool:
        """Take `member` out of every table; False when it was already gone."""
        key = id(member.conn)
        if self._members.get(key) is not member:
            return False
        del self._members[key]
        if member.name is not None:
            del self._joined[key]
            del self._audience[member.version][key]
            del self._names[m.name_key(member.name)]
        return True

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
