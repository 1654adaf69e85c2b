"""Several chat servers, one room: `python -m chat --backplane redis://...` and
`--workers`, against a real redis-server (tests/redis_server.py) on a free
127.0.0.1 port, with the servers as real processes (tests/chat_cluster.py).

CONTRACT.md, "More than one process, more than one host". Every wait is
bounded and generous; nothing asserts tight timings.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from rawws.errors import ConnectionClosed
from rawws.resp import NEED_DATA, RespParser, encode_command

try:
    from tests.chat_cluster import ROOT, ChatClient, ChatProcess, health, wait_until
    from tests.redis_server import free_port, redis_server  # noqa: F401 (a fixture)
except ImportError:                      # tests/ run as a rootdir, not a package
    from chat_cluster import ROOT, ChatClient, ChatProcess, health, wait_until
    from redis_server import free_port, redis_server  # noqa: F401

TTL = "1.5"   # --backplane-ttl for the tests that kill a server: leaves within seconds


@pytest.fixture
def cluster():
    """Factory: cluster(*args) -> a running ChatProcess; all stopped after the test."""
    started: list[ChatProcess] = []
    clients: list[ChatClient] = []

    def start(*args: str, **kwargs) -> ChatProcess:
        process = ChatProcess(*args, **kwargs)
        started.append(process)
        return process

    start.clients = clients
    yield start
    for client in clients:
        client.close()
    for process in started:
        process.stop()


def client(cluster, port: int, version: int, name: str | None = None) -> ChatClient:
    chat = ChatClient(port, version, name)
    cluster.clients.append(chat)
    return chat


def redis_call(port: int, *command) -> object:
    """One command to the test's Redis over a plain blocking socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(encode_command(*command))
        parser = RespParser()
        while (reply := parser.next_reply()) is NEED_DATA:
            parser.feed(sock.recv(65536))
        return reply


def joined(name: str):
    return lambda msg: msg["type"] == "chat-join" and msg["payload"]["username"] == name


def left(name: str):
    return lambda msg: msg["type"] == "chat-leave" and msg["payload"]["username"] == name


# ---- refused at start -------------------------------------------------------------

def test_workers_above_one_without_a_backplane_are_refused():
    result = subprocess.run([sys.executable, "-m", "chat", "--port", "0", "--workers", "2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "--backplane" in result.stderr and "Serving on" not in result.stdout


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_unreachable_backplane_is_one_line_and_a_non_zero_exit(workers):
    port = free_port()   # nothing listens there
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "chat", "--port", "0", "--backplane",
                             f"redis://127.0.0.1:{port}/0", "--workers", workers],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert time.monotonic() - started < 10
    assert "Serving on" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "backplane" in lines[0] and str(port) in lines[0], lines


def test_healthz_without_a_backplane_says_off(cluster):
    alone = cluster()
    user = client(cluster, alone.port, 2, "Ada")
    client(cluster, alone.port, 1)
    status = health(alone.port)
    assert status["httpStatus"] == 200
    assert (status["backplane"], status["connections"], status["users"],
            status["roomUsers"]) == ("off", 2, 1, 1)
    user.close()


# ---- one room across servers and workers ----------------------------------------------

def test_two_servers_and_two_workers_are_one_room(redis_server, cluster):
    redis = redis_server()
    one = cluster("--backplane", redis.url)
    two = cluster("--backplane", redis.url)
    workers = cluster("--backplane", redis.url, "--workers", "2")
    assert len(workers.lines("Serving on")) == 1

    # v1 and v2 users on each server.
    ada = client(cluster, one.port, 2, "Ada")
    bob = client(cluster, one.port, 1, "Bob")
    cy = client(cluster, two.port, 2, "Cy")
    dee = client(cluster, two.port, 1, "Dee")
    eve = client(cluster, workers.port, 2, "Eve")
    fay = client(cluster, workers.port, 1, "Fay")
    everyone = [ada, bob, cy, dee, eve, fay]
    for user in everyone:
        user.wait_for(joined("Fay"))
    # Eve's welcome lists everyone before her, whichever server they are on.
    welcome = eve.received[0]["payload"]
    assert welcome["users"] == ["Ada", "Bob", "Cy", "Dee", "Eve"]

    # Names are the room's: taken on another server, case and width aside.
    taken = client(cluster, two.port, 2)
    taken.send("chat-join", username="ADA")
    error = taken.wait_for(lambda msg: msg["type"] == "chat-error")
    assert error["payload"]["code"] == "name-taken"
    variant = client(cluster, workers.port, 1, "Bob")   # v1 gets a free variant
    assert variant.name == "Bob (2)"
    # Two servers asked for one name at once: it goes to one of them.
    first, second = client(cluster, one.port, 2), client(cluster, two.port, 2)
    first.send("chat-join", username="Zed")
    second.send("chat-join", username="Zed")
    answers = [c.wait_for(lambda msg: msg["type"] in ("chat-welcome", "chat-error"))["type"]
               for c in (first, second)]
    assert sorted(answers) == ["chat-error", "chat-welcome"], answers

    # Everyone talks at once; every receiver hears every message, in one order.
    texts = []
    for round_ in range(3):
        for user in everyone:
            text = f"{user.name} says {round_}"
            texts.append(text)
            user.say(text)
    for user in everyone:
        user.wait_text(texts[-1])
        for text in texts:
            user.wait_text(text)
    orders = {user.name: [t for t in user.texts() if t in texts] for user in everyone}
    reference = orders["Ada"]
    assert sorted(reference) == sorted(texts)
    for name, order in orders.items():
        assert order == reference, f"{name} heard another order"
    # v2 ids: unique, growing in that order.
    ids = [msg["payload"]["id"] for msg in ada.received if msg["type"] == "chat-message"]
    assert ids == sorted(set(ids)) and len(ids) == len(texts)
    for user in (cy, eve):
        assert [msg["payload"]["id"] for msg in user.received
                if msg["type"] == "chat-message"] == ids

    # A late joiner anywhere gets the room's history and users.
    late = client(cluster, two.port, 2, "Late")
    history = late.received[0]["payload"]["history"]
    assert [item["message"] for item in history] == reference
    assert [item["id"] for item in history] == ids
    assert set(late.received[0]["payload"]["users"]) >= {"Ada", "Bob", "Cy", "Dee", "Eve", "Fay",
                                                         "Bob (2)", "Zed", "Late"}
    # So does a joiner on a server started after all that (it read the room from Redis).
    newer = cluster("--backplane", redis.url)
    newest = client(cluster, newer.port, 2, "Newest")
    assert newest.received[0]["payload"]["history"] == history
    assert newest.received[0]["payload"]["users"] == late.received[0]["payload"]["users"] + [
        "Newest"]

    # A leave on one server is heard on the others; the name is free again.
    dee.close()
    for user in (ada, bob, eve, fay):
        user.wait_for(left("Dee"))
    assert client(cluster, one.port, 2, "Dee").name == "Dee"

    status = health(one.port)
    assert status["httpStatus"] == 200 and status["backplane"] == "up"
    zed_here = answers[0] == "chat-welcome"
    assert status["users"] == 3 + zed_here   # Ada, Bob, the new Dee, and Zed if it won here
    # Ada, Bob, Cy, Eve, Fay, Bob (2), Zed, Late, Newest, Dee again: everyone, every server.
    assert status["roomUsers"] == 10


def test_sigkill_of_a_server_brings_its_users_leaves_to_the_others(redis_server, cluster):
    redis = redis_server()
    survivor = cluster("--backplane", redis.url, "--backplane-ttl", TTL)
    doomed = cluster("--backplane", redis.url, "--backplane-ttl", TTL)
    watcher = client(cluster, survivor.port, 2, "Watcher")
    v1_watcher = client(cluster, survivor.port, 1, "Old")
    client(cluster, doomed.port, 2, "Gone")
    client(cluster, doomed.port, 1, "Gone Too")
    watcher.wait_for(joined("Gone Too"))

    doomed.stop(signal.SIGKILL)
    for user in (watcher, v1_watcher):
        user.wait_for(left("Gone"), timeout=30)
        user.wait_for(left("Gone Too"), timeout=30)
    # Their names are free again, and the room goes on.
    again = client(cluster, survivor.port, 2, "Gone")
    again.say("back")
    watcher.wait_text("back")


def test_sigkill_of_a_worker_restarts_it_and_the_room_goes_on(redis_server, cluster):
    redis = redis_server()
    workers = cluster("--backplane", redis.url, "--workers", "2", "--backplane-ttl", TTL)
    outside = cluster("--backplane", redis.url, "--backplane-ttl", TTL)
    watcher = client(cluster, outside.port, 2, "Watcher")
    pids = wait_until(lambda: len(s := {health(workers.port)["server"] for _ in range(20)}) == 2
                      and s, what="both workers answering")
    victim_id = sorted(pids)[0]
    victim_pid = int(victim_id.split(":")[-2])
    # Users on both workers (the kernel spreads connections: join until one
    # lands on the victim).
    users = [client(cluster, workers.port, 2, f"W{i}") for i in range(12)]
    watcher.wait_for(joined(users[-1].name))

    os.kill(victim_pid, signal.SIGKILL)
    wait_until(lambda: workers.lines("restarting"), what="the supervisor's restart line")
    # The victim's users leave for everyone else; the restarted worker serves.
    wait_until(lambda: len({health(workers.port)["server"] for _ in range(20)} - pids) == 1,
               timeout=20, what="the new worker answering")
    gone = [user for user in users if _closed(user)]
    assert gone, "no user was on the killed worker"
    for user in gone:
        watcher.wait_for(left(user.name), timeout=30)
    newcomer = client(cluster, workers.port, 1, "Newcomer")
    newcomer.say("still here")
    watcher.wait_text("still here")


def test_sigterm_to_the_supervisor_closes_every_websocket_with_1001_and_exits_0(redis_server,
                                                                                cluster):
    redis = redis_server()
    workers = cluster("--backplane", redis.url, "--workers", "2", "--close-timeout", "2")
    outside = cluster("--backplane", redis.url)
    watcher = client(cluster, outside.port, 2, "Watcher")
    users = [client(cluster, workers.port, version, f"U{i}")
             for i, version in enumerate((1, 2, 1, 2, 2, 1))]
    users[0].say("before the end")
    for user in users + [watcher]:
        user.wait_text("before the end")
    codes: list[int | None] = []

    def read_until_closed(user: ChatClient) -> None:
        try:
            while True:
                user.ws.recv(timeout=20)
        except ConnectionClosed as closed:
            codes.append(closed.code)
        except Exception:
            codes.append(None)

    readers = [threading.Thread(target=read_until_closed, args=(user,)) for user in users]
    for reader in readers:
        reader.start()
    assert workers.stop() == 0, workers.log
    for reader in readers:
        reader.join(30)
    assert codes == [1001] * len(users), codes
    assert workers.lines("all workers stopped")
    # The other servers hear that its users left.
    for user in users:
        watcher.wait_for(left(user.name), timeout=30)


def _closed(user: ChatClient) -> bool:
    """Whether its server went away: read what is waiting until the end, or a pause."""
    try:
        while True:
            user.ws.recv(timeout=0.5)
    except TimeoutError:
        return False
    except Exception:
        return True


# ---- Redis away -----------------------------------------------------------------------------

def test_redis_restarting_local_chat_goes_on_and_then_reaches_every_server(redis_server, cluster):
    redis = redis_server()
    one = cluster("--backplane", redis.url)
    two = cluster("--backplane", redis.url, "--healthz-fail-when-down")
    ada = client(cluster, one.port, 2, "Ada")
    bob = client(cluster, one.port, 1, "Bob")
    cy = client(cluster, two.port, 2, "Cy")
    ada.wait_for(joined("Cy"))

    redis.stop()
    wait_until(lambda: health(one.port)["backplane"] == "down", what="server one seeing Redis down")
    wait_until(lambda: health(two.port)["backplane"] == "down", what="server two seeing Redis down")
    # Off by default, on for server two: 503 while the backplane is down.
    assert health(one.port)["httpStatus"] == 200
    assert health(two.port)["httpStatus"] == 503
    ada.say("while redis is away")
    bob.wait_text("while redis is away")          # local chat goes on
    ada.wait_text("while redis is away")
    cy.say("alone on two")
    cy.wait_text("alone on two")

    redis.start()                                  # the same port, empty
    for server in (one, two):
        wait_until(lambda: health(server.port)["backplane"] == "up", timeout=30,
                   what="the backplane back up")
    wait_until(lambda: len(one.lines("backplane: Redis at")) >= 2, what="the back line logged")
    assert len(one.lines("backplane: Redis at")) == 2, one.lines("Redis at")   # down, back
    for text, sender in (("after one", ada), ("after two", cy), ("after v1", bob)):
        sender.say(text)
        for user in (ada, bob, cy):
            user.wait_text(text)
    # The users are still one room: a name held on one is refused on the other.
    taken = client(cluster, two.port, 2)
    taken.send("chat-join", username="ada")
    assert taken.wait_for(lambda msg: msg["type"] in ("chat-welcome", "chat-error"))[
        "payload"].get("code") == "name-taken"


def test_a_server_that_dies_while_redis_is_away_still_loses_its_users(redis_server, cluster):
    redis = redis_server()
    survivor = cluster("--backplane", redis.url, "--backplane-ttl", TTL)
    doomed = cluster("--backplane", redis.url, "--backplane-ttl", TTL)
    watcher = client(cluster, survivor.port, 2, "Watcher")
    client(cluster, doomed.port, 1, "Ghost")
    watcher.wait_for(joined("Ghost"))

    redis.stop()
    doomed.stop(signal.SIGKILL)
    redis.start()   # empty: no heartbeat, no name, nothing says the ghost left
    watcher.wait_for(left("Ghost"), timeout=30)
    assert client(cluster, survivor.port, 2, "Ghost").name == "Ghost"


def test_a_server_reconnecting_misses_nothing_redis_accepted(redis_server, cluster):
    redis = redis_server()
    one = cluster("--backplane", redis.url)
    two = cluster("--backplane", redis.url)
    ada = client(cluster, one.port, 2, "Ada")
    cy = client(cluster, two.port, 2, "Cy")
    ada.wait_for(joined("Cy"))
    two_id = health(two.port)["server"]

    # Cut server two's connections to Redis, and have server one's user
    # talk while two reconnects: Redis accepts these messages meanwhile.
    clients = redis_call(redis.port, "CLIENT", "LIST").decode()
    ids = [line.split()[0].split("=")[1] for line in clients.splitlines()
           if f"name=rawws-chat:{two_id}:" in line]
    assert len(ids) == 2, clients
    texts = [f"during {i}" for i in range(20)]
    sender = threading.Thread(target=lambda: [ada.say(text) for text in texts])
    for client_id in ids:
        redis_call(redis.port, "CLIENT", "KILL", "ID", client_id)
    sender.start()
    sender.join()
    for text in texts:
        cy.wait_text(text)
    assert [t for t in cy.texts() if t.startswith("during")] == texts
    ada.wait_text(texts[-1])
    assert [t for t in ada.texts() if t.startswith("during")] == texts


def test_a_server_that_was_away_past_the_streams_cap_reads_the_room_again(redis_server, cluster):
    redis = redis_server()
    one = cluster("--backplane", redis.url)
    two = cluster("--backplane", redis.url)
    ada = client(cluster, one.port, 2, "Ada")
    cy = client(cluster, two.port, 2, "Cy")
    cy.wait_for(joined("Cy"))
    # Server two has read the stream (a message from server one reached Cy
    # through it), so there is a last event for it to miss.
    ada.say("before the gap")
    cy.wait_text("before the gap")
    two_id = health(two.port)["server"]
    ids = [line.split()[0].split("=")[1] for line in
           redis_call(redis.port, "CLIENT", "LIST").decode().splitlines()
           if f"name=rawws-chat:{two_id}:" in line]
    # In one pipeline, before server two is back: cut it off, let a user of
    # a third (made-up, alive) server join, and trim the stream to nothing,
    # as a cap does to a server away too long.
    prefix = "rawws:chat:main:"
    commands = [("CLIENT", "KILL", "ID", client_id) for client_id in ids] + [
        ("SET", prefix + "alive:elsewhere", "1", "EX", "60"),
        ("SADD", prefix + "servers", "elsewhere"),
        ("HSET", prefix + "names", "phantom", "elsewhere\t1\t99\tPhantom"),
        ("HSET", prefix + "held:elsewhere", "1", "phantom"),
        ("XADD", prefix + "stream", "*", "k", "join", "s", "elsewhere", "m", "1", "t", "1",
         "n", "Phantom"),
        ("XTRIM", prefix + "stream", "MAXLEN", "0"),
    ]
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as sock:
        sock.sendall(b"".join(encode_command(*command) for command in commands))
        parser, replies = RespParser(), 0
        while replies < len(commands):
            parser.feed(sock.recv(65536))
            while parser.next_reply() is not NEED_DATA:
                replies += 1
    # Server two missed the join, sees the gap, and reads the room's users again.
    cy.wait_for(joined("Phantom"))
    # The log is read by a thread of the test: wait for the line, don't race it.
    wait_until(lambda: two.lines("no longer holds the last event"), what="the gap logged")
