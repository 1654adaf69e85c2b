"""Building and running the C load generator (`benchmarks/loadgen/loadgen.c`)."""
from __future__ import annotations

import json
import select
import shutil
import subprocess
import time
from pathlib import Path

from . import BENCH_DIR, REPO_ROOT
from .procs import pin_to

SOURCE = BENCH_DIR / "loadgen" / "loadgen.c"
BINARY = REPO_ROOT / "build" / "loadgen"
CFLAGS = ["-O2", "-Wall", "-Wextra"]
TLS_FLAGS = (["-DWITH_TLS"], ["-lssl", "-lcrypto"])   # OpenSSL's headers: Debian's libssl-dev


def build(binary: Path = BINARY, *, force: bool = False) -> Path:
    """Compile the load generator with gcc (or cc) when it is missing or older than its
    source: with TLS when OpenSSL's headers are there, else without (the TLS cases are
    then skipped, `has_tls`)."""
    if not force and binary.exists() and binary.stat().st_mtime >= SOURCE.stat().st_mtime:
        return binary
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("no C compiler (gcc or cc) to build the load generator")
    binary.parent.mkdir(parents=True, exist_ok=True)
    define, libraries = TLS_FLAGS
    built = subprocess.run([compiler, *CFLAGS, *define, "-o", str(binary), str(SOURCE),
                            *libraries], capture_output=True, text=True, timeout=120)
    if built.returncode != 0:
        built = subprocess.run([compiler, *CFLAGS, "-o", str(binary), str(SOURCE)],
                               capture_output=True, text=True, timeout=120)
    if built.returncode != 0:
        raise RuntimeError(f"building the load generator failed:\n{built.stderr}")
    return binary


def has_tls(binary: Path) -> bool:
    """Whether this build of the generator speaks TLS (`loadgen features`)."""
    done = subprocess.run([str(binary), "features"], capture_output=True, text=True, timeout=30)
    try:
        return done.returncode == 0 and json.loads(done.stdout).get("tls") is True
    except ValueError:
        return False


def parse_report(stdout: str) -> dict:
    """The last JSON object line the generator printed."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"the load generator printed no result: {stdout[-300:]!r}")


def run(binary: Path, mode: str, port: int, args: list[str], *, cpu: int | None,
        timeout: float) -> dict:
    """One bounded run; the generator's own --timeout is set below ours."""
    argv = [str(binary), mode, "--port", str(port), *args, "--timeout", f"{timeout:g}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30,
                          preexec_fn=pin_to(cpu))
    if done.returncode not in (0, 1):   # 1: it ran and counted errors, in the report
        raise RuntimeError(f"load generator exit {done.returncode}: {done.stderr.strip()[-300:]}")
    return parse_report(done.stdout)


class IdleConnections:
    """`loadgen idle`: N open WebSockets held until release() (or the hold time) ends them."""

    def __init__(self, binary: Path, port: int, conns: int, *, cpu: int | None,
                 timeout: float, extra: tuple[str, ...] = ()) -> None:
        self.timeout = timeout
        self.process = subprocess.Popen(
            [str(binary), "idle", "--port", str(port), "--conns", str(conns),
             "--hold", f"{timeout:g}", "--timeout", f"{timeout + 30:g}", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=pin_to(cpu))

    def wait_ready(self) -> dict:
        """Block until every connection is open (the "ready" line)."""
        stop = time.monotonic() + self.timeout
        stdout = self.process.stdout
        while time.monotonic() < stop:
            ready, _, _ = select.select([stdout], [], [], max(0.0, stop - time.monotonic()))
            if not ready:
                break
            line = stdout.readline().decode()
            if not line:
                break
            report = json.loads(line)
            if report.get("event") == "ready":
                return report
            return report   # the final report: the generator gave up before "ready"
        self.kill()
        raise RuntimeError("idle connections were not all open in time")

    def release(self) -> dict:
        """Close every connection (Close handshakes) and return the generator's report."""
        try:
            out, err = self.process.communicate(b"\n", timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError("the load generator did not finish closing") from None
        return parse_report(out.decode())

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
