"""`python -m chat --workers N --backplane URL`: N chat processes on one port.

One rawws process uses one core. With `--workers N` the process that was
started (the supervisor) serves nothing itself: it starts N workers, each a
`python -m chat` with its own event loop listening on the same port with
SO_REUSEPORT, so the kernel spreads new connections among them, and the
backplane (Redis) makes their users one room.

The supervisor holds the port (bound, never listening: so with `--port 0`
every worker gets the same port, and a restarted worker finds it again;
a socket that does not listen is given no connections), prints the one
`Serving on` line once every worker is serving, restarts a worker that
dies (its users' pages reconnect, to the workers left), and on SIGTERM or
SIGINT passes SIGTERM to every worker, each of which closes its WebSockets
with 1001, then exits 0.
"""
from __future__ import annotations

import logging
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

from rawws.net.redis import RedisAddress
from rawws.resp import NEED_DATA, RespParser, encode_command

log = logging.getLogger("chat.workers")

START_TIMEOUT = 20.0        # seconds for a worker to print its Serving on line
STOP_GRACE = 5.0            # seconds beyond --close-timeout for workers to exit on SIGTERM
RESTART_DELAY_MAX = 5.0     # a worker that keeps dying is restarted at most this often


def check_redis(address: RedisAddress, timeout: float) -> str | None:
    """PING Redis with a plain blocking socket (before any worker starts); None if it answers."""
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout) as sock:
            sock.sendall(encode_command("SELECT", address.db) + encode_command("PING"))
            parser = RespParser()
            replies = []
            while len(replies) < 2:
                data = sock.recv(4096)
                if not data:
                    return "the connection was closed"
                parser.feed(data)
                while len(replies) < 2 and (reply := parser.next_reply()) is not NEED_DATA:
                    replies.append(reply)
            for reply in replies:
                if isinstance(reply, Exception):
                    return str(reply)
            return None
    except OSError as error:
        return error.strerror or str(error)
    except Exception as error:   # not RESP
        return str(error)


class Worker:
    """One `python -m chat` child; a thread reads its stdout for the Serving on line."""

    def __init__(self, number: int, argv: list[str]) -> None:
        self.number = number
        self.started = time.monotonic()
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen([sys.executable, "-m", "chat", *argv],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        text=True)
        threading.Thread(target=self._drain, daemon=True,
                         name=f"worker {number} stdout").start()

    def _drain(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def wait_serving(self, timeout: float) -> str | None:
        """Its `Serving on ...` line, or None if it exits or is silent too long."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if line is None:
                return None
            if line.startswith("Serving on "):
                return line


def run(args, argv: list[str]) -> int:
    """The supervisor: `args` parsed, `argv` as given (passed on to each worker)."""
    error = check_redis(args.backplane_address, args.backplane_timeout)
    if error is not None:
        print(f"python -m chat: cannot reach the backplane at {args.backplane_address}: {error}",
              file=sys.stderr)
        return 1
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((args.host, args.port))
    except OSError as error:
        holder.close()
        print(f"python -m chat: cannot listen on {args.host}:{args.port}: "
              f"{error.strerror or error}", file=sys.stderr)
        return 1
    port = holder.getsockname()[1]
    worker_argv = [*argv, "--port", str(port), "--workers", "1", "--reuse-port"]

    stopping = threading.Event()

    def stop(_signum, _frame) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    workers = [Worker(i, worker_argv) for i in range(args.workers)]
    deadline = time.monotonic() + START_TIMEOUT
    serving = []
    for worker in workers:
        line = None if stopping.is_set() else worker.wait_serving(
            max(0.1, deadline - time.monotonic()))
        if line is None:
            print("python -m chat: a worker did not start (its log is above)", file=sys.stderr)
            _stop_all(workers, args.close_timeout)
            holder.close()
            return 1
        serving.append(line)
    # The workers' line, once: they all serve the same scheme, host and port.
    print(serving[0], flush=True)
    log.info("%d workers serving, pids %s", len(workers), [w.process.pid for w in workers])

    failures = 0   # workers that died soon after starting, in a row
    while not stopping.wait(0.2):
        for i, worker in enumerate(workers):
            code = worker.process.poll()
            if code is None or stopping.is_set():
                continue
            lived = time.monotonic() - worker.started
            failures = failures + 1 if lived < 10 else 0
            delay = min(RESTART_DELAY_MAX, 0.1 * 2 ** failures) if failures else 0.0
            log.warning("worker %d (pid %d) exited with %s after %.1f s; restarting it%s",
                        worker.number, worker.process.pid, code, lived,
                        f" in {delay:.1f} s" if delay else "")
            if delay and stopping.wait(delay):
                break
            workers[i] = Worker(worker.number, worker_argv)
    _stop_all(workers, args.close_timeout)
    holder.close()
    return 0


def _stop_all(workers: list[Worker], close_timeout: float) -> None:
    """SIGTERM to each worker (Close 1001 to its WebSockets), then wait; SIGKILL past the grace."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + close_timeout + STOP_GRACE
    for worker in workers:
        try:
            worker.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker %d (pid %d) did not stop; killing it", worker.number,
                        worker.process.pid)
            worker.process.kill()
            worker.process.wait()
    log.info("all workers stopped")
