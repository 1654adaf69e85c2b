"""`python -m benchmarks [--quick] [--only SCENARIO ...]`: rawws beside its peers, in one run.

`make bench` runs it in full (3 repeats) and writes benchmarks/results.md and
benchmarks/results.json; `make bench-quick` runs a small subset once and
writes build/bench-quick.md and .json instead, leaving the committed report alone.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import BENCH_DIR, REPO_ROOT, loadgen, report
from .procs import cores, pin_to, raise_fd_limit
from .runner import Run, run_all
from .scenarios import SCENARIO_TITLES, Case, cases
from .targets import bench_python, discover

SCENARIOS = ("echo", "throughput", "masking", "fanout", "idle", "handshakes", "tls", "micro")
TLS_DIR = REPO_ROOT / "build" / "bench-tls"


def tls_files(binary: Path) -> tuple[tuple[str, str] | None, str]:
    """The certificate and key the servers use over TLS, made for this run (tests/tls_certs.py,
    the `openssl` command), or None and why the TLS cases are skipped."""
    if not loadgen.has_tls(binary):
        return None, "the load generator was built without TLS (install libssl-dev)"
    spec = importlib.util.spec_from_file_location("rawws_tls_certs",
                                                  REPO_ROOT / "tests" / "tls_certs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        certs = module.make_certificates(TLS_DIR)
    except (OSError, RuntimeError) as error:
        return None, f"no certificate: {error}"
    return (str(certs.cert), str(certs.key)), "P-256 ECDSA certificate, made for the run"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def memory_total() -> str:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return "?"


def first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else ""


def run_json_tool(argv: list[str], cpu: int | None, timeout: float) -> object:
    """Run an in-process benchmark module in a pinned subprocess; its stdout is JSON."""
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=pin_to(cpu))
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-400:])
    return json.loads(done.stdout)


def progress(case: Case, run: Run) -> None:
    if run.error:
        result = f"FAILED: {run.error[:160]}"
    else:
        extra = []
        if run.report.get("loadgen_cpu") is not None:
            extra.append(f"generator {100 * run.report['loadgen_cpu']:.0f}%")
        if run.server_cpu is not None:
            extra.append(f"server {100 * run.server_cpu:.0f}%")
        if run.report.get("p99_us") is not None:
            extra.append(f"p50 {run.report['p50_us']:,.0f} µs, p99 {run.report['p99_us']:,.0f} µs")
        result = f"{report.format_figure(run.figure)} {case.unit}  ({', '.join(extra)})"
    print(f"  {case.key:<34} {run.server:<10} #{run.repeat + 1}  {result}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke check: fewer cases, 1 repeat, shorter runs")
    parser.add_argument("--repeats", type=int, help="runs per server and case (default 3; quick 1)")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, metavar="SCENARIO",
                        help=f"run only these: {', '.join(SCENARIOS)}")
    parser.add_argument("--servers", nargs="+", metavar="KEY",
                        help="only these servers: rawws rawws-pure rawws-base websockets aiohttp picows ws")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="where results.md/.json go (default: benchmarks/, quick: build/)")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="also run rawws from this checkout (an older commit), as 'rawws-base'")
    parser.add_argument("--list", action="store_true", help="list the cases and servers, then exit")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    selected = set(args.only or SCENARIOS)
    if args.quick:
        selected.discard("micro")
    case_list = [case for case in cases(args.quick) if case.scenario in selected]
    servers = discover(args.servers, args.baseline)
    if args.list:
        for case in case_list:
            print(f"{case.key:<36} {case.unit:<14} loadgen {case.mode} {' '.join(case.args)}")
        for server in servers:
            print(f"{server.label:<12} {server.skipped or server.version}")
        return 0

    started = time.monotonic()
    raise_fd_limit()
    cpus = cores()
    binary = loadgen.build()
    tls, tls_note = (None, "")
    if any(case.tls for case in case_list):
        tls, tls_note = tls_files(binary)
        print(f"TLS cases: {tls_note}{'' if tls else ' (skipped)'}", flush=True)
    load_before = os.getloadavg()[0]
    print(f"rawws benchmarks: {cpu_model()}, {os.cpu_count()} CPUs, load average "
          f"{load_before:.2f}; server on CPU {cpus[0]}, load on CPU {cpus[1]}; "
          f"{repeats} repeat(s){', quick' if args.quick else ''}")
    for server in servers:
        print(f"  {server.label:<12} {server.skipped and 'skipped: ' + server.skipped or server.version}")

    masking_raw: dict = {}
    if "masking" in selected:
        print(SCENARIO_TITLES["masking"], flush=True)
        python = bench_python() or sys.executable
        try:
            masking_raw = run_json_tool(
                [python, "-m", "benchmarks.masking", "--rounds", str(3 * repeats),
                 "--round-time", "0.1" if args.quick else "0.2"], cpus[0], 300)
        except Exception as error:   # the socket scenarios still run
            print(f"  masking FAILED: {error}", flush=True)

    runs = run_all(case_list, servers, repeats, binary, cpus, progress, tls)

    micro = None
    if "micro" in selected:
        print("rawws alone: parsing and encoding in-process", flush=True)
        try:
            micro = run_json_tool([sys.executable, "-m", "benchmarks.micro"], cpus[0], 600)
        except Exception as error:
            print(f"  micro FAILED: {error}", flush=True)

    summary = report.summarize(runs)
    masking = report.summarize_masking(masking_raw)
    targets = report.evaluate_targets(summary, masking, case_list)
    checks = report.loadgen_check(summary, case_list, servers)
    compiler = first_line([shutil.which("gcc") or "cc", "--version"])
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "make bench-quick" if args.quick else "make bench",
        "quick": args.quick, "repeats": repeats,
        "cpu": cpu_model(), "cores": os.cpu_count(), "memory": memory_total(),
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "pinning": (f"servers and in-process benchmarks on CPU {cpus[0]}, the load generator "
                    f"on CPU {cpus[1]}" if cpus[0] is not None else "none (fewer than 2 CPUs)"),
        "compiler": compiler,
        "python": platform.python_version(),
        "bench_python": first_line([bench_python(), "-c", "import platform; "
                                    "print(platform.python_version())"]) if bench_python() else None,
        "versions": {server.key: server.skipped and f"skipped: {server.skipped}" or server.version
                     for server in servers},
        "tls": tls_note if any(case.tls for case in case_list) else None,
        "tls_servers": [server.label for server in servers if server.tls and not server.skipped],
        "load_before": load_before, "load_after": os.getloadavg()[0],
        "elapsed_s": time.monotonic() - started,
    }
    print()
    print(report.terminal_report(meta, case_list, servers, summary, masking, targets))

    out_dir = args.out or (REPO_ROOT / "build" if args.quick else BENCH_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "bench-quick" if args.quick and args.out is None else "results"
    markdown_path, json_path = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    markdown_path.write_text(report.markdown_report(meta, case_list, servers, summary, masking,
                                                    targets, checks, micro), encoding="utf-8")
    report.write_json(json_path, meta, runs, summary, masking_raw, masking, targets, checks, micro)
    print(f"\nwrote {markdown_path.relative_to(REPO_ROOT) if markdown_path.is_relative_to(REPO_ROOT) else markdown_path}"
          f" and {json_path.name} in {meta['elapsed_s']:.0f} s")
    rawws_failed = [run for run in runs if run.server == "rawws" and run.error]
    return 1 if rawws_failed else 0


if __name__ == "__main__":
    sys.exit(main())
