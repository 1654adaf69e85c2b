"""A real nginx for tests, running deploy/nginx.conf in front of test backends.

    from tests.nginx_server import nginx   # the fixture

    def test_something(nginx):
        proxy = nginx([port_a, port_b], root)   # listening on proxy.port
        proxy.url                               # "http://127.0.0.1:PORT/"

The site file deploy/nginx.conf is used as written, except its three marked
lines (`# backend`, `# listen`, `# root`), replaced with the test's ports and
web root; a minimal main configuration around it keeps the pid file, logs
and temporary files in a temporary directory. Without Debian's nginx the
test is skipped, except under CI=true (.ci/run installs it).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

try:
    from tests.redis_server import free_port
except ImportError:
    from redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "deploy" / "nginx.conf"
START_TIMEOUT = 10.0


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def render_site(backends: list[int], port: int, root: Path) -> str:
    """deploy/nginx.conf with the test's backends, port and web root."""
    out: list[str] = []
    backends_written = False
    for line in SITE.read_text().splitlines():
        mark = line.rsplit("#", 1)[-1].strip() if "#" in line else ""
        indent = line[:len(line) - len(line.lstrip())]
        if mark == "backend":
            if not backends_written:
                out += [f"{indent}server 127.0.0.1:{backend} max_fails=1 fail_timeout=5s;"
                        for backend in backends]
                backends_written = True
        elif mark == "listen":
            out.append(f"{indent}listen 127.0.0.1:{port};")
        elif mark == "root":
            out.append(f"{indent}root {root};")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


class NginxServer:
    def __init__(self, binary: str, directory: Path, backends: list[int], root: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        (directory / "site.conf").write_text(render_site(backends, self.port, root))
        user = "user root;\n" if os.geteuid() == 0 else ""
        main = f"""{user}daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    access_log {directory}/access.log;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    include {directory}/site.conf;
}}
"""
        (directory / "nginx.conf").write_text(main)
        check = subprocess.run([binary, "-t", "-p", str(directory), "-c",
                                str(directory / "nginx.conf")], capture_output=True, text=True)
        assert check.returncode == 0, f"nginx -t refused the configuration:\n{check.stderr}"
        self.process = subprocess.Popen(
            [binary, "-p", str(directory), "-c", str(directory / "nginx.conf")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"nginx did not start: {self.error_log()}")
                time.sleep(0.05)

    def error_log(self) -> str:
        try:
            return (self.directory / "error.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)   # graceful
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def nginx(tmp_path_factory):
    """Factory: nginx(backend_ports, web_root) -> a running NginxServer, stopped after the test."""
    binary = nginx_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is not installed (CI=true: .ci/run should have installed it)")
        pytest.skip("nginx is not installed (Debian: apt-get install nginx)")
    started: list[NginxServer] = []

    def start(backends: list[int], root: Path) -> NginxServer:
        server = NginxServer(binary, tmp_path_factory.mktemp("nginx"), backends, root)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
