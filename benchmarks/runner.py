"""Running the cases: servers alternately (A B C A B C...), pinned, with a memory check after each run."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from . import loadgen
from .procs import ServerProcess
from .scenarios import Case
from .targets import Server

T = TypeVar("T")

SETTLE_BEFORE = 0.3      # seconds between the server's start and the first RSS reading
AFTER_FIRST = 0.3        # ...between the load's end and the first RSS reading after it
AFTER_SECOND = 1.0       # ...and the second: memory still rising between them is "growing"
GROWING_KIB = 512        # more than this between the two readings after the load
IDLE_SETTLE = 1.0        # idle: seconds after the last connection opened before reading RSS


@dataclass
class Run:
    """One server under one case, once."""

    case: str
    server: str
    repeat: int
    figure: float | None = None
    report: dict = field(default_factory=dict)   # the load generator's JSON
    server_cpu: float | None = None              # share of one core during the load
    rss_before_kib: int | None = None
    rss_peak_kib: int | None = None              # VmHWM: the highest RSS of the process
    rss_after_kib: int | None = None             # AFTER_FIRST s after the load
    rss_settled_kib: int | None = None           # AFTER_SECOND s after the load
    error: str | None = None

    @property
    def growing(self) -> bool | None:
        """Did RSS still rise after the load had stopped?"""
        if self.rss_after_kib is None or self.rss_settled_kib is None:
            return None
        return self.rss_settled_kib - self.rss_after_kib > GROWING_KIB

    def to_json(self) -> dict:
        data = asdict(self)
        data["growing"] = self.growing
        return data


def alternation(servers: list[T], repeats: int) -> Iterator[tuple[int, T]]:
    """(repeat, server) in the order A B C A B C...: every repeat visits every server once."""
    for repeat in range(repeats):
        for server in servers:
            yield repeat, server


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None, or None if there are none."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def run_case(case: Case, server: Server, repeat: int, binary: Path,
             cpus: tuple[int | None, int | None],
             tls_files: tuple[str, str] | None = None) -> Run:
    """Start the server, load it, read its memory, stop it. Failures are recorded, not raised."""
    run = Run(case.key, server.key, repeat)
    command = server.command(case.kind, tls_files if case.tls else None)
    server_cpu, load_cpu = cpus
    try:
        with ServerProcess(list(command), cpu=server_cpu) as process:
            time.sleep(SETTLE_BEFORE)
            run.rss_before_kib = process.rss_kib()
            cpu_started, wall_started = process.cpu_seconds(), time.monotonic()
            if case.mode == "idle":
                _idle(case, process, binary, load_cpu, run)
            else:
                run.report = loadgen.run(binary, case.mode, process.port, list(case.args),
                                         cpu=load_cpu, timeout=case.timeout)
                run.figure = run.report.get(case.metric)
            wall = time.monotonic() - wall_started
            if wall > 0:
                run.server_cpu = (process.cpu_seconds() - cpu_started) / wall
            if not process.alive():
                raise RuntimeError(f"the server died: {process.stderr_tail()}")
            time.sleep(AFTER_FIRST)
            run.rss_after_kib = process.rss_kib()
            time.sleep(AFTER_SECOND - AFTER_FIRST)
            run.rss_settled_kib = process.rss_kib()
            run.rss_peak_kib = process.hwm_kib()
    except Exception as error:   # one failed run spoils no other
        run.error = f"{type(error).__name__}: {error}"
        run.figure = None
    if run.error is None and run.report.get("errors"):
        run.error = f"load generator: {run.report['errors']} error(s): {run.report.get('error', '')}"
        run.figure = None
    return run


def _idle(case: Case, process: ServerProcess, binary: Path, load_cpu: int | None,
          run: Run) -> None:
    idle = loadgen.IdleConnections(binary, process.port, case.conns, cpu=load_cpu,
                                   timeout=case.timeout, extra=case.args)
    try:
        ready = idle.wait_ready()
        if ready.get("event") != "ready" or ready.get("open") != case.conns:
            raise RuntimeError(f"only {ready.get('open', ready.get('opened'))} of "
                               f"{case.conns} connections opened: {ready.get('error', '')}")
        time.sleep(IDLE_SETTLE)
        rss_open = process.rss_kib()
        run.figure = (rss_open - run.rss_before_kib) / case.conns
        run.report = {"rss_open_kib": rss_open, **idle.release()}
    finally:
        idle.kill()


def run_all(cases: list[Case], servers: list[Server], repeats: int, binary: Path,
            cpus: tuple[int | None, int | None],
            progress: Callable[[Case, Run], None] = lambda case, run: None,
            tls_files: tuple[str, str] | None = None) -> list[Run]:
    """Every case, each case's repeats alternating across the available servers (over TLS,
    those with a TLS server, given the certificate and key in `tls_files`)."""
    runs = []
    available = [server for server in servers if server.skipped is None]
    for case in cases:
        for repeat, server in alternation(available, repeats):
            if case.tls_pair and (tls_files is None or not server.tls):
                continue
            if server.command(case.kind, tls_files if case.tls else None) is None:
                continue
            run = run_case(case, server, repeat, binary, cpus, tls_files)
            runs.append(run)
            progress(case, run)
    return runs
