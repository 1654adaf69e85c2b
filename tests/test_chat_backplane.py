"""chat.room with a backplane that answers later, as Redis does: no sockets.

`LaterBackplane` queues every request and runs it (through a
LocalBackplane) only when the test says `answer()`, so the tests see what a
member may do while its join or rename is on its way, and that events from
other servers are applied like its own.
"""
import json

from chat import messages as m
from chat.backplane import JOIN, LEAVE, SAY, SYNC, Event, LocalBackplane
from chat.room import Limits, Room

try:
    from tests.test_chat_room import Clock, FakeWS, errors, send
except ImportError:
    from test_chat_room import Clock, FakeWS, errors, send


class LaterBackplane(LocalBackplane):
    """Every request waits in `queue` until answer()."""

    def __init__(self) -> None:
        super().__init__("here")
        self.queue = []

    def join(self, *args):
        self.queue.append((super().join, args))

    def say(self, *args):
        self.queue.append((super().say, args))

    def rename(self, *args):
        self.queue.append((super().rename, args))

    def leave(self, *args):
        self.queue.append((super().leave, args))

    def answer(self) -> None:
        while self.queue:
            request, args = self.queue.pop(0)
            request(*args)


def make():
    clock = Clock()
    backplane = LaterBackplane()
    return Room(Limits(), clock=clock, monotonic=clock, backplane=backplane), backplane


def connect(room, version):
    ws = FakeWS()
    room.connect(ws, version, label="fake")
    return ws


def test_a_join_is_answered_when_the_backplane_answers():
    room, backplane = make()
    ada = connect(room, 2)
    send(room, ada, m.JOIN, username="Ada")
    assert ada.received == [] and room.users == []
    backplane.answer()
    assert ada.types() == [m.WELCOME, m.JOIN]
    assert room.users == ["Ada"]


def test_what_a_member_sends_while_its_join_waits_follows_it_in_order():
    room, backplane = make()
    ada = connect(room, 2)
    send(room, ada, m.JOIN, username="Ada")
    send(room, ada, m.MESSAGE, message="first")
    send(room, ada, m.RENAME, username="Ada L")
    send(room, ada, m.MESSAGE, message="second")
    backplane.answer()
    assert ada.types() == [m.WELCOME, m.JOIN, m.MESSAGE, m.RENAME, m.MESSAGE]
    messages = [msg["payload"] for msg in ada.received if msg["type"] == m.MESSAGE]
    assert [(p["username"], p["message"]) for p in messages] == [("Ada", "first"),
                                                                 ("Ada L", "second")]


def test_a_v1_message_before_any_join_joins_then_says():
    room, backplane = make()
    old = connect(room, 1)
    send(room, old, m.MESSAGE, username="Old", message="hello")
    backplane.answer()
    assert [msg["type"] for msg in old.received] == [m.JOIN, m.MESSAGE]
    assert old.last()["payload"] == {"username": "Old", "message": "hello"}


def test_a_name_taken_meanwhile_elsewhere_is_refused_when_the_answer_comes():
    room, backplane = make()
    ada = connect(room, 2)
    send(room, ada, m.JOIN, username="Ada")
    # Another server's user took the name first: its event is applied first.
    room.apply(Event(JOIN, "there", 7, 1, name="ada"))
    backplane.answer()
    assert errors(ada) == [m.NAME_TAKEN]
    assert room.users == ["ada"]


def test_a_member_gone_before_its_join_came_back_leaves_after_it():
    room, backplane = make()
    watcher = connect(room, 2)
    send(room, watcher, m.JOIN, username="Watcher")
    backplane.answer()
    ada = connect(room, 2)
    send(room, ada, m.JOIN, username="Ada")
    room.disconnect(ada)
    backplane.answer()
    assert [msg["type"] for msg in watcher.received[2:]] == [m.JOIN, m.LEAVE]
    assert room.users == ["Watcher"]
    assert ada.received == []


def test_events_of_other_servers_are_broadcast_like_our_own():
    room, backplane = make()
    ada = connect(room, 2)
    send(room, ada, m.JOIN, username="Ada")
    backplane.answer()
    room.apply(Event(JOIN, "there", 1, 5, name="Bob"))
    room.apply(Event(SAY, "there", 1, 6, id=41, fields=m.message_fields("Bob", "hi")))
    room.apply(Event(LEAVE, "there", 1, 7))
    assert [msg["type"] for msg in ada.received[2:]] == [m.JOIN, m.MESSAGE, m.LEAVE]
    assert ada.received[3]["payload"] == {"id": 41, "username": "Bob", "message": "hi", "time": 6}
    assert room.last_id == 41
    send(room, ada, m.MESSAGE, message="next")
    backplane.answer()
    assert ada.last()["payload"]["id"] == 42   # locally decided ids go on past the room's


def test_a_sync_event_makes_another_servers_users_what_it_says():
    room, backplane = make()
    ada = connect(room, 2)
    send(room, ada, m.JOIN, username="Ada")
    backplane.answer()
    room.seed([("there", 1, "Bob"), ("there", 2, "Cy")], [], 0)
    room.apply(Event(SYNC, "there", 0, 9, users=((2, "Cyd"), (3, "Dee"))))
    kinds = [(msg["type"], json.dumps(msg["payload"], sort_keys=True)) for msg in ada.received[2:]]
    assert [kind for kind, _ in kinds] == [m.LEAVE, m.RENAME, m.JOIN]
    assert room.users == ["Ada", "Cyd", "Dee"]


def test_drop_server_says_every_one_of_its_users_left():
    room, backplane = make()
    room.seed([("there", 1, "Bob"), ("elsewhere", 1, "Cy")], [], 0)
    ada = connect(room, 1)
    send(room, ada, m.JOIN, username="Ada")
    backplane.answer()
    room.drop_server("there")
    assert ada.last() == {"type": m.LEAVE, "payload": {"username": "Bob"}}
    assert room.users == ["Cy", "Ada"]
