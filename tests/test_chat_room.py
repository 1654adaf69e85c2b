"""chat.room: the room's rules, driven with fake connection handles, an
injected clock and a counting frame encoder; no sockets."""
import json

import pytest

from chat import messages as m
import rawws.net.broadcast
from chat.room import Limits, Room
from rawws.frames import OP_TEXT
from rawws.protocol import encode_shared_frame


class FakeWS:
    """The part of rawws.net.ws_session.WebSocket the room uses, recording what it gets.

    Like the real handle, a send to a connection that is not open returns
    False and does nothing. `fail=True` makes every send raise, which the
    real handle never does: the room must survive it anyway."""

    shared_deflate_bits = None   # no permessage-deflate: plain frames

    def __init__(self, fail=False, quiet=False):
        self.open = True
        self.fail = fail
        self.quiet = quiet    # keep nothing: for rooms of thousands
        self.frames = []      # raw frame bytes from broadcasts
        self.received = []    # every message as a dict, in order
        self.closed = None    # (code, reason) once closed
        self.refused = 0      # sends that returned False

    def _accepts(self):
        if self.fail:
            raise ConnectionResetError("peer went away")
        if not self.open:
            self.refused += 1
        return self.open

    def send_text(self, text):
        if not self._accepts():
            return False
        self.received.append(json.loads(text))
        return True

    def send_frame_bytes(self, frame):
        if not self._accepts():
            return False
        if self.quiet:
            return True
        self.frames.append(frame)
        assert frame[0] == 0x80 | OP_TEXT
        length = frame[1] & 0x7F
        start = {126: 4, 127: 10}.get(length, 2)
        self.received.append(json.loads(frame[start:].decode("utf-8")))
        return True

    def close(self, code=1000, reason=""):
        if self.closed is None:
            self.closed = (code, reason)
        self.open = False

    def types(self):
        return [msg["type"] for msg in self.received]

    def last(self):
        return self.received[-1]

    def clear(self):
        self.received.clear()
        self.frames.clear()


class Clock:
    def __init__(self, now=1_700_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


class CountingEncoder:
    """Wraps the library's broadcast encoder and counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, message, deflate_bits=None):
        self.calls += 1
        return encode_shared_frame(message, deflate_bits)


@pytest.fixture
def encoder(monkeypatch):
    counting = CountingEncoder()
    monkeypatch.setattr(rawws.net.broadcast, "encode_shared_frame", counting)
    return counting


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def room(clock):
    return make_room(clock)


def make_room(clock=None, **limits):
    clock = clock or Clock()
    return Room(Limits(**limits), clock=clock, monotonic=clock)


def send(room, ws, kind, **payload):
    room.receive(ws, json.dumps({"type": kind, "payload": payload}))


def connect(room, version, name=None, quiet=False):
    ws = FakeWS(quiet=quiet)
    room.connect(ws, version, label=f"fake-{id(ws)}")
    if name is not None:
        send(room, ws, m.JOIN, username=name)
    return ws


def errors(ws):
    return [msg["payload"]["code"] for msg in ws.received if msg["type"] == m.ERROR]


# --- joining -------------------------------------------------------------------------------------

def test_v2_join_sends_the_welcome_to_the_joiner_first(room):
    ws = connect(room, 2, "Beej")
    assert ws.types() == [m.WELCOME, m.JOIN]
    assert ws.received[0]["payload"]["username"] == "Beej"


def test_welcome_lists_present_users_in_join_order_joiner_included(room):
    connect(room, 2, "a")
    connect(room, 1, "b")
    ws = connect(room, 2, "c")
    assert ws.received[0]["payload"]["users"] == ["a", "b", "c"]


def test_welcome_carries_the_limits():
    room = make_room(max_message_length=500, max_username_length=20, rate=12.5, burst=30)
    ws = connect(room, 2, "Beej")
    assert ws.received[0]["payload"]["limits"] == {
        "maxMessageLength": 500, "maxUsernameLength": 20, "ratePerSecond": 12.5, "burst": 30}


def test_welcome_limits_say_null_when_there_is_no_rate_limit():
    ws = connect(make_room(rate=0), 2, "Beej")
    limits = ws.received[0]["payload"]["limits"]
    assert (limits["ratePerSecond"], limits["burst"]) == (None, None)


def test_welcome_history_holds_the_last_100_messages_oldest_first():
    room = make_room(rate=0)
    talker = connect(room, 2, "talker")
    for i in range(105):
        send(room, talker, m.MESSAGE, message=f"msg {i}")
    ws = connect(room, 2, "late")
    history = ws.received[0]["payload"]["history"]
    assert [h["message"] for h in history] == [f"msg {i}" for i in range(5, 105)]
    assert history[0] == {"id": 6, "username": "talker", "message": "msg 5",
                          "time": history[0]["time"]}


def test_welcome_history_includes_messages_from_v1_senders(room):
    v1 = connect(room, 1, "old")
    send(room, v1, m.MESSAGE, username="old", message="hello")
    ws = connect(room, 2, "new")
    assert [(h["username"], h["message"]) for h in ws.received[0]["payload"]["history"]] == [
        ("old", "hello")]


def test_join_is_broadcast_to_everyone_joined_with_time(room, clock):
    other = connect(room, 2, "a")
    other.clear()
    clock.now = 1_700_000_123.456
    connect(room, 2, "b")
    assert other.received == [{"type": m.JOIN,
                               "payload": {"username": "b", "time": 1_700_000_123_456}}]


def test_v1_joiner_gets_a_plain_join_and_no_welcome(room):
    ws = connect(room, 1, "Beej")
    assert ws.received == [{"type": "chat-join", "payload": {"username": "Beej"}}]


def test_a_connection_that_has_not_joined_hears_nothing(room):
    lurker = connect(room, 2)
    talker = connect(room, 2, "a")
    send(room, talker, m.MESSAGE, message="hi")
    assert lurker.received == []


def test_join_name_is_trimmed(room):
    connect(room, 2, "  Beej  ")
    assert room.users == ["Beej"]


# --- messages ------------------------------------------------------------------------------------

def test_message_is_broadcast_to_everyone_the_sender_too(room):
    a, b = connect(room, 2, "a"), connect(room, 2, "b")
    send(room, a, m.MESSAGE, message="  Hello, Goats!  ")
    for ws in (a, b):
        assert ws.last()["type"] == m.MESSAGE
        assert ws.last()["payload"]["message"] == "Hello, Goats!"
        assert ws.last()["payload"]["username"] == "a"


def test_message_ids_start_at_1_and_grow_by_one_across_senders(room):
    a, b = connect(room, 2, "a"), connect(room, 1, "b")
    send(room, a, m.MESSAGE, message="1")
    send(room, b, m.MESSAGE, message="2")
    send(room, a, m.MESSAGE, message="3")
    ids = [msg["payload"]["id"] for msg in a.received if msg["type"] == m.MESSAGE]
    assert ids == [1, 2, 3]


def test_message_time_is_the_injected_clock_in_milliseconds(room, clock):
    a = connect(room, 2, "a")
    clock.now = 1_800_000_000.25
    send(room, a, m.MESSAGE, message="tick")
    assert a.last()["payload"]["time"] == 1_800_000_000_250


def test_v2_username_in_a_message_is_ignored(room):
    connect(room, 2, "Beej")
    mallory = connect(room, 2, "mallory")
    send(room, mallory, m.MESSAGE, username="Beej", message="I am Beej")
    assert mallory.last()["payload"]["username"] == "mallory"
    assert room.users == ["Beej", "mallory"]


def test_lone_surrogates_reach_everyone_as_replacement_characters(room):
    a = connect(room, 2, "a")
    room.receive(a, '{"type": "chat-message", "payload": {"message": "x\\ud800y"}}')
    assert a.last()["payload"]["message"] == "x\ufffdy"


# --- names: unique, v1 variants, renames, impersonation ------------------------------------------

def test_v2_join_with_a_taken_name_is_refused_with_name_taken(room):
    first = connect(room, 2, "Beej")
    first.clear()
    second = connect(room, 2, "Beej")
    assert errors(second) == [m.NAME_TAKEN]
    assert room.users == ["Beej"] and room.member(second).name is None
    assert first.received == []


def test_names_are_taken_regardless_of_case(room):
    connect(room, 2, "Beej")
    second = connect(room, 2, "BEEJ")
    assert errors(second) == [m.NAME_TAKEN]


def test_v1_join_with_a_taken_name_gets_the_next_free_variant(room):
    connect(room, 2, "Beej")
    connect(room, 1, "Beej")
    connect(room, 1, "beej")
    assert room.users == ["Beej", "Beej (2)", "beej (3)"]


def test_v1_variant_fits_the_name_length_limit():
    room = make_room(max_username_length=8)
    connect(room, 1, "abcdefgh")
    connect(room, 1, "abcdefgh")
    assert room.users == ["abcdefgh", "abcd (2)"]


def test_v1_over_long_join_name_is_cut_to_the_limit():
    room = make_room(max_username_length=4)
    connect(room, 1, "Beejjorgensen")
    assert room.users == ["Beej"]


def test_a_name_is_free_again_once_its_holder_leaves(room):
    first = connect(room, 2, "Beej")
    room.disconnect(first)
    connect(room, 2, "Beej")
    assert room.users == ["Beej"]


def test_v2_rename_is_broadcast_as_chat_rename_to_v2_and_leave_join_to_v1(room, clock):
    v2 = connect(room, 2, "old")
    v1 = connect(room, 1, "watcher")
    v2.clear(), v1.clear()
    send(room, v2, m.RENAME, username="new")
    assert v2.received == [{"type": m.RENAME, "payload": {
        "from": "old", "to": "new", "time": int(clock.now * 1000)}}]
    assert v1.received == [{"type": m.LEAVE, "payload": {"username": "old"}},
                           {"type": m.JOIN, "payload": {"username": "new"}}]
    assert room.users == ["new", "watcher"]


def test_rename_keeps_the_join_order_of_users(room):
    a = connect(room, 2, "a")
    connect(room, 2, "b")
    send(room, a, m.RENAME, username="z")
    assert room.users == ["z", "b"]


def test_v2_rename_to_a_taken_name_is_refused_with_name_taken(room):
    connect(room, 2, "Beej")
    other = connect(room, 2, "other")
    send(room, other, m.RENAME, username="beej")
    assert errors(other) == [m.NAME_TAKEN]
    assert room.users == ["Beej", "other"]


def test_v2_rename_to_the_held_name_sends_nothing(room):
    a = connect(room, 2, "Beej")
    a.clear()
    send(room, a, m.RENAME, username=" Beej ")
    assert a.received == []


def test_v2_rename_may_change_the_case_of_ones_own_name(room):
    a = connect(room, 2, "beej")
    send(room, a, m.RENAME, username="Beej")
    assert a.last()["payload"]["to"] == "Beej" and room.users == ["Beej"]


def test_the_old_name_is_free_after_a_rename(room):
    a = connect(room, 2, "old")
    send(room, a, m.RENAME, username="new")
    connect(room, 2, "old")
    assert room.users == ["new", "old"]


def test_v1_message_with_a_free_new_username_renames_then_says(room):
    v1 = connect(room, 1, "Guest 1a2b")
    v2 = connect(room, 2, "watcher")
    v2.clear()
    send(room, v1, m.MESSAGE, username="Beej", message="hi")
    assert [msg["type"] for msg in v2.received] == [m.RENAME, m.MESSAGE]
    assert v2.last()["payload"]["username"] == "Beej"
    assert room.users == ["Beej", "watcher"]


def test_v1_message_under_someone_elses_name_is_sent_under_the_held_name(room):
    connect(room, 2, "Beej")
    mallory = connect(room, 1, "mallory")
    send(room, mallory, m.MESSAGE, username="Beej", message="I am Beej")
    assert mallory.last() == {"type": m.MESSAGE,
                              "payload": {"username": "mallory", "message": "I am Beej"}}
    assert room.users == ["Beej", "mallory"]


def test_v1_variant_holder_sending_its_asked_name_stays_the_variant(room):
    connect(room, 2, "Beej")
    v1 = connect(room, 1, "Beej")
    send(room, v1, m.MESSAGE, username="Beej", message="hello")
    assert v1.last()["payload"] == {"username": "Beej (2)", "message": "hello"}


def test_v1_message_with_an_invalid_username_is_sent_under_the_held_name(room):
    v1 = connect(room, 1, "Beej")
    send(room, v1, m.MESSAGE, username="   ", message="hello")
    assert v1.last()["payload"] == {"username": "Beej", "message": "hello"}


def test_v1_message_before_any_join_joins_under_its_username(room):
    v1 = connect(room, 1)
    send(room, v1, m.MESSAGE, username="Beej", message="hello")
    assert v1.types() == [m.JOIN, m.MESSAGE] and room.users == ["Beej"]


def test_v1_second_join_is_a_rename(room):
    v1 = connect(room, 1, "a")
    send(room, v1, m.JOIN, username="b")
    assert v1.received[-2:] == [{"type": m.LEAVE, "payload": {"username": "a"}},
                                {"type": m.JOIN, "payload": {"username": "b"}}]


# --- v1 and v2 side by side ----------------------------------------------------------------------

def test_v1_and_v2_recipients_each_get_their_own_wire_form(room, clock):
    v1, v2 = connect(room, 1, "one"), connect(room, 2, "two")
    v1.clear(), v2.clear()
    send(room, v1, m.MESSAGE, username="one", message="hi")
    assert v1.received == [{"type": "chat-message",
                            "payload": {"username": "one", "message": "hi"}}]
    assert v2.received == [{"type": "chat-message", "payload": {
        "id": 1, "username": "one", "message": "hi", "time": int(clock.now * 1000)}}]


def test_broadcast_encodes_each_wire_form_once_and_sends_the_same_bytes(room, encoder):
    v1s = [connect(room, 1, f"v1-{i}") for i in range(3)]
    v2s = [connect(room, 2, f"v2-{i}") for i in range(3)]
    encoder.calls = 0
    send(room, v1s[0], m.MESSAGE, message="once")
    assert encoder.calls == 2
    assert all(ws.frames[-1] is v1s[0].frames[-1] for ws in v1s)
    assert all(ws.frames[-1] is v2s[0].frames[-1] for ws in v2s)


def test_broadcast_to_only_v2_members_encodes_only_the_v2_form(room, encoder):
    a = connect(room, 2, "a")
    connect(room, 2, "b")
    encoder.calls = 0
    send(room, a, m.MESSAGE, message="x")
    assert encoder.calls == 1


# --- leaving -------------------------------------------------------------------------------------

def test_leave_is_broadcast_to_those_still_here(room, clock):
    a, b = connect(room, 2, "a"), connect(room, 1, "b")
    a.clear(), b.clear()
    room.disconnect(a)
    assert b.received == [{"type": m.LEAVE, "payload": {"username": "a"}}]
    assert a.received == []
    assert room.users == ["b"]


def test_leave_is_broadcast_once_when_disconnect_is_called_twice(room):
    a, b = connect(room, 2, "a"), connect(room, 2, "b")
    b.clear()
    room.disconnect(a)
    room.disconnect(a)
    assert b.types() == [m.LEAVE]


def test_leave_is_broadcast_once_when_a_kicked_member_disconnects(room):
    a, b = connect(room, 2, "a"), connect(room, 2, "b")
    b.clear()
    room.kick(a, 1008, "go away")
    room.disconnect(a)
    assert b.types() == [m.LEAVE]
    assert a.closed == (1008, "go away")


def test_a_connection_that_never_joined_leaves_without_a_broadcast(room):
    a, lurker = connect(room, 2, "a"), connect(room, 2)
    a.clear()
    room.disconnect(lurker)
    assert a.received == [] and len(room) == 1


def test_messages_from_a_kicked_connection_are_ignored(room):
    a, b = connect(room, 2, "a"), connect(room, 2, "b")
    room.kick(a)
    b.clear()
    send(room, a, m.MESSAGE, message="still here?")
    assert b.received == []


# --- closed and failing recipients --------------------------------------------------------------
# A connection that is closing or closed stays in the room until its on_close
# calls disconnect; meanwhile its handle's sends return False, and nobody else
# notices. A handle that raises (the real one never does) is logged and skipped.

def test_a_closed_recipient_is_skipped_and_the_others_still_hear(room):
    a, closing, c = connect(room, 2, "a"), connect(room, 1, "closing"), connect(room, 1, "c")
    closing.open = False
    closing.clear()
    send(room, a, m.MESSAGE, message="hi")
    assert closing.received == [] and closing.refused == 1
    assert a.last()["payload"]["message"] == "hi" and c.last()["payload"]["message"] == "hi"


def test_a_closed_recipient_leaves_once_when_its_close_reaches_the_room(room):
    a, closing = connect(room, 2, "a"), connect(room, 2, "closing")
    closing.open = False
    send(room, a, m.MESSAGE, message="hi")
    assert room.users == ["a", "closing"]   # no leave until its on_close
    room.disconnect(closing)
    room.disconnect(closing)
    assert [msg["payload"]["username"] for msg in a.received if msg["type"] == m.LEAVE] == [
        "closing"]
    assert room.users == ["a"] and closing.closed is None


@pytest.mark.parametrize("version", [1, 2])
def test_a_recipient_whose_send_raises_does_not_stop_the_broadcast(room, version, caplog):
    a = connect(room, 2, "a")
    broken = connect(room, version, "broken")
    c = connect(room, 1, "c")
    d = connect(room, version, "d")
    broken.fail = True
    with caplog.at_level("ERROR", logger="chat"):
        send(room, a, m.MESSAGE, message="hi")
    for ws in (a, c, d):
        assert ws.last()["type"] == m.MESSAGE and ws.last()["payload"]["message"] == "hi"
    assert room.users == ["a", "broken", "c", "d"]   # not dropped: its on_close will come
    assert "send to" in caplog.text and "broken" in caplog.text


def test_a_recipient_whose_send_raises_does_not_cut_a_two_frame_broadcast_short(room):
    broken, v1 = connect(room, 1, "b"), connect(room, 1, "old")   # broken comes first
    broken.fail = True
    send(room, v1, m.JOIN, username="new")    # v1 hears a rename as a leave and a join
    assert v1.received[-2:] == [{"type": m.LEAVE, "payload": {"username": "old"}},
                                {"type": m.JOIN, "payload": {"username": "new"}}]


def test_many_closed_recipients_cost_the_others_nothing_and_leave_once_each(room):
    a = connect(room, 1, "a")
    closed = [connect(room, 1, f"b{i}", quiet=True) for i in range(1500)]
    for ws in closed:
        ws.open = False
    a.clear()
    send(room, a, m.MESSAGE, message="hi")
    assert a.types() == [m.MESSAGE]
    for ws in closed:
        room.disconnect(ws)
    assert room.users == ["a"] and a.types().count(m.LEAVE) == 1500


@pytest.mark.parametrize("fail", [False, True], ids=["closed", "raising"])
def test_a_joiner_whose_welcome_is_not_sent_changes_nothing_for_the_others(room, fail):
    a = connect(room, 2, "a")
    joiner = FakeWS(fail=fail)
    if not fail:
        joiner.open = False   # closing: its sends return False (its join came before its Close)
    room.connect(joiner, 2)
    send(room, joiner, m.JOIN, username="j")
    assert a.types()[-1] == m.JOIN and room.users == ["a", "j"]
    room.disconnect(joiner)   # its on_close
    assert a.types()[-2:] == [m.JOIN, m.LEAVE] and room.users == ["a"] and len(room) == 1


# --- chat-error codes (v2) and the silence of v1 -------------------------------------------------

@pytest.mark.parametrize("text, code, echoed", [
    ("not json", m.BAD_JSON, None),
    ("[1, 2]", m.BAD_JSON, None),
    ('{"type": 7, "payload": {}}', m.BAD_ENVELOPE, None),
    ('{"type": "chat-message", "payload": "hi"}', m.BAD_ENVELOPE, "chat-message"),
    ('{"type": "chat-dance", "payload": {}}', m.UNKNOWN_TYPE, "chat-dance"),
    ('{"type": "chat-message", "payload": {}}', m.BAD_FIELD, "chat-message"),
    ('{"type": "chat-message", "payload": {"message": 5}}', m.BAD_FIELD, "chat-message"),
    ('{"type": "chat-rename", "payload": {"username": null}}', m.BAD_FIELD, "chat-rename"),
    ('{"type": "chat-join", "payload": {"username": "x"}}', m.ALREADY_JOINED, "chat-join"),
    ('{"type": "chat-rename", "payload": {"username": "bad\\u0000"}}', m.NAME_INVALID,
     "chat-rename"),
    ('{"type": "chat-rename", "payload": {"username": "  "}}', m.NAME_INVALID, "chat-rename"),
    ('{"type": "chat-rename", "payload": {"username": "taken"}}', m.NAME_TAKEN, "chat-rename"),
    ('{"type": "chat-message", "payload": {"message": " \\n "}}', m.MESSAGE_EMPTY, "chat-message"),
    ('{"type": "chat-message", "payload": {"message": "%s"}}' % ("x" * 101), m.MESSAGE_TOO_LONG,
     "chat-message"),
])
def test_v2_refusal_gets_its_chat_error_to_the_sender_only(text, code, echoed, clock):
    room = make_room(clock, max_message_length=100)
    other = connect(room, 2, "taken")
    ws = connect(room, 2, "me")
    other.clear(), ws.clear()
    room.receive(ws, text)
    assert ws.received == [{"type": m.ERROR, "payload": {
        "code": code, "message": ws.received[0]["payload"]["message"], "type": echoed,
        "time": int(clock.now * 1000)}}]
    assert ws.received[0]["payload"]["message"]
    assert other.received == [] and ws.open


@pytest.mark.parametrize("kind", [m.MESSAGE, m.RENAME])
def test_v2_message_or_rename_before_join_is_not_joined(room, kind):
    ws = connect(room, 2)
    send(room, ws, kind, message="hi", username="x")
    assert errors(ws) == [m.NOT_JOINED]


def test_v2_join_name_too_long_is_name_invalid():
    room = make_room(max_username_length=4)
    ws = connect(room, 2, "Beejj")
    assert errors(ws) == [m.NAME_INVALID] and room.users == []


def test_v2_binary_message_is_binary_unsupported(room):
    ws = connect(room, 2, "a")
    ws.clear()
    room.receive_binary(ws, b"\x00\x01")
    assert errors(ws) == [m.BINARY_UNSUPPORTED] and ws.received[0]["payload"]["type"] is None


@pytest.mark.parametrize("text", [
    "not json", "[]", '{"type": 1, "payload": {}}', '{"type": "chat-message", "payload": "hi"}',
    '{"type": "chat-rename", "payload": {"username": "x"}}',      # v2 only
    '{"type": "chat-message", "payload": {"message": 5}}',
    '{"type": "chat-message", "payload": {"username": "a", "message": "   "}}',
    '{"type": "chat-message", "payload": {"username": "a", "message": "%s"}}' % ("x" * 101),
    '{"type": "chat-join", "payload": {"username": "\\u0000"}}',
])
def test_v1_bad_input_is_dropped_silently_and_the_connection_stays(text):
    room = make_room(max_message_length=100)
    other = connect(room, 2, "other")
    v1 = connect(room, 1, "a")
    other.clear(), v1.clear()
    room.receive(v1, text)
    assert v1.received == [] and other.received == []
    assert v1.open and v1.closed is None and room.users == ["other", "a"]


def test_v1_binary_message_is_ignored(room):
    v1 = connect(room, 1, "a")
    v1.clear()
    room.receive_binary(v1, b"\xff")
    assert v1.received == [] and v1.open


def test_v1_message_before_join_without_a_username_is_dropped(room):
    v1 = connect(room, 1)
    send(room, v1, m.MESSAGE, message="hello")
    assert v1.received == [] and room.users == []


# --- rate limit ----------------------------------------------------------------------------------

def test_burst_messages_at_once_are_allowed_and_the_next_is_rate_limited(clock):
    room = make_room(clock, rate=5, burst=3)
    ws = connect(room, 2)               # the join takes a token too
    for i in range(3):
        send(room, ws, m.MESSAGE if i else m.JOIN, username="a", message=str(i))
    ws.clear()
    send(room, ws, m.MESSAGE, message="one too many")
    assert errors(ws) == [m.RATE_LIMITED]
    assert ws.received[0]["payload"]["type"] == m.MESSAGE


def test_the_bucket_refills_with_the_injected_clock(clock):
    room = make_room(clock, rate=5, burst=1)
    ws = connect(room, 2, "a")
    send(room, ws, m.MESSAGE, message="too soon")
    assert errors(ws) == [m.RATE_LIMITED]
    clock.now += 0.2                    # one token at 5 a second
    ws.clear()
    send(room, ws, m.MESSAGE, message="now")
    assert ws.types() == [m.MESSAGE]


def test_ten_messages_a_second_are_always_allowed_with_the_defaults(clock):
    room = make_room(clock)
    ws = connect(room, 2, "a")
    for _ in range(600):                # a minute of it
        clock.now += 0.1
        send(room, ws, m.MESSAGE, message="steady")
    assert errors(ws) == []


def test_a_paste_of_ten_lines_at_once_is_allowed_with_the_defaults(clock):
    room = make_room(clock)
    ws = connect(room, 2, "a")
    for i in range(10):
        send(room, ws, m.MESSAGE, message=f"line {i}")
    assert errors(ws) == []


def test_v1_over_the_rate_limit_is_dropped_silently(clock):
    room = make_room(clock, rate=1, burst=1)
    v1 = connect(room, 1, "a")
    v1.clear()
    send(room, v1, m.MESSAGE, message="dropped")
    assert v1.received == [] and v1.open


def test_bad_input_counts_against_the_rate_limit(clock):
    room = make_room(clock, rate=1, burst=2)
    ws = connect(room, 2, "a")
    room.receive(ws, "junk")
    room.receive(ws, "junk")
    assert errors(ws) == [m.BAD_JSON, m.RATE_LIMITED]


@pytest.mark.parametrize("text, echoed", [
    ("not json", None),
    ("[1, 2]", None),
    ('{"type": 7, "payload": {}}', None),
    ('{"type": "chat-message", "payload": "hi"}', m.MESSAGE),
    ('{"type": "chat-dance", "payload": {}}', "chat-dance"),
])
def test_the_rate_limit_is_checked_first_bad_json_included(clock, text, echoed):
    """docs/protocol.md: every message costs a token, so a flood of garbage is
    limited like any other; with an empty bucket the refusal is rate-limited,
    echoing the type when the message had a string one."""
    room = make_room(clock, rate=1, burst=1)
    ws = connect(room, 2, "a")          # the join took the only token
    ws.clear()
    room.receive(ws, text)
    assert ws.received == [{"type": m.ERROR, "payload": {
        "code": m.RATE_LIMITED, "message": m.ERROR_TEXT[m.RATE_LIMITED], "type": echoed,
        "time": int(clock.now * 1000)}}]


def test_a_flood_of_bad_json_gets_the_flooder_kicked(clock):
    room = make_room(clock, rate=1, burst=1, flood_kick=5)
    other, flooder = connect(room, 2, "other"), connect(room, 1, "flooder")
    other.clear()
    for _ in range(10):
        room.receive(flooder, "junk")
    assert flooder.closed == (1008, "too many messages")
    assert other.types() == [m.LEAVE]


def test_flooding_past_the_limit_gets_a_kick_and_one_leave(clock):
    room = make_room(clock, rate=1, burst=1, flood_kick=5)
    other = connect(room, 2, "other")
    flooder = connect(room, 2, "flooder")
    other.clear()
    for _ in range(10):
        send(room, flooder, m.MESSAGE, message="spam")
    assert flooder.closed == (1008, "too many messages")
    assert errors(flooder) == [m.RATE_LIMITED] * 4
    assert other.types() == [m.LEAVE]


def test_no_rate_limit_when_rate_is_zero(clock):
    room = make_room(clock, rate=0)
    ws = connect(room, 2, "a")
    for _ in range(1000):
        send(room, ws, m.MESSAGE, message="x")
    assert errors(ws) == []


@pytest.mark.parametrize("bad", [dict(max_message_length=0), dict(rate=-1), dict(rate=1, burst=0),
                                 dict(flood_kick=-1)])
def test_nonsense_limits_are_refused(bad):
    with pytest.raises(ValueError):
        Limits(**bad)


def test_the_rate_limit_is_checked_before_the_type(clock):
    room = make_room(clock, rate=1, burst=1)
    ws = connect(room, 2, "a")
    send(room, ws, "chat-dance")
    assert errors(ws) == [m.RATE_LIMITED]


def test_v1_second_join_with_a_taken_name_changes_nothing(room):
    connect(room, 2, "Beej")
    v1 = connect(room, 1, "other")
    v1.clear()
    send(room, v1, m.JOIN, username="beej")
    assert v1.received == [] and room.users == ["Beej", "other"]


def test_history_size_is_a_limit():
    room = make_room(rate=0, history_size=3)
    a = connect(room, 2, "a")
    for i in range(5):
        send(room, a, m.MESSAGE, message=str(i))
    assert [h["message"] for h in room.history] == ["2", "3", "4"]
    assert [h["message"] for h in connect(room, 2, "b").received[0]["payload"]["history"]] == [
        "2", "3", "4"]


def test_history_keeps_fewer_messages_when_they_would_pass_history_bytes():
    room = make_room(rate=0, history_bytes=1000)
    a = connect(room, 2, "a")
    for i in range(10):
        send(room, a, m.MESSAGE, message=f"{i}" + "é" * 150)   # about 360 bytes of JSON each
    assert [h["message"][0] for h in room.history] == ["8", "9"]


def test_a_message_larger_than_history_bytes_is_not_kept():
    room = make_room(rate=0, history_bytes=100)
    a = connect(room, 2, "a")
    send(room, a, m.MESSAGE, message="x" * 200)
    assert room.history == []


def test_v1_join_is_dropped_when_the_limit_leaves_no_room_for_a_variant():
    room = make_room(max_username_length=4)
    connect(room, 1, "Beej")
    late = connect(room, 1, "Beej")
    assert late.received == [] and room.users == ["Beej"]
