"""`python -m bench [--quick] [NAME ...]`: run the benchmarks and print a table."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import traceback

from .broadcast import bench_broadcast
from .compare import bench_compare
from .core import Benchmark, Config, Result, table_header, table_row
from .echo import bench_echo
from .micro import bench_encode, bench_mask, bench_parse

BENCHMARKS: dict[str, tuple[Benchmark, str]] = {
    "mask": (bench_mask, "mask() throughput by payload size, against a per-byte loop"),
    "parse": (bench_parse, "receive_data(): small frames, 1 MiB frames, one byte at a time"),
    "encode": (bench_encode, "encode_frame() and send_text(), server and client"),
    "echo": (bench_echo, "round trips to python -m rawws.echo over loopback"),
    "broadcast": (bench_broadcast, "one message to 1000 clients; memory per connection"),
    "compare": (bench_compare, "optional: websockets package, Node's WebSocket client"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true",
                        help="small counts and budgets: a smoke check in a few seconds")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--json", metavar="FILE", help="also write the rows to FILE as JSON")
    args = parser.parse_args(argv)

    if args.list:
        for name, (_, description) in BENCHMARKS.items():
            print(f"{name:<10} {description}")
        return 0
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; "
                     f"choose from {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    config = Config(quick=args.quick)

    print(f"rawws benchmarks, {datetime.date.today()}: Python {platform.python_version()}, "
          f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
          f", load average {os.getloadavg()[0]:.1f}{', --quick' if args.quick else ''}")
    print(table_header())
    rows: list[Result] = []
    failed = False
    started = time.monotonic()
    for name in names:
        benchmark, _ = BENCHMARKS[name]
        try:
            for result in benchmark(config):
                rows.append(result)
                print(table_row(result), flush=True)
        except Exception as error:   # report and go on: one broken benchmark spoils no others
            failed = True
            row = Result(f"{name}: error", None, "", f"{type(error).__name__}: {error}")
            rows.append(row)
            print(table_row(row), flush=True)
            traceback.print_exc(file=sys.stderr)
    print(f"\n{len(rows)} rows in {time.monotonic() - started:.0f} s; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as output:
            json.dump([{"name": row.name, "figure": row.figure, "unit": row.unit,
                        "notes": row.notes} for row in rows], output, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
