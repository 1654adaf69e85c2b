"""The servers measured: rawws's own and the references, with how to start each and its version."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import BENCH_DIR, REPO_ROOT

BENCH_VENV = REPO_ROOT / ".bench-venv"
NODE_DIR = BENCH_DIR / "node"
SERVERS_DIR = BENCH_DIR / "servers"
MAX_MESSAGE = 32 * 1024 * 1024   # the same for every echo server: room for 16 MiB messages


@dataclass(frozen=True)
class Server:
    """One implementation: the command lines of its echo and chat servers, or why it is skipped."""

    key: str                 # rawws, websockets, aiohttp, picows, ws
    label: str               # as the tables name it
    version: str = ""
    echo: tuple[str, ...] | None = None
    chat: tuple[str, ...] | None = None
    skipped: str | None = None
    tls: bool = False        # its servers take --certfile and --keyfile

    def command(self, kind: str, tls: tuple[str, str] | None = None) -> tuple[str, ...] | None:
        """The command line of its `kind` server; with `tls` (certificate, key), over TLS,
        or None when it has no TLS server here."""
        command = self.echo if kind == "echo" else self.chat
        if tls is None or command is None:
            return command
        if not self.tls:
            return None
        return (*command, "--certfile", tls[0], "--keyfile", tls[1])


def rawws_server(python: str = sys.executable) -> Server:
    version = "?"
    for line in (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8").splitlines():
        if line.startswith("version"):
            version = line.split("=", 1)[1].strip().strip('"')
    commit = _output(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    if commit:
        dirty = _output(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "rawws",
                         "chat"])
        version += f" ({commit}{' + uncommitted changes' if dirty else ''})"
    echo = (python, "-m", "rawws.echo", "--port", "0", "--max-message-size", str(MAX_MESSAGE))
    # The fan-out sender must not be rate-limited or kicked: --rate 0 turns the limit off.
    chat = (python, "-m", "chat", "--port", "0", "--rate", "0", "--flood-kick", "0",
            "--log-level", "WARNING")
    return Server("rawws", "rawws", version, echo, chat, tls=True)


def rawws_pure(python: str = sys.executable) -> Server:
    """rawws with RAWWS_PURE_PYTHON=1: the masking in pure Python even where the C is built."""
    base = rawws_server(python)
    env = ("env", "RAWWS_PURE_PYTHON=1")
    return Server("rawws-pure", "rawws pure", base.version + ", pure Python",
                  (*env, *base.echo), (*env, *base.chat))


def rawws_baseline(directory: Path, python: str = sys.executable) -> Server:
    """rawws from another checkout (an older commit), run beside this one in the same run.

    Its packages are put first on sys.path, ahead of this checkout's editable install.
    """
    commit = _output(["git", "-C", str(directory), "rev-parse", "--short", "HEAD"]) or "?"
    boot = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
            "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)")
    start = (python, "-c", boot, str(directory))
    echo = (*start, "rawws.echo", "--port", "0", "--max-message-size", str(MAX_MESSAGE))
    chat = (*start, "chat", "--port", "0", "--rate", "0", "--flood-kick", "0",
            "--log-level", "WARNING")
    return Server("rawws-base", "rawws before", commit, echo, chat)


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def python_references(venv: Path = BENCH_VENV) -> list[Server]:
    python = venv / "bin" / "python"
    found: dict[str, str] = {}
    if python.exists():
        probe = _output([str(python), "-c",
                         "import importlib.metadata as m, importlib.util as u, json\n"
                         "print(json.dumps({n: m.version(n) for n in "
                         "('websockets', 'aiohttp', 'picows') if u.find_spec(n)}))"])
        found = json.loads(probe) if probe.startswith("{") else {}
    servers = []
    for key in ("websockets", "aiohttp", "picows"):
        if key not in found:
            why = "no .bench-venv" if not python.exists() else f"{key} not installed in .bench-venv"
            servers.append(Server(key, key, skipped=why))
            continue
        echo = (str(python), str(SERVERS_DIR / f"{key}_echo.py"), "--port", "0")
        chat = (str(python), str(SERVERS_DIR / f"{key}_chat.py"), "--port", "0")
        # websockets and aiohttp run over TLS too (asyncio's ssl, the same module as rawws's).
        servers.append(Server(key, key, found[key], echo, chat,
                              tls=key in ("websockets", "aiohttp")))
    return servers


def node_reference(node_dir: Path = NODE_DIR) -> Server:
    node = shutil.which("node")
    if node is None:
        return Server("ws", "ws (Node)", skipped="node not found")
    package = node_dir / "node_modules" / "ws" / "package.json"
    if not package.exists():
        return Server("ws", "ws (Node)", skipped="ws not installed (npm install in benchmarks/node)")
    version = json.loads(package.read_text(encoding="utf-8"))["version"]
    node_version = _output([node, "--version"]).lstrip("v")
    echo = (node, str(SERVERS_DIR / "ws_echo.mjs"), "--port", "0")
    chat = (node, str(SERVERS_DIR / "ws_chat.mjs"), "--port", "0")
    return Server("ws", "ws (Node)", f"{version}, Node {node_version}", echo, chat)


def discover(only: list[str] | None = None, baseline: Path | None = None) -> list[Server]:
    """rawws first (and an older rawws to compare with), then every reference
    (available or skipped, with the reason)."""
    servers = [rawws_server(), rawws_pure(), *([rawws_baseline(baseline)] if baseline else []),
               *python_references(), node_reference()]
    if only:
        servers = [server for server in servers if server.key in only]
    return servers


def bench_python() -> str | None:
    """The interpreter that has the references (for the in-process masking figures)."""
    python = BENCH_VENV / "bin" / "python"
    return str(python) if python.exists() else None
