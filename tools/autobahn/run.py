"""Run Autobahn|Testsuite against rawws, both ways, and print one summary line per side.

* server side: wstest's fuzzingclient drives `python -m rawws.echo`;
* client side: wstest's fuzzingserver drives `client_driver.py` (rawws.net.client);

each over plain TCP (ws://), then over TLS (wss://, a throwaway CA and
certificate made for the run with `openssl`, tests/tls_certs.py).

    python tools/autobahn/run.py [--mode full|quick] [--side both|server|client]
                                 [--transport both|plain|tls]

Everything listens on 127.0.0.1 at ports chosen at run time; the specs are
written at run time into a temporary directory; reports (HTML and JSON, one
file per case) go to reports/autobahn/{server,client}/ and, over TLS, to
reports/autobahn/{server,client}-tls/. The exit status is 0 only when every
run completed and no case is FAILED or UNIMPLEMENTED.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]
LOOPBACK = "127.0.0.1"
AGENT = "rawws"
SUITE_VERSION = "25.10.1"

OK, NON_STRICT, INFORMATIONAL, UNIMPLEMENTED, FAILED = (
    "OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
OUTCOMES = (OK, NON_STRICT, INFORMATIONAL, UNIMPLEMENTED, FAILED)
# A case's outcome is the worse of its two verdicts (what it saw, how it closed).
SEVERITY = {OK: 0, INFORMATIONAL: 1, NON_STRICT: 2, FAILED: 3}
# Autobahn's closing verdicts, mapped as its own HTML report colours them.
CLOSE_OUTCOMES = {"OK": OK, "INFORMATIONAL": INFORMATIONAL,
                  "WRONG CODE": NON_STRICT, "FAILED BY CLIENT": NON_STRICT}

# quick (for CI): every case of the fast groups, and from the slow ones
# (9.* limits and performance, 12.*/13.* compression) the first case of
# each subgroup plus the largest messages (9.1.6/9.2.6: 16 MiB) and an
# auto-fragmented compressed case. wstest drops excluded cases after adding
# listed ones, so the quick set is listed, never excluded.
QUICK_GROUPS = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"]
QUICK_SAMPLE = (["9.1.1", "9.1.6", "9.2.1", "9.2.6"]
                + [f"9.{n}.1" for n in range(3, 9)]
                + [f"12.{n}.1" for n in range(1, 6)] + ["12.1.11"]
                + [f"13.{n}.1" for n in range(1, 8)] + ["13.1.11"])
MODES: dict[str, dict[str, list[str]]] = {
    "full": {"cases": ["*"], "exclude": []},
    "quick": {"cases": QUICK_GROUPS + QUICK_SAMPLE, "exclude": []},
}
# Seconds for each side. Measured on the shared 2-core VM: full 19-23 min a
# side (12.*/13.* are most of it: Autobahn compresses in Python 2), quick < 1 min.
TIME_LIMITS = {"full": 60 * 60.0, "quick": 4 * 60.0}
PROGRESS_EVERY = 60.0
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
SERVING_PREFIX = "Serving on "


# ---- pure parts: specs and summaries -------------------------------------

def fuzzingclient_spec(url: str, outdir: str, cases: list[str], exclude: list[str],
                       agent: str = AGENT) -> dict[str, Any]:
    """The spec for wstest -m fuzzingclient: test the server at `url`."""
    return {"outdir": outdir, "servers": [{"agent": agent, "url": url}],
            "cases": list(cases), "exclude-cases": list(exclude),
            "exclude-agent-cases": {}}


def fuzzingserver_spec(url: str, outdir: str, cases: list[str],
                       exclude: list[str], *, cert: str | None = None,
                       key: str | None = None) -> dict[str, Any]:
    """The spec for wstest -m fuzzingserver: listen at `url` for the client under test
    (a wss:// url with the PEM `cert` and `key` it serves TLS with)."""
    spec = {"url": url, "outdir": outdir, "cases": list(cases),
            "exclude-cases": list(exclude), "exclude-agent-cases": {}}
    if cert is not None:
        spec.update(cert=cert, key=key)
    return spec


def mode_cases(mode: str) -> tuple[list[str], list[str]]:
    """(cases, exclude-cases) patterns for a mode."""
    return list(MODES[mode]["cases"]), list(MODES[mode]["exclude"])


def case_key(case_id: str) -> tuple[int, ...]:
    """'9.10.2' -> (9, 10, 2), so cases sort as the suite numbers them."""
    return tuple(int(part) for part in case_id.split("."))


def case_outcome(entry: Mapping[str, Any]) -> str:
    """One of OUTCOMES for a case's index.json entry (its behavior and behaviorClose)."""
    behavior = entry.get("behavior")
    if behavior == UNIMPLEMENTED:
        return UNIMPLEMENTED
    seen = behavior if behavior in (OK, NON_STRICT, INFORMATIONAL) else FAILED
    closed = CLOSE_OUTCOMES.get(entry.get("behaviorClose"), FAILED)
    return max(seen, closed, key=SEVERITY.__getitem__)


@dataclass
class Summary:
    """The cases of one run, grouped by outcome."""

    cases: dict[str, list[str]] = field(default_factory=lambda: {o: [] for o in OUTCOMES})

    @property
    def total(self) -> int:
        return sum(len(ids) for ids in self.cases.values())

    def count(self, outcome: str) -> int:
        return len(self.cases[outcome])

    @property
    def passed(self) -> bool:
        """No FAILED and no UNIMPLEMENTED case, and at least one case ran."""
        return self.total > 0 and not self.cases[FAILED] and not self.cases[UNIMPLEMENTED]


def summarise(results: Mapping[str, Mapping[str, Any]]) -> Summary:
    """Group the cases of one agent's index.json entries by outcome."""
    summary = Summary()
    for case_id in sorted(results, key=case_key):
        summary.cases[case_outcome(results[case_id])].append(case_id)
    return summary


def load_results(index_path: Path, agent: str = AGENT) -> dict[str, Any]:
    """One agent's entries from a wstest index.json."""
    index = json.loads(index_path.read_text(encoding="utf-8"))
    if agent not in index:
        raise KeyError(f"{index_path} has no results for agent {agent!r} (has {sorted(index)})")
    return index[agent]


def group_ids(case_ids: Iterable[str], limit: int = 12) -> str:
    """A short list of case ids: long runs are shown per top-level group ('12.*: 90')."""
    ids = list(case_ids)
    if len(ids) <= limit:
        return ", ".join(ids)
    groups: dict[str, int] = {}
    for case_id in ids:
        top = case_id.split(".")[0]
        groups[top] = groups.get(top, 0) + 1
    return ", ".join(f"{top}.*: {n}" for top, n in groups.items())


def summary_line(side: str, summary: Summary, seconds: float) -> str:
    """`server: 517 cases in 312 s: OK 300, NON-STRICT 0, ... FAILED 0`."""
    counts = ", ".join(f"{outcome} {summary.count(outcome)}" for outcome in OUTCOMES)
    return f"{side}: {summary.total} cases in {seconds:.0f} s: {counts}"


def detail_lines(summary: Summary) -> list[str]:
    """One indented line per non-OK outcome that has cases, naming them."""
    return [f"  {outcome}: {group_ids(summary.cases[outcome])}"
            for outcome in (FAILED, UNIMPLEMENTED, NON_STRICT, INFORMATIONAL)
            if summary.cases[outcome]]


def serving_port(line: str) -> int:
    """The port from a `Serving on ws://HOST:PORT/` line."""
    if not line.startswith(SERVING_PREFIX):
        raise ValueError(f"expected {SERVING_PREFIX!r}..., got {line!r}")
    port = urlsplit(line[len(SERVING_PREFIX):].strip()).port
    if port is None:
        raise ValueError(f"no port in {line!r}")
    return port


# ---- processes -----------------------------------------------------------

class RunError(Exception):
    """A run that could not complete (a process died, a time limit passed)."""


class Processes:
    """Child processes, each in its own process group, all stopped on exit."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen] = []

    def start(self, argv: list[str], log: IO[bytes], **kwargs: Any) -> subprocess.Popen:
        kwargs.setdefault("stdout", log)
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=log,
                                 start_new_session=True, **kwargs)
        self.children.append(child)
        return child

    def stop(self, child: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
        """Signal the child's process group, then kill it if it lingers."""
        if child.poll() is None:
            self._signal(child, sig)
            try:
                child.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._signal(child, signal.SIGKILL)
                child.wait()
        if child.stdout is not None:
            child.stdout.close()

    @staticmethod
    def _signal(child: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            pass

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for child in reversed(self.children):
            self.stop(child)


def free_port() -> int:
    """A loopback port nobody listens on right now (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def read_line(child: subprocess.Popen, timeout: float) -> str:
    """The child's first stdout line, waiting at most `timeout` seconds."""
    assert child.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise RunError(f"no output from {child.args[:3]} in {timeout:.0f} s")
    line = child.stdout.readline().decode("utf-8", "replace")
    if not line:
        raise RunError(f"{child.args[:3]} exited (status {child.wait()}) before it was ready")
    return line


def wait_listening(port: int, child: subprocess.Popen, timeout: float) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RunError(f"wstest exited (status {child.returncode}) before it listened")
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RunError(f"wstest did not listen on port {port} within {timeout:.0f} s")


def last_case(log_path: Path) -> str | None:
    """The case wstest said it was running last (for progress lines)."""
    marker = "Running test case ID "
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 8192))
            tail = log.read().decode("utf-8", "replace")
    except OSError:
        return None
    at = tail.rfind(marker)
    return tail[at + len(marker):].split()[0] if at != -1 else None


def wait_for(child: subprocess.Popen, deadline: float, side: str, log_path: Path) -> int:
    """Wait for `child` to exit before `deadline`, printing progress now and then."""
    next_progress = time.monotonic() + PROGRESS_EVERY
    while True:
        now = time.monotonic()
        if now >= deadline:
            raise RunError(f"{side}: time limit passed (last case: {last_case(log_path)});"
                           f" see {log_path}")
        try:
            return child.wait(min(deadline, next_progress) - now)
        except subprocess.TimeoutExpired:
            if time.monotonic() >= next_progress:
                print(f"{side}: ... at case {last_case(log_path)}", flush=True)
                next_progress += PROGRESS_EVERY


# ---- the two runs -----------------------------------------------------------

@dataclass
class Settings:
    """What both runs share: mode, the suite's Python, where reports and specs go, the time limit."""

    mode: str
    wstest_python: Path
    reports: Path
    work: Path
    time_limit: float
    certs: Any = None   # tests/tls_certs.Certificates over TLS, None over plain TCP

    @property
    def tls(self) -> bool:
        return self.certs is not None

    def outdir(self, side: str) -> Path:
        return self.reports / (f"{side}-tls" if self.tls else side)


def make_certificates(folder: Path) -> Any:
    """A throwaway CA and a certificate for 127.0.0.1, by tests/tls_certs.py (openssl)."""
    spec = importlib.util.spec_from_file_location("rawws_tls_certs",
                                                  PROJECT / "tests" / "tls_certs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.make_certificates(folder)


def clean_report_dir(outdir: Path) -> None:
    """Remove a previous run's reports (only files wstest writes), so none are stale."""
    outdir.mkdir(parents=True, exist_ok=True)
    for path in outdir.iterdir():
        if path.is_file() and (path.name.startswith(("index.", f"{AGENT}_case_"))):
            path.unlink()


def wstest_argv(settings: Settings, *args: str) -> list[str]:
    """wstest, run through the loopback-only wrapper with the suite's Python 2.7."""
    return [str(settings.wstest_python), str(HERE / "wstest_loopback.py"), *args]


def child_env() -> dict[str, str]:
    """Our environment, unbuffered (so logs show progress), with the project importable."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
    return env


def run_server_side(settings: Settings) -> Summary:
    """wstest's fuzzingclient against `python -m rawws.echo` (with --certfile over TLS:
    Twisted's ClientContextFactory then connects without verifying it)."""
    outdir = settings.outdir("server")
    clean_report_dir(outdir)
    cases, exclude = mode_cases(settings.mode)
    deadline = time.monotonic() + settings.time_limit
    with ExitStack() as stack:
        processes = stack.enter_context(Processes())
        echo_log = stack.enter_context(open(outdir / "echo.log", "wb"))
        wstest_log_path = outdir / "wstest.log"
        wstest_log = stack.enter_context(open(wstest_log_path, "wb"))
        # Keepalive pings are off: no case expects them, and a Ping in the
        # middle of a case would change what Autobahn sees.
        tls = (["--certfile", str(settings.certs.cert), "--keyfile", str(settings.certs.key)]
               if settings.tls else [])
        echo = processes.start(
            [sys.executable, "-m", "rawws.echo", "--host", LOOPBACK, "--port", "0",
             "--ping-interval", "0", *tls],
            echo_log, stdout=subprocess.PIPE, cwd=PROJECT, env=child_env())
        port = serving_port(read_line(echo, STARTUP_TIMEOUT))
        spec_path = settings.work / "fuzzingclient.json"
        scheme = "wss" if settings.tls else "ws"
        spec = fuzzingclient_spec(f"{scheme}://{LOOPBACK}:{port}", str(outdir), cases, exclude)
        spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
        wstest = processes.start(wstest_argv(settings, "-m", "fuzzingclient", "-s", str(spec_path)),
                                 wstest_log, cwd=settings.work, env=child_env())
        status = wait_for(wstest, deadline, "server", wstest_log_path)
        if status != 0:
            raise RunError(f"server: wstest exited with status {status}; see {wstest_log_path}")
        if echo.poll() is not None:
            raise RunError(f"server: the echo server exited early; see {outdir / 'echo.log'}")
    return summarise(load_results(outdir / "index.json"))


def run_client_side(settings: Settings) -> Summary:
    """wstest's fuzzingserver against client_driver.py (rawws.net.client); over TLS
    the suite serves the test certificate and the driver trusts its CA."""
    outdir = settings.outdir("client")
    clean_report_dir(outdir)
    cases, exclude = mode_cases(settings.mode)
    deadline = time.monotonic() + settings.time_limit
    with ExitStack() as stack:
        processes = stack.enter_context(Processes())
        wstest_log_path = outdir / "wstest.log"
        wstest_log = stack.enter_context(open(wstest_log_path, "wb"))
        driver_log_path = outdir / "driver.log"
        driver_log = stack.enter_context(open(driver_log_path, "wb"))
        port = free_port()
        url = f"{'wss' if settings.tls else 'ws'}://{LOOPBACK}:{port}"
        tls = {"cert": str(settings.certs.cert), "key": str(settings.certs.key)} if settings.tls else {}
        spec_path = settings.work / "fuzzingserver.json"
        spec_path.write_text(json.dumps(fuzzingserver_spec(url, str(outdir), cases, exclude,
                                                           **tls), indent=2), encoding="utf-8")
        # -u 0: no embedded web server (it would take a fixed port).
        wstest = processes.start(
            wstest_argv(settings, "-m", "fuzzingserver", "-s", str(spec_path), "-u", "0"),
            wstest_log, cwd=settings.work, env=child_env())
        wait_listening(port, wstest, STARTUP_TIMEOUT)
        cafile = ["--cafile", str(settings.certs.ca)] if settings.tls else []
        driver = processes.start([sys.executable, str(HERE / "client_driver.py"), url,
                                  "--agent", AGENT, *cafile],
                                 driver_log, cwd=PROJECT, env=child_env())
        status = wait_for(driver, deadline, "client", wstest_log_path)
        if status != 0:
            raise RunError(f"client: the driver exited with status {status}; see {driver_log_path}")
    return summarise(load_results(outdir / "index.json"))


# ---- command line -----------------------------------------------------------

def default_home() -> Path:
    """Where install.sh puts the suite: $AUTOBAHN_HOME, else .autobahn/ in the project."""
    return Path(os.environ.get("AUTOBAHN_HOME") or PROJECT / ".autobahn")


def ensure_installed(home: Path) -> Path:
    """The suite's Python 2.7, installing the suite first when it is missing."""
    python = home / "venv" / "bin" / "python"
    stamp = home / "venv" / f".autobahntestsuite-{SUITE_VERSION}"
    if not stamp.exists():
        env = dict(os.environ, AUTOBAHN_HOME=str(home))
        if subprocess.run(["bash", str(HERE / "install.sh")], env=env).returncode != 0:
            raise SystemExit(2)
    return python


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every child is stopped on the way out."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/autobahn/run.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="full")
    parser.add_argument("--side", choices=("both", "server", "client"), default="both")
    parser.add_argument("--transport", choices=("both", "plain", "tls"), default="both",
                        help="ws:// (plain), wss:// (tls), or one after the other (default)")
    parser.add_argument("--reports", type=Path, default=PROJECT / "reports" / "autobahn",
                        help="where the reports go (default: reports/autobahn)")
    parser.add_argument("--autobahn-home", type=Path, default=default_home(),
                        help="where the suite is installed (default: $AUTOBAHN_HOME or .autobahn)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds allowed for each side (default: 1200 full, 240 quick)")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    python = ensure_installed(args.autobahn_home.resolve())
    sides = ["server", "client"] if args.side == "both" else [args.side]
    transports = ["plain", "tls"] if args.transport == "both" else [args.transport]
    runners = {"server": run_server_side, "client": run_client_side}
    passed = True
    reports: list[Path] = []
    try:
        with tempfile.TemporaryDirectory(prefix="rawws-autobahn-") as work:
            plain = Settings(args.mode, python, args.reports.resolve(), Path(work),
                             args.time_limit or TIME_LIMITS[args.mode])
            for transport in transports:
                settings = plain
                if transport == "tls":
                    try:
                        certs = make_certificates(Path(work) / "certs")
                    except (OSError, RuntimeError) as error:
                        print(f"tls: no certificates, no TLS pass: {error}", flush=True)
                        passed = False
                        continue
                    settings = Settings(plain.mode, plain.wstest_python, plain.reports,
                                        plain.work, plain.time_limit, certs)
                for side in sides:
                    name = f"{side} (wss)" if settings.tls else side
                    started = time.monotonic()
                    try:
                        summary = runners[side](settings)
                    except (RunError, OSError, KeyError, ValueError) as error:
                        print(f"{name}: did not complete: {error}", flush=True)
                        passed = False
                        continue
                    reports.append(settings.outdir(side) / "index.html")
                    print(summary_line(name, summary, time.monotonic() - started), flush=True)
                    for line in detail_lines(summary):
                        print(line, flush=True)
                    passed = passed and summary.passed
    except KeyboardInterrupt:
        print("interrupted; every child process was stopped", file=sys.stderr)
        return 130
    print(f"reports: {', '.join(map(str, reports)) or 'none'}", flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
