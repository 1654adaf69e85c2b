"""Processes the benchmarks start: pinning to cores, the server subprocess, /proc readings."""
from __future__ import annotations

import os
import re
import resource
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable

from . import REPO_ROOT

ANNOUNCEMENT = re.compile(r"://127\.0\.0\.1:(\d+)")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cores() -> tuple[int | None, int | None]:
    """(server core, load core): two different CPUs this process may use, or (None, None)."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


def pin_to(cpu: int | None) -> Callable[[], None] | None:
    """A preexec_fn that pins the child to `cpu` (None: no pinning)."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it); returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def status_kib(pid: int, field: str) -> int:
    """A `field:` of /proc/PID/status in KiB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (/proc/PID/stat), in 1/100 s ticks."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After the command name: utime and stime are fields 14 and 15 of the whole line.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class ServerProcess:
    """A server in a subprocess, ready once it prints a line naming `://127.0.0.1:PORT`.

    stderr goes to a temporary file so a failure can be shown; stop() sends
    SIGTERM, then SIGKILL if the server has not exited within a few seconds.
    """

    def __init__(self, argv: list[str], *, cpu: int | None, ready_timeout: float = 20.0) -> None:
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=self._stderr,
                                        preexec_fn=pin_to(cpu))
        self.port = 0
        try:
            self.port = self._wait_for_port(ready_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_for_port(self, timeout: float) -> int:
        stop = time.monotonic() + timeout
        stdout = self.process.stdout
        while time.monotonic() < stop:
            ready, _, _ = select.select([stdout], [], [], max(0.0, stop - time.monotonic()))
            if not ready:
                break
            line = stdout.readline().decode("utf-8", "replace")
            if not line:
                raise RuntimeError(f"server exited before listening: {self.stderr_tail()}")
            found = ANNOUNCEMENT.search(line)
            if found:
                return int(found.group(1))
        raise RuntimeError(f"server named no port in {timeout:.0f} s: {self.stderr_tail()}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_kib(self) -> int:
        return status_kib(self.pid, "VmRSS")

    def hwm_kib(self) -> int:
        return status_kib(self.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def stderr_tail(self, limit: int = 300) -> str:
        self._stderr.seek(0)
        return " ".join(self._stderr.read().decode("utf-8", "replace").split())[-limit:]

    def stop(self, timeout: float = 5.0) -> None:
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
