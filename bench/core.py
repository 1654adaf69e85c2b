"""What every benchmark shares: result rows, bounded timing loops, the table, subprocesses."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
KiB = 1024
MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Result:
    """One row of the table."""

    name: str
    figure: float | None     # None: nothing measured (skipped, failed)
    unit: str
    notes: str = ""


@dataclass(frozen=True, slots=True)
class Config:
    """How hard to try. `quick` shrinks counts and time budgets to a smoke check."""

    quick: bool = False

    def pick(self, full, quick):
        """`full` normally, `quick` under --quick."""
        return quick if self.quick else full


Benchmark = Callable[[Config], Iterator[Result]]


# ---- timing -------------------------------------------------------------

def best_rate(call: Callable[[], object], work_per_call: float, *, rounds: int = 3,
              round_time: float = 0.2, max_calls: int = 1_000_000) -> float:
    """Units of work per CPU second: the best of `rounds` rounds.

    Each round calls `call` until it has used `round_time` seconds of CPU, or
    made `max_calls` calls, or taken four times `round_time` on the wall
    clock, whichever comes first. The machine is shared, so the clock is this
    process's CPU time (`time.process_time`): time spent descheduled while
    other processes run is not counted, and the best round is the one least
    disturbed by them (through the caches they share). Fast calls are made in
    batches of about a millisecond between clock readings, since reading the
    CPU clock is a system call that costs about as much as a small call.
    """
    cpu = time.process_time
    wall = time.monotonic
    started = cpu()
    call()
    single = cpu() - started
    batch = max(1, min(10_000, max_calls, int(1e-3 / max(single, 1e-7))))
    best = 0.0
    for _ in range(rounds):
        calls = 0
        started = cpu()
        wall_stop = wall() + 4 * round_time
        while calls < max_calls:
            for _ in range(batch):
                call()
            calls += batch
            if cpu() - started >= round_time or wall() >= wall_stop:
                break
        elapsed = cpu() - started
        best = max(best, calls * work_per_call / max(elapsed, 1e-9))
    return best


def best_time(call: Callable[[], object], *, rounds: int = 3, budget: float = 2.0) -> float:
    """CPU seconds taken by the fastest of up to `rounds` calls; no new call after `budget` s."""
    best = float("inf")
    cpu = time.process_time
    stop = time.monotonic() + budget
    for _ in range(rounds):
        started = cpu()
        call()
        best = min(best, max(cpu() - started, 1e-9))
        if time.monotonic() >= stop:
            break
    return best


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def cpu_note(seconds: float, per: int, what: str) -> str:
    """'server CPU 1.2 µs/msg', or a note that the span was too short to measure."""
    if seconds < 0.05:   # /proc counts CPU time in 10 ms ticks
        return f"server CPU under 50 ms in all, too little to divide per {what}"
    each = seconds / per
    if each >= 1e-3:
        return f"server CPU {each * 1e3:.1f} ms/{what}"
    return f"server CPU {each * 1e6:.1f} µs/{what}"


def format_size(size: int) -> str:
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


# ---- the table ----------------------------------------------------------

COLUMNS = (("benchmark", 48), ("figure", 11), ("unit", 13))


def format_figure(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table_header() -> str:
    head = " ".join(f"{title:<{width}}" if title != "figure" else f"{title:>{width}}"
                    for title, width in COLUMNS)
    return head + " notes\n" + "-" * (len(head) + 30)


def table_row(result: Result) -> str:
    (_, name_width), (_, figure_width), (_, unit_width) = COLUMNS
    name = result.name if len(result.name) <= name_width else result.name[:name_width - 1] + "…"
    return (f"{name:<{name_width}} {format_figure(result.figure):>{figure_width}} "
            f"{result.unit:<{unit_width}} {result.notes}").rstrip()


# ---- subprocesses -------------------------------------------------------

class ServerProcess:
    """A server in a subprocess that prints `Serving on ws://HOST:PORT/` when ready.

    Its stderr goes to a temporary file so a crash can be reported; it is
    stopped with SIGTERM (graceful), then SIGKILL if it does not exit in time.
    """

    def __init__(self, args: list[str], *, ready_timeout: float = 15.0) -> None:
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(args, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=self._stderr)
        self.port = 0
        try:
            line = self._read_line(ready_timeout)
            prefix = f"Serving on ws://{HOST}:"
            if not line.startswith(prefix):
                raise RuntimeError(f"server did not start: {line!r} {self.stderr_tail()}")
            self.port = int(line[len(prefix):].split("/", 1)[0])
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/"

    def _read_line(self, timeout: float) -> str:
        stdout = self.process.stdout
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"server printed nothing in {timeout:.0f} s")
        return stdout.readline().decode("utf-8", "replace").strip()

    def stderr_tail(self, limit: int = 400) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-limit:]

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        process = self.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process.stdout is not None:
            process.stdout.close()
        self._stderr.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def python_module(module: str, *args: str) -> list[str]:
    """The command line running `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS in /proc/PID/status)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (/proc/PID/stat), 1/100 s resolution."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
