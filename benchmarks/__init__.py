"""`make bench`: rawws measured beside websockets, aiohttp, picows and Node's `ws` in one run.

- `loadgen/loadgen.c`: the load generator, in C (epoll, one core), built into `build/`.
- `servers/`: the reference servers, each a few lines written the way its
  library documents; rawws's own are `python -m rawws.echo` and `python -m chat`.
- `targets.py`: which servers exist here (references live in `.bench-venv`
  and `benchmarks/node/node_modules`; a missing one is reported as skipped).
- `scenarios.py`: the cases; `runner.py`: runs them alternately
  (A B C A B C...), server and load pinned to different cores, and checks
  the server's memory after each run; `report.py`: the terminal table,
  `benchmarks/results.md` and `benchmarks/results.json`.
- `masking.py`, `micro.py`: in-process figures (masking for every
  implementation; rawws's parser and encoder alone).

Everything talks to 127.0.0.1 only, and every loop is bounded in count and time.
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "benchmarks"
HOST = "127.0.0.1"
