"""`GET /healthz`: what a load balancer's health check asks.

    {"status":"ok","connections":12,"users":10,"roomUsers":31,"backplane":"up",
     "server":"host:1234:a1b2c3"}

`connections` are this server's open chat WebSockets, `users` those of them
that joined, `roomUsers` everyone in the room (every server's, with a
backplane), `backplane` is "up", "down" or "off" (no --backplane). The
answer is 200, or 503 with `"status":"backplane-down"` while the backplane is
down when `--healthz-fail-when-down` asks for it (off by default: a server
whose Redis is away still serves its own users).

It sits in front of the web root's file server: every other path goes on to it.
"""
from __future__ import annotations

import json

from rawws.http import Request

HEALTH_PATH = "/healthz"


class HealthCheck:
    """The server's `files`, with /healthz answered first."""

    def __init__(self, files, app, *, fail_when_down: bool = False) -> None:
        self.files = files
        self.app = app
        self.fail_when_down = fail_when_down

    def status(self) -> dict:
        room = self.app.room
        state = room.backplane.state
        return {"status": "ok" if state != "down" else "backplane-down",
                "connections": len(room), "users": len(room.local_users),
                "roomUsers": len(room.users), "backplane": state, "server": room.server_id}

    def respond(self, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        if request.target.split("?", 1)[0] != HEALTH_PATH or request.method not in ("GET", "HEAD"):
            return self.files.respond(request)
        status = self.status()
        code = 503 if self.fail_when_down and status["backplane"] == "down" else 200
        body = (json.dumps(status, separators=(",", ":")) + "\n").encode()
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                   ("Content-Length", str(len(body)))]
        return code, headers, body if request.method == "GET" else b""
