"""The cases `make bench` measures (issue 8's scenarios 1, 2, 4, 5 and 6; 3 is masking.py;
7 is issue 15's: the same loads over TLS).

Each case names the server kind it needs (echo or chat), the load generator's
mode and arguments, and the figure taken from its report.
"""
from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Case:
    """One row of the report: measured for every server, R times, alternately."""

    scenario: str             # echo, throughput, fanout, idle, handshakes
    name: str                 # e.g. "32 B, 64 conns"
    kind: str                 # which server: "echo" or "chat"
    mode: str                 # the load generator's mode
    args: tuple[str, ...]     # its arguments (all but --port and --timeout)
    metric: str               # the figure: a key of the generator's report, or rss_per_conn_kib
    unit: str
    higher_is_better: bool = True
    timeout: float = 120.0    # seconds for the whole load generator run
    conns: int = 0            # idle: how many connections
    tls: bool = False         # over TLS: the servers get the bench certificate, loadgen --tls
    plain: str | None = None  # tls: the key of its plain twin (the same load without TLS)
    tls_pair: bool = False    # measured only on the servers that also run over TLS

    @property
    def key(self) -> str:
        return f"{self.scenario}: {self.name}"


def size_name(size: int) -> str:
    if size >= MiB and size % MiB == 0:
        return f"{size // MiB} MiB"
    if size >= KiB and size % KiB == 0:
        return f"{size // KiB} KiB"
    return f"{size} B"


SCENARIO_TITLES = {
    "echo": "1. Echo round trips (one message in flight per connection)",
    "throughput": "2. Throughput (binary echo, one connection, one message in flight)",
    "masking": "3. Masking and unmasking alone (in-process, CPU time)",
    "fanout": "4. Chat fan-out (beej-chat-protocol v1, one sender)",
    "idle": "5. Idle connections (server RSS per open WebSocket)",
    "handshakes": "6. Connection setup (open, handshake, Close, in a loop)",
    "tls": "7. Over TLS (wss://): echo, throughput, fan-out, connection setup, idle",
}


def cases(quick: bool = False) -> list[Case]:
    """Every case of a full run, or the quick run's small subset."""
    duration = "1.0" if quick else "2.0"
    warmup = "0.3" if quick else "0.5"
    out: list[Case] = []
    echo_conns = (1, 64) if quick else (1, 10, 64, 100)
    echo_sizes = (32,) if quick else (32, KiB)
    for size in echo_sizes:
        for conns in echo_conns:
            out.append(Case("echo", f"{size_name(size)} text, {conns} conn{'s' * (conns > 1)}",
                            "echo", "echo",
                            ("--conns", str(conns), "--size", str(size), "--duration", duration,
                             "--warmup", warmup),
                            "round_trips_per_s", "round trips/s"))
    # Issue 17's measure of the server's own latency: the generator busy-polls,
    # so no round trip waits for its wake-up.
    out.append(Case("echo", "32 B text, 1 conn, busy-poll", "echo", "echo",
                    ("--conns", "1", "--size", "32", "--duration", duration, "--warmup", warmup,
                     "--busy-poll"),
                    "round_trips_per_s", "round trips/s"))
    for size in ((MiB,) if quick else (64 * KiB, MiB, 16 * MiB)):
        seconds = duration if size < 16 * MiB else ("2.0" if quick else "4.0")
        out.append(Case("throughput", f"{size_name(size)} binary", "echo", "throughput",
                        ("--size", str(size), "--duration", seconds, "--warmup", warmup),
                        "mb_per_s", "MB/s"))
    fanout = ((100, 500),) if quick else ((100, 3000), (1000, 400))
    for receivers, messages in fanout:
        out.append(Case("fanout", f"{receivers} clients", "chat", "fanout",
                        ("--conns", str(receivers), "--messages", str(messages),
                         "--window", "10", "--duration", "8" if quick else "15",
                         # the leaves at the end are N x N/2 deliveries too: let them finish
                         "--close-timeout", "30"),
                        "deliveries_per_s", "deliveries/s", timeout=200.0))
    idle = 2000 if quick else 10_000
    out.append(Case("idle", f"{idle:,} connections", "echo", "idle", (),
                    "rss_per_conn_kib", "KiB/conn", higher_is_better=False, timeout=120.0,
                    conns=idle))
    out.append(Case("handshakes", "16 at a time", "echo", "handshakes",
                    ("--conns", "16", "--duration", duration),
                    "handshakes_per_s", "handshakes/s"))
    out += tls_cases(out, quick)
    return out


def tls_cases(plain: list[Case], quick: bool) -> list[Case]:
    """Issue 15: echo (32 B, 64 connections; 1 MiB), fan-out, handshakes and idle, over TLS.

    Each TLS case follows its plain twin (the same load without `--tls`, on the
    servers that have TLS), measured just before it: what TLS costs is the
    ratio of the two, and a ratio only means something between figures taken
    minutes apart on this shared machine, not at either end of the run."""
    wanted = {"echo: 32 B text, 64 conns": ("echo 32 B text, 64 conns",) * 2,
              "throughput: 1 MiB binary": ("throughput 1 MiB binary",) * 2,
              "fanout: 100 clients": ("fan-out, 100 clients",) * 2,
              "handshakes: 16 at a time": ("WebSocket handshakes, 16 at a time",
                                           "TLS + WebSocket handshakes, 16 at a time")}
    out = []
    for case in plain:
        if case.key not in wanted:
            continue
        plain_name, name = wanted[case.key]
        twin = Case("tls", f"{plain_name}, plain TCP", case.kind, case.mode, case.args,
                    case.metric, case.unit, case.higher_is_better, case.timeout, tls_pair=True)
        out.append(twin)
        out.append(Case("tls", name, case.kind, case.mode, (*case.args, "--tls"), case.metric,
                        case.unit, case.higher_is_better, case.timeout, tls=True,
                        plain=twin.key, tls_pair=True))
    conns = 2000 if quick else 5000
    out.append(Case("tls", f"idle, {conns:,} connections", "echo", "idle", ("--tls",),
                    "rss_per_conn_kib", "KiB/conn", higher_is_better=False, timeout=120.0,
                    conns=conns, tls=True, tls_pair=True))
    return out
