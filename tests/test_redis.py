"""rawws.net.redis against a real redis-server (tests/redis_server.py starts it).

Every test drives the event loop in its own thread until what it waits for
has happened, never longer than a few seconds, and talks to 127.0.0.1 only.
"""
from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from rawws.errors import RedisConnectionError, ReplyError
from rawws.net.loop import EventLoop
from rawws.net.redis import (RedisAddress, RedisConnection, Reconnector, ReplyFuture,
                             parse_url)
from tests.redis_server import free_port, redis_server  # noqa: F401 - the fixture

WAIT = 5.0


@pytest.fixture
def loop():
    loop = EventLoop()
    yield loop
    loop.close()


def run_until(loop: EventLoop, condition, timeout: float = WAIT) -> None:
    """Run the loop until condition() holds; fail the test past `timeout` seconds."""
    deadline = time.monotonic() + timeout

    def check() -> None:
        if condition() or time.monotonic() > deadline:
            loop.stop()
        else:
            loop.call_later(0.005, check)

    loop.call_later(0, check)
    loop.run_forever()
    assert condition(), f"not done within {timeout} s"


def pause(loop: EventLoop, seconds: float) -> None:
    """Run the loop for `seconds`."""
    loop.call_later(seconds, loop.stop)
    loop.run_forever()


def wait(loop: EventLoop, future: ReplyFuture, timeout: float = WAIT):
    """The future's result (or its error, raised), once the loop has settled it."""
    run_until(loop, future.done, timeout)
    return future.result()


def connect(loop: EventLoop, url: str, **options) -> RedisConnection:
    connection = RedisConnection(loop, url, **options)
    assert wait(loop, connection.connect(timeout=WAIT)) is connection
    assert connection.is_open
    return connection


# ---- URLs ----------------------------------------------------------------------

@pytest.mark.parametrize(("url", "address"), [
    ("redis://127.0.0.1:6380/2", RedisAddress("127.0.0.1", 6380, 2)),
    ("redis://redis.example", RedisAddress("redis.example", 6379, 0)),
    ("redis://localhost:7000", RedisAddress("localhost", 7000, 0)),
    ("redis://localhost:7000/", RedisAddress("localhost", 7000, 0)),
    ("redis://[::1]:6379/15", RedisAddress("::1", 6379, 15)),
])
def test_parse_url(url, address):
    assert parse_url(url) == address


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:6379", "rediss://127.0.0.1", "127.0.0.1:6379", "redis://", "redis://:6379",
    "redis://host:port", "redis://host:70000", "redis://host/db", "redis://host/-1",
    "redis://host/1/2", "redis://user:secret@host", "redis://host?db=1", "redis://host/\u0663",
])
def test_parse_url_says_what_is_wrong(url):
    with pytest.raises(ValueError, match="redis|port|database|credentials|host|query"):
        parse_url(url)


def test_an_address_prints_as_its_url():
    assert str(parse_url("redis://[::1]:6380/3")) == "redis://[::1]:6380/3"
    assert str(parse_url("redis://localhost")) == "redis://localhost:6379/0"


# ---- futures -------------------------------------------------------------------

def test_a_reply_future_settles_once_and_calls_back_even_when_late(caplog):
    future = ReplyFuture()
    seen = []
    future.add_done_callback(lambda f: 1 / 0)          # logged, not raised
    future.add_done_callback(lambda f: seen.append(f.result()))
    with pytest.raises(RuntimeError):
        future.result()
    future.set_result(b"value")
    future.set_error(ReplyError("ERR too late"))        # settled already: no effect
    future.add_done_callback(lambda f: seen.append("late"))
    assert seen == [b"value", "late"] and future.error() is None
    assert "unhandled error in Redis callback" in caplog.text
    failed = ReplyFuture()
    failed.set_error(ReplyError("WRONGTYPE nope"))
    with pytest.raises(ReplyError, match="WRONGTYPE"):
        failed.result()


# ---- commands and replies --------------------------------------------------------

def test_set_get_and_each_type_of_reply(loop, redis_server):
    redis = connect(loop, redis_server().url)
    assert wait(loop, redis.command("SET", "greeting", "h\u00e9llo")) == "OK"
    assert wait(loop, redis.command("GET", "greeting")) == "h\u00e9llo".encode()
    assert wait(loop, redis.command("GET", "missing")) is None
    assert wait(loop, redis.command("INCRBY", "n", -5)) == -5
    assert wait(loop, redis.command("RPUSH", "list", b"\x00\r\n", "b")) == 2
    assert wait(loop, redis.command("LRANGE", "list", 0, -1)) == [b"\x00\r\n", b"b"]
    assert wait(loop, redis.command(b"PING")) == "PONG"
    redis.close()


def test_a_thousand_commands_in_one_burst_are_all_in_flight_and_answered_in_order(
        loop, redis_server):
    redis = connect(loop, redis_server().url)
    futures = []
    for index in range(500):
        futures.append(redis.command("SET", f"key:{index}", f"value {index}"))
        futures.append(redis.command("INCR", "counter"))
    # Nothing has been sent yet: the burst goes out together on the loop's next turn.
    assert redis.pending == 1000 and redis.buffered > 30_000
    run_until(loop, lambda: all(future.done() for future in futures))
    assert [future.result() for future in futures[0::2]] == ["OK"] * 500
    assert [future.result() for future in futures[1::2]] == list(range(1, 501))
    gets = [redis.command("GET", f"key:{index}") for index in range(500)]
    run_until(loop, lambda: gets[-1].done())
    assert [future.result() for future in gets] == [f"value {i}".encode() for i in range(500)]
    assert redis.pending == 0 and redis.buffered == 0
    redis.close()


def test_error_replies_fail_their_own_command_and_the_connection_carries_on(loop, redis_server):
    redis = connect(loop, redis_server().url)
    replies = [redis.command("SET", "text", "not a number"),
               redis.command("INCR", "text"),
               redis.command("LPUSH", "text", "x"),
               redis.command("NOSUCHCOMMAND", "x"),
               redis.command("GET", "text")]
    run_until(loop, lambda: replies[-1].done())
    assert replies[0].result() == "OK"
    assert isinstance(replies[1].error(), ReplyError)
    assert replies[1].error().code == "ERR" and "not an integer" in str(replies[1].error())
    assert replies[2].error().code == "WRONGTYPE"
    with pytest.raises(ReplyError, match="unknown command"):
        replies[3].result()
    assert replies[4].result() == b"not a number"
    assert redis.is_open
    redis.close()


def test_the_database_in_the_url_is_selected_on_connect(loop, redis_server):
    server = redis_server()
    five = connect(loop, server.url[:-1] + "5")
    zero = connect(loop, server.url)
    assert wait(loop, five.command("SET", "where", "five")) == "OK"
    assert wait(loop, zero.command("GET", "where")) is None
    assert wait(loop, zero.command("SELECT", 5)) == "OK"
    assert wait(loop, zero.command("GET", "where")) == b"five"
    missing = RedisConnection(loop, server.url[:-1] + "99")
    with pytest.raises(RedisConnectionError, match="SELECT 99 refused"):
        wait(loop, missing.connect(timeout=WAIT))
    assert missing.state == "closed"


def test_commands_queued_while_connecting_follow_the_select(loop, redis_server):
    redis = RedisConnection(loop, redis_server().url)
    ready = redis.connect(timeout=WAIT)
    early = redis.command("PING")
    assert wait(loop, early) == "PONG"
    assert ready.result() is redis


def test_a_host_name_is_resolved_without_blocking_the_loop(loop, redis_server):
    # localhost may give ::1 first; redis-server listens on 127.0.0.1 only,
    # so this also checks that the next address is tried.
    server = redis_server()
    redis = connect(loop, f"redis://localhost:{server.port}/0")
    assert wait(loop, redis.command("PING")) == "PONG"
    redis.close()


def test_a_name_that_does_not_resolve_fails_the_connect(loop, monkeypatch):
    # No DNS traffic: getaddrinfo itself is made to fail, as it does for an unknown name.
    def unknown(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    redis = RedisConnection(loop, "redis://redis.invalid:6379/0")
    with pytest.raises(RedisConnectionError, match="cannot resolve redis.invalid: .*not known"):
        wait(loop, redis.connect(timeout=WAIT))


# ---- blocking reads on a connection of their own -----------------------------------

def wait_for_blocked_clients(loop: EventLoop, redis: RedisConnection, count: int) -> None:
    """Until the server counts `count` clients blocked (in XREAD BLOCK, BLPOP...)."""
    deadline = time.monotonic() + WAIT
    while True:
        info = wait(loop, redis.command("INFO", "clients")).decode()
        if int(info.split("blocked_clients:")[1].split()[0]) == count:
            return
        assert time.monotonic() < deadline, info
        pause(loop, 0.01)


def test_xread_block_waits_on_its_own_connection_while_the_other_goes_on(loop, redis_server):
    server = redis_server()
    commands = connect(loop, server.url)
    reads = connect(loop, server.url)
    blocked = reads.command("XREAD", "COUNT", 10, "BLOCK", 5000, "STREAMS", "room", "$")
    wait_for_blocked_clients(loop, commands, 1)
    # The blocking read holds its connection only: commands on the other are answered.
    pings = [commands.command("PING") for _ in range(100)]
    run_until(loop, lambda: pings[-1].done())
    assert not blocked.done()
    entry_id = wait(loop, commands.command("XADD", "room", "*", "text", "hi", "from", "ann"))
    assert wait(loop, blocked) == [[b"room", [[entry_id, [b"text", b"hi", b"from", b"ann"]]]]]
    # A BLPOP that times out answers null (a null array in RESP2).
    assert wait(loop, reads.command("BLPOP", "nothing", "0.05")) is None


def test_subscribe_hands_published_messages_to_on_push(loop, redis_server):
    server = redis_server()
    pushed = []
    listener = connect(loop, server.url, on_push=pushed.append)
    publisher = connect(loop, server.url)
    confirmations = wait(loop, listener.command("SUBSCRIBE", "news", "weather"))
    assert confirmations == [[b"subscribe", b"news", 1], [b"subscribe", b"weather", 2]]
    assert wait(loop, publisher.command("PUBLISH", "news", "extra")) == 1
    assert wait(loop, publisher.command("PUBLISH", "weather", "rain")) == 1
    # PING on a subscribed connection is answered in order among the pushes.
    assert wait(loop, listener.command("PING")) == [b"pong", b""]
    run_until(loop, lambda: len(pushed) == 2)
    assert pushed == [[b"message", b"news", b"extra"], [b"message", b"weather", b"rain"]]
    wait(loop, listener.command("UNSUBSCRIBE", "news", "weather"))
    # Unsubscribed, a reply that looks like a message is a reply again.
    assert wait(loop, listener.command("RPUSH", "list", "message", "a", "b")) == 3
    assert wait(loop, listener.command("LRANGE", "list", 0, -1)) == [b"message", b"a", b"b"]
    assert len(pushed) == 2


def test_subscribing_needs_the_channels_named(loop, redis_server):
    redis = connect(loop, redis_server().url)
    with pytest.raises(ValueError, match="name the channels"):
        redis.command("UNSUBSCRIBE")


# ---- connections lost and refused ----------------------------------------------------

def test_stopping_the_server_fails_what_waits_and_calls_on_lost_once(loop, redis_server):
    server = redis_server()
    lost = []
    redis = connect(loop, server.url, on_lost=lost.append)
    monitor = connect(loop, server.url)
    waiting = redis.command("BLPOP", "queue", 30)
    wait_for_blocked_clients(loop, monitor, 1)
    server.stop()
    run_until(loop, lambda: lost)
    assert len(lost) == 1 and isinstance(lost[0], RedisConnectionError)
    assert "lost the connection" in str(lost[0])
    assert waiting.error() is lost[0]
    assert redis.state == "closed"
    late = redis.command("GET", "x")
    assert isinstance(late.error(), RedisConnectionError)   # at once, not queued
    pause(loop, 0.05)
    assert len(lost) == 1


def test_reconnector_logs_down_and_back_once_and_reconnects_on_the_same_port(
        loop, redis_server, caplog):
    server = redis_server()
    ups, downs = [], []
    keeper = Reconnector(loop, server.url, on_up=ups.append, on_down=downs.append,
                         name="test", initial_delay=0.02, max_delay=0.1, connect_timeout=1.0)
    with caplog.at_level(logging.DEBUG, logger="rawws.redis"):
        keeper.start()
        run_until(loop, lambda: keeper.is_up)
        assert wait(loop, keeper.connection.command("SET", "k", "before")) == "OK"
        server.stop()
        run_until(loop, lambda: keeper.attempts >= 4)   # refused again and again
        assert not keeper.is_up and len(downs) == 1
        server.start()
        run_until(loop, lambda: len(ups) == 2)
    assert keeper.is_up and ups[1] is keeper.connection and ups[0] is not ups[1]
    assert wait(loop, keeper.connection.command("PING")) == "PONG"
    messages = [record.getMessage() for record in caplog.records if record.levelno >= logging.INFO]
    assert sum("is down" in message for message in messages) == 1, messages
    assert sum("is back" in message for message in messages) == 1, messages
    assert sum("connected to Redis" in message for message in messages) == 1, messages
    keeper.close()
    assert keeper.connection is None and ups[1].state == "closed"


def test_a_quiet_reconnector_logs_down_and_back_at_debug_only(loop, caplog):
    port = free_port()   # nothing listens there
    keeper = Reconnector(loop, f"redis://127.0.0.1:{port}", on_up=lambda _: None,
                         name="quiet", initial_delay=0.01, max_delay=0.02, quiet=True)
    with caplog.at_level(logging.DEBUG, logger="rawws.redis"):
        keeper.start()
        run_until(loop, lambda: keeper.attempts >= 3)
    keeper.close()
    quiet = [record for record in caplog.records if "quiet" in record.getMessage()]
    assert any("is down" in record.getMessage() for record in quiet)
    assert all(record.levelno == logging.DEBUG for record in quiet)


def test_reconnector_backs_off_exponentially_up_to_its_cap(loop):
    port = free_port()   # nothing listens there
    starts = []
    keeper = Reconnector(loop, f"redis://127.0.0.1:{port}", on_up=lambda _: None,
                         initial_delay=0.01, max_delay=0.08)
    original = keeper._attempt

    def attempt() -> None:
        starts.append(time.monotonic())
        original()

    keeper._attempt = attempt
    keeper.start()
    run_until(loop, lambda: len(starts) >= 8)
    keeper.close()
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
    # Delays 0.01, 0.02, 0.04, then 0.08 for good, each drawn from [half, all] of it.
    assert all(gap >= 0.004 for gap in gaps[:3]), gaps
    assert all(0.04 <= gap < 0.5 for gap in gaps[3:]), gaps


def test_connecting_to_a_closed_port_is_refused(loop):
    redis = RedisConnection(loop, f"redis://127.0.0.1:{free_port()}/0",
                            on_lost=lambda error: pytest.fail("on_lost on a refusal"))
    started = time.monotonic()
    with pytest.raises(RedisConnectionError, match="cannot connect to .*refused"):
        wait(loop, redis.connect(timeout=WAIT))
    assert time.monotonic() - started < 2.0
    assert redis.state == "closed"


def test_connecting_to_a_server_that_never_answers_times_out(loop):
    # A listener that never accepts: the kernel completes the TCP handshake,
    # then SELECT gets no answer.
    with socket.create_server(("127.0.0.1", 0), backlog=4) as silent:
        port = silent.getsockname()[1]
        redis = RedisConnection(loop, f"redis://127.0.0.1:{port}/0")
        started = time.monotonic()
        ready = redis.connect(timeout=0.3)
        queued = redis.command("PING")
        with pytest.raises(RedisConnectionError, match="no answer within 0.3 s"):
            wait(loop, ready)
        assert 0.25 <= time.monotonic() - started < 2.0
        assert isinstance(queued.error(), RedisConnectionError)


def test_a_peer_that_does_not_speak_resp_is_dropped(loop):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def answer() -> None:
            peer, _ = listener.accept()
            with peer:
                peer.recv(1024)
                peer.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                time.sleep(0.5)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        redis = RedisConnection(loop, f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
        with pytest.raises(RedisConnectionError, match="not RESP"):
            wait(loop, redis.connect(timeout=WAIT))
        thread.join(WAIT)


def test_a_reply_that_no_command_asked_for_drops_the_connection(loop):
    # A peer that answers SELECT, then sends a second reply unasked.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def answer() -> None:
            peer, _ = listener.accept()
            with peer:
                peer.recv(1024)
                peer.sendall(b"+OK\r\n")
                time.sleep(0.1)
                peer.sendall(b"+SURPRISE\r\n")
                time.sleep(0.5)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        lost = []
        redis = connect(loop, f"redis://127.0.0.1:{listener.getsockname()[1]}/0",
                        on_lost=lost.append)
        run_until(loop, lambda: lost)
        assert "a reply that no command asked for: 'SURPRISE'" in str(lost[0])
        assert redis.state == "closed"
        thread.join(WAIT)


def test_commands_past_max_buffered_fail_at_once(loop):
    with socket.create_server(("127.0.0.1", 0)) as silent:
        redis = RedisConnection(loop, f"redis://127.0.0.1:{silent.getsockname()[1]}/0",
                                max_buffered=100)
        redis.connect(timeout=WAIT)
        small = redis.command("SET", "k", "v")
        big = redis.command("SET", "k", "x" * 100)
        assert not small.done()
        assert "not yet taken by the server" in str(big.error())
        redis.close()
        assert isinstance(small.error(), RedisConnectionError)


def test_commands_need_connect_first(loop):
    with pytest.raises(RuntimeError, match="connect"):
        RedisConnection(loop, "redis://127.0.0.1:1/0").command("PING")
