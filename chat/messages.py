"""The chat's wire format: the JSON envelope both ways, for v1 and v2.

Every chat message is one WebSocket text message holding one JSON object,
`{"type": <string>, "payload": <object>}`. This module turns client text
into a checked `Envelope` (or a `ChatError` naming what is wrong) and builds
the text of every message the server sends. It knows nothing of rooms or
connections; docs/protocol.md is the reference for every name used here.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

PROTOCOL_V1 = "beej-chat-protocol"
PROTOCOL_V2 = "beej-chat-protocol-v2"
SUBPROTOCOLS = (PROTOCOL_V2, PROTOCOL_V1)   # the server's preference order
VERSION_OF = {PROTOCOL_V1: 1, PROTOCOL_V2: 2}

# Message types.
JOIN = "chat-join"
MESSAGE = "chat-message"
RENAME = "chat-rename"
LEAVE = "chat-leave"
WELCOME = "chat-welcome"
ERROR = "chat-error"

# What each version's clients may send.
CLIENT_TYPES = {1: frozenset({JOIN, MESSAGE}), 2: frozenset({JOIN, MESSAGE, RENAME})}

# chat-error codes (v2), with the text sent to people alongside each.
BAD_JSON = "bad-json"
BAD_ENVELOPE = "bad-envelope"
UNKNOWN_TYPE = "unknown-type"
BAD_FIELD = "bad-field"
NOT_JOINED = "not-joined"
ALREADY_JOINED = "already-joined"
NAME_INVALID = "name-invalid"
NAME_TAKEN = "name-taken"
MESSAGE_EMPTY = "message-empty"
MESSAGE_TOO_LONG = "message-too-long"
RATE_LIMITED = "rate-limited"
BINARY_UNSUPPORTED = "binary-unsupported"

ERROR_TEXT = {
    BAD_JSON: "the message is not a JSON object",
    BAD_ENVELOPE: 'the message needs a string "type" and an object "payload"',
    UNKNOWN_TYPE: "unknown message type",
    BAD_FIELD: "a field is missing or has the wrong type",
    NOT_JOINED: "join first (chat-join)",
    ALREADY_JOINED: "already joined; use chat-rename to change your name",
    NAME_INVALID: "that name is empty, too long, or holds control characters",
    NAME_TAKEN: "that name is taken",
    MESSAGE_EMPTY: "the message is empty",
    MESSAGE_TOO_LONG: "the message is too long",
    RATE_LIMITED: "too many messages; this one was dropped",
    BINARY_UNSUPPORTED: "binary messages are not supported; send JSON text",
}


class ChatError(Exception):
    """A refused client message: `code` for programs, `text` for people.

    `type` is the refused message's type when it had a string one, so a v2
    client can tell which of its requests failed.
    """

    def __init__(self, code: str, text: str | None = None, type: str | None = None) -> None:
        self.code = code
        self.text = text if text is not None else ERROR_TEXT[code]
        self.type = type
        super().__init__(f"{code}: {self.text}")


@dataclass(frozen=True, slots=True)
class Envelope:
    type: str
    payload: dict[str, Any]


# --- parsing -----------------------------------------------------------------

def _refuse_constant(name: str) -> Any:
    # json.loads would otherwise turn NaN, Infinity and -Infinity into floats:
    # they are not JSON (RFC 8259) and we do not take them.
    raise ValueError(f"{name} is not JSON")


def parse_envelope(text: str) -> Envelope:
    """Parse one client text message into its envelope, or raise ChatError.

    The WebSocket message size limit bounds `text`, but within it JSON can
    still nest deeply enough to hit the recursion limit, or hold an integer
    too long to convert: both are bad JSON, not server errors.
    """
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):   # JSONDecodeError is a ValueError
        raise ChatError(BAD_JSON) from None
    if not isinstance(obj, dict):
        raise ChatError(BAD_JSON)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ChatError(BAD_ENVELOPE)
    kind = scrub(kind)
    payload = obj.get("payload")
    if not isinstance(payload, dict):
        raise ChatError(BAD_ENVELOPE, type=kind)
    return Envelope(kind, payload)


def get_str(env: Envelope, name: str) -> str | None:
    """The string field `name` of the payload; None when missing or not a string.

    A field of the wrong type counts as missing (CONTRACT.md)."""
    value = env.payload.get(name)
    return value if isinstance(value, str) else None


def require_str(env: Envelope, name: str) -> str:
    value = get_str(env, name)
    if value is None:
        raise ChatError(BAD_FIELD, f'"{name}" must be a string', type=env.type)
    return value


# --- cleaning user text ------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")


def scrub(text: str) -> str:
    """Replace lone surrogates with U+FFFD.

    JSON's `\\ud800` escape yields a lone surrogate that json.loads keeps (it
    joins only proper pairs), and a lone surrogate cannot be encoded as
    UTF-8: passed on, it would fail the send of every broadcast it is in.
    """
    return _SURROGATE.sub("\ufffd", text)


# Characters refused in names: C0/C1 controls, format characters (bidi
# overrides let one name pass for another), surrogates, line and paragraph
# separators. Zero-width (non-)joiners stay allowed: some scripts and emoji
# sequences need them.
_BAD_NAME_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAME_ALLOWED_FORMAT = frozenset({"\u200c", "\u200d"})


def name_has_bad_chars(name: str) -> bool:
    return any(unicodedata.category(ch) in _BAD_NAME_CATEGORIES
               and ch not in _NAME_ALLOWED_FORMAT for ch in name)


def clean_username(raw: str, max_length: int) -> str:
    """Trim a requested name and check it (v2 rules); raise ChatError(name-invalid)."""
    name = raw.strip()
    if not name or len(name) > max_length or name_has_bad_chars(name):
        raise ChatError(NAME_INVALID)
    return name


def clean_username_v1(raw: str, max_length: int) -> str | None:
    """v1 has no error message: an over-long name is cut to fit; an empty one,
    or one with control characters, gives None (the request is dropped)."""
    name = raw.strip()[:max_length].rstrip()
    if not name or name_has_bad_chars(name):
        return None
    return name


def name_key(name: str) -> str:
    """What makes two names the same name: case and Unicode compatibility
    forms do not count, so `Beej`, `BEEJ` and `Ｂｅｅｊ` are one name."""
    return unicodedata.normalize("NFKC", name).casefold()


def clean_message(raw: str, max_length: int) -> str:
    """Trim a chat message and check it; raise message-empty or message-too-long."""
    text = raw.strip()
    if not text:
        raise ChatError(MESSAGE_EMPTY, type=MESSAGE)
    if len(text) > max_length:
        raise ChatError(MESSAGE_TOO_LONG,
                        f"the message is longer than {max_length} characters", type=MESSAGE)
    return scrub(text)


# --- building server messages --------------------------------------------------

def dumps(obj: Any) -> str:
    """Compact JSON, non-ASCII as itself (as JavaScript's JSON.stringify does)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def envelope(kind: str, payload: dict[str, Any]) -> str:
    return dumps({"type": kind, "payload": payload})


def v1_join(name: str) -> str:
    return envelope(JOIN, {"username": name})


def message_fields(name: str, text: str) -> str:
    """`"username":...,"message":...`: the JSON members that v1's and v2's
    chat-message share. A broadcast builds both forms from this one string,
    so the text (up to the message length limit) is serialized once, not twice."""
    return f'"username":{dumps(name)},"message":{dumps(text)}'


def v1_message(fields: str) -> str:
    """A v1 chat-message from `message_fields(name, text)`."""
    return f'{{"type":"{MESSAGE}","payload":{{{fields}}}}}'


def v1_leave(name: str) -> str:
    return envelope(LEAVE, {"username": name})


def v2_join(name: str, time: int) -> str:
    return envelope(JOIN, {"username": name, "time": time})


def v2_message_payload(msg_id: int, fields: str, time: int) -> str:
    """The JSON text of a v2 chat-message payload, from `message_fields(name, text)`:
    `{"id":...,"username":...,"message":...,"time":...}`."""
    return f'{{"id":{msg_id},{fields},"time":{time}}}'


def v2_message(payload_json: str) -> str:
    # The payload is serialized once, for history as well as the broadcast.
    return f'{{"type":"{MESSAGE}","payload":{payload_json}}}'


def v2_rename(old: str, new: str, time: int) -> str:
    return envelope(RENAME, {"from": old, "to": new, "time": time})


def v2_leave(name: str, time: int) -> str:
    return envelope(LEAVE, {"username": name, "time": time})


def v2_error(err: ChatError, time: int) -> str:
    return envelope(ERROR, {"code": err.code, "message": err.text, "type": err.type,
                            "time": time})


def v2_welcome(name: str, users: list[str], history_json: list[str],
               limits: dict[str, Any], time: int) -> str:
    """The welcome, with `history` spliced in from already-serialized payloads.

    History holds up to 100 messages of up to the message length limit each;
    re-serializing them for every joiner would cost more than the rest of the
    join, so each payload is kept as JSON text and joined here as is.
    """
    head = dumps({"username": name, "users": users, "limits": limits, "time": time})
    payload = f'{head[:-1]},"history":[{",".join(history_json)}]}}'
    return f'{{"type":"{WELCOME}","payload":{payload}}}'
