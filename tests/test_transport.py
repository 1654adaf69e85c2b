"""rawws.net.transport: the end of a connection, written down once (TRANSITIONS)."""
from __future__ import annotations

import re
import socket
import time

import rawws.net.transport as transport
from rawws.net.server import WebSocketApp
from rawws.net.transport import TRANSITIONS, Cause, TransportState


def test_the_module_docstrings_diagram_lists_exactly_the_transitions_table():
    drawn = {(TransportState[before], Cause(cause), TransportState[after])
             for before, cause, after in re.findall(r"^\s+(\w+)\s+--(\w+)-->\s+(\w+)",
                                                    transport.__doc__, re.MULTILINE)}
    table = {(before, cause, after) for (before, cause), after in TRANSITIONS.items()}
    assert drawn == table


def test_closed_is_final():
    assert not any(before is TransportState.CLOSED for before, _ in TRANSITIONS)


def test_every_state_but_closed_can_be_torn_down():
    for state in TransportState:
        if state is not TransportState.CLOSED:
            assert TRANSITIONS[(state, Cause.TEARDOWN)] is TransportState.CLOSED


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_a_peer_that_half_closes_gets_its_answer_then_the_transport_closes(serve):
    server = serve(WebSocketApp())
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)   # OPEN --peer_eof--> PEER_ENDED, then --finish--> CLOSED
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 404 ")
    assert wait_for(lambda: not server.connections)


def test_after_a_connection_close_answer_the_server_drains_until_the_peers_eof(serve):
    server = serve(WebSocketApp(), linger_timeout=60.0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):   # the server's FIN ends it: OPEN --finish--> DRAINING
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 404 ")
        (conn,) = list(server.connections)
        assert conn.state is TransportState.DRAINING
    assert wait_for(lambda: not server.connections)   # our close: DRAINING --peer_eof--> CLOSED
