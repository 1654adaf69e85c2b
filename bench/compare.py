"""Optional comparisons with WebSocket code this project did not write.

- `websockets` (if importable here; never installed by the benchmarks): the
  echo benchmark against a `websockets` echo server, same client, same rows.
- Node's built-in WebSocket client against `python -m rawws.echo`: round-trip
  latency with a client that is not Python (and not ours).
Either is skipped, with a row saying why, when its tool is missing.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from collections.abc import Iterator

from .core import REPO_ROOT, Config, Result, ServerProcess, python_module
from .echo import echo_results, echo_server

NODE_SCRIPT = REPO_ROOT / "bench" / "node_echo_client.mjs"


def bench_websockets(config: Config) -> Iterator[Result]:
    if importlib.util.find_spec("websockets") is None:
        yield Result("websockets comparison", None, "", "websockets not installed: skipped")
        return
    import websockets
    label = f"websockets {websockets.__version__} echo"
    with ServerProcess(python_module("bench.websockets_echo")) as server:
        yield from echo_results(server.url, config, label, server)


def node_command() -> list[str] | None:
    """How to run Node with a global WebSocket, or None when there is no such Node."""
    node = shutil.which("node")
    if node is None:
        return None
    for flags in ([], ["--experimental-websocket"]):
        try:
            probe = subprocess.run([node, *flags, "-e",
                                    "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
                                   capture_output=True, timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if probe.returncode == 0:
            return [node, *flags]
    return None


def node_results(command: list[str], url: str, config: Config, label: str) -> Iterator[Result]:
    count = config.pick(5_000, 300)
    seconds = config.pick(8.0, 1.0)
    try:
        run = subprocess.run([*command, str(NODE_SCRIPT), url, str(count), str(seconds)],
                             capture_output=True, text=True, timeout=3 * seconds + 30)
    except subprocess.TimeoutExpired:
        yield Result(label, None, "", "node client timed out")
        return
    if run.returncode != 0:
        yield Result(label, None, "", f"node client failed: {run.stderr.strip()[-200:]}")
        return
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    note = f"{figures['round_trips']:,} round trips of 32 B text"
    yield Result(f"{label}: latency median", figures["median_us"], "µs", note)
    yield Result(f"{label}: latency p99", figures["p99_us"], "µs", note)
    yield Result(f"{label}: pipelined 32 B", figures["pipelined_per_second"], "msgs/s",
                 "windows of 100")


def bench_node(config: Config) -> Iterator[Result]:
    command = node_command()
    if command is None:
        yield Result("node comparison", None, "", "node with a WebSocket client not found: skipped")
        return
    version = subprocess.run([command[0], "--version"], capture_output=True, text=True,
                             timeout=15).stdout.strip().lstrip("v")
    with echo_server() as server:
        yield from node_results(command, server.url, config, f"node {version} -> rawws echo")
    if importlib.util.find_spec("websockets") is not None:
        with ServerProcess(python_module("bench.websockets_echo")) as server:
            yield from node_results(command, server.url, config,
                                    f"node {version} -> websockets echo")


def bench_compare(config: Config) -> Iterator[Result]:
    yield from bench_websockets(config)
    yield from bench_node(config)
