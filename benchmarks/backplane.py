"""The chat's fan-out through the Redis backplane (docs/scaling.md).

    python -m benchmarks.backplane [--quick] [--repeats R]     (`make bench-backplane`)

The C load generator's `fanout` mode (N receivers in one room, one sender,
at most 10 messages not yet at every receiver) against:

- `1 process`: `python -m chat`, no backplane: today's chat;
- `2 workers + Redis`: `python -m chat --workers 2 --backplane redis://...`
  on one port, the receivers spread over both workers by the kernel, every
  message through one redis-server (Debian's), started here in a temporary
  directory on a free port;
- `websockets + redis-py` (when .bench-venv has both): two processes of
  benchmarks/servers/websockets_redis_chat.py on one port, the same route
  (XADD, XREAD, broadcast) with no chat rules: a reference, never a
  dependency; 1,000 receivers only (with 5,000, its join phase alone, every
  join broadcast to everyone, takes minutes).

Each row: deliveries/s (messages x receivers, over the time from the first
send to the last delivery), the delivery delay p50/p99 (send to receipt,
at every receiver), the CPU seconds of the chat processes and of Redis for
the whole run (the joins and leaves included), and Redis's own time per
script call and per XREAD (INFO commandstats). The median of R runs, alternating the setups.
Loopback only, every run bounded; results go to benchmarks/backplane.json
and are printed as a table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import BENCH_DIR, REPO_ROOT, loadgen
from .procs import ServerProcess, cpu_seconds, raise_fd_limit

RESULTS = BENCH_DIR / "backplane.json"
CHAT = [sys.executable, "-m", "chat", "--port", "0", "--rate", "0", "--flood-kick", "0",
        "--log-level", "WARNING", "--ping-interval", "0"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Redis:
    """A throwaway redis-server on a free 127.0.0.1 port, nothing saved."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.directory = tempfile.mkdtemp(prefix="bench-redis-")
        self.port = free_port()
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.directory, "--logfile", "redis.log"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command_stats(self) -> dict[str, dict[str, float]]:
        """INFO commandstats: {"evalsha": {"calls": ..., "usec_per_call": ...}, ...}."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
            data = b""
            while not data.endswith(b"\r\n") or data.count(b"\r\n") < 2:
                data += sock.recv(65536)
        stats = {}
        for line in data.decode().splitlines():
            if line.startswith("cmdstat_"):
                name, fields = line[len("cmdstat_"):].split(":", 1)
                stats[name] = {key: float(value) for key, value in
                               (field.split("=") for field in fields.split(","))
                               if key in ("calls", "usec", "usec_per_call")}
        return stats

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


def script_costs(calls: int = 20_000) -> dict[str, float]:
    """Redis's own time per `join` and per `say` script (INFO commandstats), each
    run `calls` times, pipelined, on a Redis of its own: what a message costs Redis."""
    from chat.backplane import SCRIPTS, SHAS
    from rawws.resp import NEED_DATA, RespParser, encode_command

    redis = Redis()
    prefix = "rawws:chat:bench:"
    fields = '"username":"user1","message":"an ordinary chat message, some sixty characters long"'
    makers = {
        "join": lambda i: ("EVALSHA", SHAS["join"], 0, prefix, 10000, "server", 1, i, i,
                           f"user{i}", f"user{i}"),
        "say": lambda i: ("EVALSHA", SHAS["say"], 0, prefix, 10000, "server", 1, 1, i, fields,
                          100),
    }
    costs = {}
    try:
        with socket.create_connection(("127.0.0.1", redis.port), timeout=30) as sock:
            def call(commands: list[tuple]) -> list:
                sock.sendall(b"".join(encode_command(*command) for command in commands))
                parser, replies = RespParser(), []
                while len(replies) < len(commands):
                    parser.feed(sock.recv(1 << 20))
                    while (reply := parser.next_reply()) is not NEED_DATA:
                        replies.append(reply)
                return replies

            call([("SCRIPT", "LOAD", source) for source in SCRIPTS.values()])
            for name, make in makers.items():
                call([("CONFIG", "RESETSTAT")])
                call([make(i) for i in range(1, calls + 1)])
                info = call([("INFO", "commandstats")])[0].decode()
                for line in info.splitlines():
                    if line.startswith("cmdstat_evalsha:"):
                        costs[f"{name}_us"] = float(line.split("usec_per_call=")[1].split(",")[0])
    finally:
        redis.stop()
    return costs


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as found:
            return [int(child) for child in found.read().split()]
    except OSError:
        return []


REFERENCE = "websockets + redis-py"
REFERENCE_SCRIPT = BENCH_DIR / "servers" / "websockets_redis_chat.py"
REFERENCE_MAX_RECEIVERS = 1000


def reference_python() -> str | None:
    """.bench-venv's Python when it has websockets and redis-py (`make bench-refs`)."""
    python = REPO_ROOT / ".bench-venv" / "bin" / "python"
    if not python.exists():
        return None
    found = subprocess.run([str(python), "-c", "import websockets, redis"], capture_output=True)
    return str(python) if found.returncode == 0 else None


def run_once(setup: str, receivers: int, messages: int, binary: Path) -> dict:
    redis = Redis() if setup != "1 process" else None
    if setup == REFERENCE:
        return run_reference(redis, receivers, messages, binary)
    argv = list(CHAT)
    if redis is not None:
        argv += ["--backplane", redis.url, "--workers", "2"]
    try:
        with ServerProcess(argv, cpu=None) as server:
            time.sleep(0.5)
            pids = children(server.pid) or [server.pid]
            chat_cpu = sum(cpu_seconds(pid) for pid in pids)
            redis_cpu = cpu_seconds(redis.process.pid) if redis else 0.0
            report = loadgen.run(binary, "fanout", server.port,
                                 ["--conns", str(receivers), "--messages", str(messages),
                                  "--window", "10", "--duration", "60", "--close-timeout", "30"],
                                 cpu=None, timeout=240)
            chat_cpu = sum(cpu_seconds(pid) for pid in pids) - chat_cpu
            redis_cpu = (cpu_seconds(redis.process.pid) - redis_cpu) if redis else None
            stats = redis.command_stats() if redis else {}
    finally:
        if redis is not None:
            redis.stop()
    return _row(setup, receivers, messages, report, chat_cpu, redis_cpu, stats)


def run_reference(redis: Redis, receivers: int, messages: int, binary: Path) -> dict:
    """Two websockets + redis-py processes on one port (SO_REUSEPORT), one Redis."""
    port = free_port()
    argv = [reference_python(), str(REFERENCE_SCRIPT), "--port", str(port), "--redis", redis.url,
            "--reuse-port"]
    try:
        with ServerProcess(argv, cpu=None) as one, ServerProcess(argv, cpu=None) as two:
            time.sleep(0.5)
            pids = [one.pid, two.pid]
            chat_cpu = sum(cpu_seconds(pid) for pid in pids)
            redis_cpu = cpu_seconds(redis.process.pid)
            report = loadgen.run(binary, "fanout", port,
                                 ["--conns", str(receivers), "--messages", str(messages),
                                  "--window", "10", "--duration", "60", "--close-timeout", "30"],
                                 cpu=None, timeout=240)
            chat_cpu = sum(cpu_seconds(pid) for pid in pids) - chat_cpu
            redis_cpu = cpu_seconds(redis.process.pid) - redis_cpu
            stats = redis.command_stats()
    finally:
        redis.stop()
    return _row(REFERENCE, receivers, messages, report, chat_cpu, redis_cpu, stats)


def _row(setup: str, receivers: int, messages: int, report: dict, chat_cpu: float,
         redis_cpu: float | None, stats: dict) -> dict:
    sent = report.get("messages") or messages
    return {"setup": setup, "receivers": receivers, "messages": sent,
            "deliveries_per_s": report.get("deliveries_per_s"),
            "p50_ms": report.get("p50_us", 0) / 1000, "p99_ms": report.get("p99_us", 0) / 1000,
            # Whole runs: the N joins (N x N/2 deliveries) and leaves are in these too.
            "chat_cpu_s": chat_cpu, "redis_cpu_s": redis_cpu,
            # Redis's own time per script call and per XREAD (INFO commandstats).
            "redis_evalsha_us": stats.get("evalsha", {}).get("usec_per_call"),
            "redis_xread_us": stats.get("xread", {}).get("usec_per_call"),
            "complete": report.get("complete"), "errors": report.get("errors"),
            "error": report.get("error")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backplane",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, one run each")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each row (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    parser.add_argument("--setups", nargs="+", metavar="SETUP",
                        help="only these setups, by name (as printed)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    raise_fd_limit()
    binary = loadgen.build()
    rows = [(1000, 60 if args.quick else 200), (5000, 20 if args.quick else 60)]
    setups = ["1 process", "2 workers + Redis"]
    if reference_python() is not None:
        setups.append(REFERENCE)
    else:
        print(f"  ({REFERENCE}: not in .bench-venv, skipped; `make bench-refs` installs it)")
    if args.setups:
        setups = [setup for setup in setups if setup in args.setups]
    runs: dict[tuple[str, int], list[dict]] = {}
    for _ in range(repeats):
        for receivers, messages in rows:
            for setup in setups:
                if setup == REFERENCE and receivers > REFERENCE_MAX_RECEIVERS:
                    continue   # its join phase alone (N joins to everyone) takes minutes
                print(f"  {setup}, {receivers} receivers, {messages} messages...", flush=True)
                try:
                    result = run_once(setup, receivers, messages, binary)
                except Exception as error:   # one failed run spoils no other
                    result = {"setup": setup, "receivers": receivers, "error": str(error)}
                runs.setdefault((setup, receivers), []).append(result)
    table = []
    for (setup, receivers), results in runs.items():
        good = [r for r in results if r.get("deliveries_per_s") and not r.get("errors")]

        def med(key: str) -> float | None:
            values = [r[key] for r in good if r.get(key) is not None]
            return statistics.median(values) if values else None

        table.append({"setup": setup, "receivers": receivers, "runs": len(results),
                      "good_runs": len(good), "deliveries_per_s": med("deliveries_per_s"),
                      "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
                      "chat_cpu_s": med("chat_cpu_s"), "redis_cpu_s": med("redis_cpu_s"),
                      "redis_evalsha_us": med("redis_evalsha_us"),
                      "redis_xread_us": med("redis_xread_us"),
                      "errors": [r.get("error") for r in results if r.get("error")]})
    print("  Redis's time per script...", flush=True)
    costs = script_costs()
    args.out.write_text(json.dumps({"cpus": os.cpu_count(), "quick": args.quick,
                                   "redis_script_us": costs,
                                   "repeats": repeats, "rows": table, "runs": runs and [
                                       r for results in runs.values() for r in results]},
                                  indent=2) + "\n")
    print(f"\n{'setup':<20} {'receivers':>9} {'deliveries/s':>13} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'chat CPU s':>11} {'Redis CPU s':>12} {'EVALSHA µs':>11} {'XREAD µs':>9}")
    for row in table:
        def show(value, spec):
            return format(value, spec) if value is not None else "-"
        print(f"{row['setup']:<20} {row['receivers']:>9} {show(row['deliveries_per_s'], '13,.0f')} "
              f"{show(row['p50_ms'], '8.1f')} {show(row['p99_ms'], '8.1f')} "
              f"{show(row['chat_cpu_s'], '11.1f')} {show(row['redis_cpu_s'], '12.2f')} "
              f"{show(row['redis_evalsha_us'], '11.1f')} {show(row['redis_xread_us'], '9.1f')}"
              + (f"  errors: {row['errors']}" if row["errors"] else ""))
    print(f"\nRedis's own time per script, alone: join {costs.get('join_us', 0):.1f} µs, "
          f"say (a message) {costs.get('say_us', 0):.1f} µs")
    print(f"\n(written to {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
