"""Broadcast: one message to many clients, and what each idle connection costs the server.

The server (`bench.broadcast_server`, a subprocess) encodes each message once
and queues the same bytes on every connection. The clients are raw
non-blocking sockets in this process, read by one `selectors` loop: they do
the opening handshake with `rawws.handshake` and then only count bytes (every
broadcast frame has the same length), so that the client side costs little
next to the server it measures. A few clients also keep their bytes, which are
parsed at the end to check that every frame arrived intact and in order.
"""
from __future__ import annotations

import os
import resource
import select
import selectors
import socket
import statistics
import time
from collections.abc import Iterator

from rawws.frames import OP_TEXT, FrameParser, encode_frame
from rawws.handshake import build_request, check_response, make_key
from rawws.http import find_head_end, parse_response_head

from .core import HOST, Config, Result, ServerProcess, cpu_note, python_module

PAYLOAD_SIZE = 32
RECV_SIZE = 256 * 1024


class Clients:
    """`count` WebSocket clients on raw sockets, driven by one selector."""

    def __init__(self, port: int, count: int, *, budget: float) -> None:
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.sockets: list[socket.socket] = []
        self.received: list[int] = []
        self.kept: dict[int, bytearray] = {0: bytearray(), count // 2: bytearray(),
                                           count - 1: bytearray()}
        self._connect(count, time.monotonic() + budget)

    def _connect(self, count: int, deadline: float) -> None:
        """Connect and handshake in waves, so the listener's backlog never overflows."""
        wave = 100
        for first in range(0, count, wave):
            pending: dict[int, tuple[str, bytearray]] = {}
            for index in range(first, min(count, first + wave)):
                sock = socket.create_connection((HOST, self.port), timeout=10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                key = make_key()
                sock.sendall(build_request(f"{HOST}:{self.port}", "/", key))
                sock.setblocking(False)
                self.sockets.append(sock)
                self.received.append(0)
                self.selector.register(sock, selectors.EVENT_READ, index)
                pending[index] = (key, bytearray())
            while pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(self.sockets) - len(pending)} of {count} "
                                       "clients connected before the deadline")
                for selector_key, _ in self.selector.select(1.0):
                    index = selector_key.data
                    if index not in pending:
                        continue
                    key, head = pending[index]
                    chunk = self.sockets[index].recv(4096)
                    if not chunk:
                        raise ConnectionError(f"client {index}: closed during the handshake")
                    head += chunk
                    end = find_head_end(head)
                    if end != -1:
                        check_response(parse_response_head(bytes(head[:end])), key)
                        if len(head) > end:
                            raise ConnectionError("data before any message was sent")
                        del pending[index]

    def send(self, index: int, data: bytes, deadline: float) -> None:
        """Write all of `data` on a non-blocking socket, waiting for room as needed."""
        sock = self.sockets[index]
        view = memoryview(data)
        while view:
            if time.monotonic() > deadline:
                raise TimeoutError("could not send before the deadline")
            try:
                sent = sock.send(view)
            except BlockingIOError:
                select.select([], [sock], [], 0.1)
                continue
            view = view[sent:]

    def receive_until(self, each: int, deadline: float) -> bool:
        """Read until every client has received `each` bytes in all; False at the deadline."""
        received = self.received
        kept = self.kept
        behind = sum(1 for total in received if total < each)
        select = self.selector.select
        sockets = self.sockets
        while behind:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                return False
            for selector_key, _ in select(min(timeout, 1.0)):
                index = selector_key.data
                try:
                    data = sockets[index].recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                if not data:
                    raise ConnectionError(f"client {index}: server closed the connection")
                before = received[index]
                received[index] = before + len(data)
                if before < each <= before + len(data):
                    behind -= 1
                if index in kept:
                    kept[index] += data
        return True

    def check_kept(self, messages: list[bytes]) -> None:
        """The sampled clients got exactly `messages`, in order, as unmasked text frames."""
        for index, data in self.kept.items():
            parser = FrameParser(require_mask=False)
            parser.feed(data)
            got = []
            while (frame := parser.next_frame()) is not None:
                got.append(frame.payload)
            if got != messages or parser.buffered:
                raise RuntimeError(f"client {index} received {len(got)} frames, not the "
                                   f"{len(messages)} sent, or not the same ones")

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.selector.close()


def message(number: int) -> bytes:
    return f"broadcast {number:08d} ".encode("ascii").ljust(PAYLOAD_SIZE, b".")


def client_frame(payload: bytes) -> bytes:
    return encode_frame(OP_TEXT, payload, mask_key=os.urandom(4))


def bench_broadcast(config: Config) -> Iterator[Result]:
    count = config.pick(1000, 100)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count + 64:
        count = max(10, soft - 64)
    burst = config.pick(200, 20)
    paced = config.pick(50, 5)
    wire_size = len(encode_frame(OP_TEXT, message(0)))   # what each client receives per message

    with ServerProcess(python_module("bench.broadcast_server", "--port", "0")) as server:
        time.sleep(0.2)
        rss_idle_server = server.rss_bytes()
        started = time.perf_counter()
        clients = Clients(server.port, count, budget=config.pick(60.0, 20.0))
        try:
            connect_seconds = time.perf_counter() - started
            yield Result(f"connect + handshake {count} clients", count / connect_seconds,
                         "handshakes/s", f"{connect_seconds:.2f} s, clients in waves of 100")
            time.sleep(0.5)   # let the server settle before reading its memory
            rss_connected = server.rss_bytes()
            per_connection = (rss_connected - rss_idle_server) / count
            yield Result("server memory per idle connection", per_connection / 1024, "KiB",
                         f"VmRSS {rss_idle_server / 2**20:.1f} -> {rss_connected / 2**20:.1f} MiB "
                         f"with {count} connections (kernel buffers not counted)")

            sent: list[bytes] = []
            # Burst: one client sends `burst` messages at once; everyone receives all of them.
            payloads = [message(number) for number in range(burst)]
            data = b"".join(client_frame(payload) for payload in payloads)
            cpu_before = server.cpu_seconds()
            own_cpu_before = time.process_time()
            started = time.perf_counter()
            deadline = time.monotonic() + config.pick(60.0, 20.0)
            clients.send(0, data, deadline)
            finished = clients.receive_until(burst * wire_size, deadline)
            seconds = time.perf_counter() - started
            server_cpu = server.cpu_seconds() - cpu_before
            own_cpu = time.process_time() - own_cpu_before
            sent += payloads
            if not finished:
                yield Result("broadcast burst", None, "", "timed out before every client "
                             "had every message")
                return
            deliveries = burst * count
            yield Result(f"broadcast burst, {count} clients", deliveries / seconds,
                         "deliveries/s",
                         f"{burst} x {PAYLOAD_SIZE} B sent at once, {deliveries:,} deliveries in "
                         f"{seconds:.2f} s; {cpu_note(server_cpu, deliveries, 'delivery')}; "
                         f"this process (clients) {own_cpu / seconds:.0%} CPU busy")

            # Paced: one message at a time, each waited for at every client before the next.
            fan_out = []
            base = clients.received[0]
            cpu_before = server.cpu_seconds()
            stop = time.monotonic() + config.pick(20.0, 5.0)
            for number in range(burst, burst + paced):
                payload = message(number)
                started = time.perf_counter()
                deadline = time.monotonic() + 10.0
                clients.send(0, client_frame(payload), deadline)
                sent.append(payload)
                base += wire_size
                if not clients.receive_until(base, deadline):
                    yield Result("broadcast paced", None, "", "timed out")
                    return
                fan_out.append(time.perf_counter() - started)
                if time.monotonic() > stop:
                    break
            server_cpu = server.cpu_seconds() - cpu_before
            median = statistics.median(fan_out)
            yield Result(f"broadcast one message to {count} clients", median * 1e3, "ms",
                         f"median of {len(fan_out)}, until the last client has it; "
                         f"{count / median:,.0f} deliveries/s; "
                         f"{cpu_note(server_cpu, len(fan_out) * count, 'delivery')}")
            clients.check_kept(sent)
        finally:
            clients.close()
