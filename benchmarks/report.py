"""From runs to medians, ratios and targets; the terminal table, results.md and results.json.

Only ratios measured in the same run are compared. Absolute figures are
printed, but they depend on the machine and on what else it was doing.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from .runner import Run, median
from .scenarios import SCENARIO_TITLES, Case
from .targets import Server

MASK_TARGET_MB_S = 600.0         # "masking >= 0.6 GB/s at 1 MiB pure Python"
C_MASK_TARGET_MB_S = 5000.0      # issue 17: "masking 1 MiB: at least 5 GB/s with the accelerator"
IDLE_TARGET_KIB = 7.0            # "10,000 idle <= 7 KiB RSS/conn"
MASK_SIZES = ("125", "4096", "1048576")
MASK_SIZE_NAMES = {"125": "125 B", "4096": "4 KiB", "1048576": "1 MiB"}


# ---- numbers ---------------------------------------------------------------

def format_figure(value: float | None) -> str:
    """Figures to about three significant digits; '-' for nothing measured."""
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs, or None when either is missing (or theirs is 0)."""
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def format_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


# ---- summaries ---------------------------------------------------------------

def summarize(runs: Iterable[Run]) -> dict[str, dict[str, dict]]:
    """case key -> server key -> medians over the repeats (and what failed)."""
    grouped: dict[str, dict[str, list[Run]]] = {}
    for run in runs:
        grouped.setdefault(run.case, {}).setdefault(run.server, []).append(run)
    summary: dict[str, dict[str, dict]] = {}
    for case, by_server in grouped.items():
        summary[case] = {}
        for server, group in by_server.items():
            good = [run for run in group if run.error is None]
            summary[case][server] = {
                "median": median(run.figure for run in good),
                "values": [run.figure for run in group],
                "runs": len(group),
                "failed": len(group) - len(good),
                "errors": sorted({run.error for run in group if run.error}),
                "p50_us": median(run.report.get("p50_us") for run in good),
                "p99_us": median(run.report.get("p99_us") for run in good),
                "loadgen_cpu": median(run.report.get("loadgen_cpu") for run in good),
                "server_cpu": median(run.server_cpu for run in good),
                "rss_before_kib": median(run.rss_before_kib for run in group),
                "rss_peak_kib": median(run.rss_peak_kib for run in group),
                "rss_after_kib": median(run.rss_after_kib for run in group),
                "rss_settled_kib": median(run.rss_settled_kib for run in group),
                "growing": any(run.growing for run in group),
            }
    return summary


def summarize_masking(raw: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """implementation -> size -> median MB/s."""
    return {name: {size: median(rates) for size, rates in sizes.items()}
            for name, sizes in raw.items()}


def figure(summary: dict, case: str, server: str) -> float | None:
    return summary.get(case, {}).get(server, {}).get("median")


# ---- targets (issue 8) ---------------------------------------------------------

def _target(text: str, measured: str, met: bool | None, note: str = "") -> dict:
    return {"target": text, "measured": measured, "met": met, "note": note}


def _at_least(summary: dict, case: str, reference: str, factor: float = 1.0) -> tuple[str, bool | None]:
    ours, theirs = figure(summary, case, "rawws"), figure(summary, case, reference)
    if ours is None or theirs is None:
        return f"rawws {format_figure(ours)}, {reference} {format_figure(theirs)}", None
    return (f"rawws {format_figure(ours)}, {reference} {format_figure(theirs)} "
            f"({format_ratio(ratio(ours, theirs))})", ours >= factor * theirs)


def evaluate_targets(summary: dict, masking: dict[str, dict[str, float]],
                     cases: list[Case]) -> list[dict]:
    """Each rawws target of issue 8, with what this run measured and whether it is met."""
    keys = {case.key for case in cases}
    out = []
    for conns in (1, 64):
        case = f"echo: 32 B text, {conns} conn{'s' * (conns > 1)}"
        if case in keys:
            measured, met = _at_least(summary, case, "aiohttp")
            out.append(_target(f"echo 32 B round trips/s >= aiohttp, {conns} conn"
                               f"{'s' * (conns > 1)}", measured, met))
    for size in ("1 MiB", "16 MiB"):
        case = f"throughput: {size} binary"
        if case in keys:
            measured, met = _at_least(summary, case, "websockets")
            out.append(_target(f"throughput {size} >= websockets", measured, met))
    # rawws's functions: mask() (new bytes) and mask_in_place() (big frames as they
    # arrive), on each path; the faster of the two counts for the path's target.
    for path, text, goal in (("pure Python", "masking >= 0.6 GB/s at 1 MiB, pure Python",
                              MASK_TARGET_MB_S),
                             ("C", "C masking >= 5 GB/s at 1 MiB (rawws._speedups)",
                              C_MASK_TARGET_MB_S)):
        rawws_masks = [(sizes["1048576"], name) for name, sizes in masking.items()
                       if name.startswith("rawws") and name.endswith(f"({path})")
                       and "1048576" in sizes]
        if rawws_masks:
            rawws_mask, name = max(rawws_masks)
            out.append(_target(text, f"{format_figure(rawws_mask)} MB/s ({name})",
                               rawws_mask >= goal))
        elif path == "C" and masking:
            out.append(_target(text, "not measured", None, "rawws._speedups is not built"))
    for case in sorted(key for key in keys if key.startswith("fanout:")):
        measured, met = _at_least(summary, case, "websockets", 2.0)
        clients = case.split(": ", 1)[1]
        out.append(_target(f"chat fan-out, {clients}: >= 2x websockets", measured, met))
    for case in sorted(key for key in keys if key.startswith("idle:")):
        ours = figure(summary, case, "rawws")
        full = case == "idle: 10,000 connections"
        out.append(_target("10,000 idle connections: <= 7 KiB RSS/conn",
                           f"{format_figure(ours)} KiB/conn ({case.split(': ', 1)[1]})",
                           None if ours is None else ours <= IDLE_TARGET_KIB,
                           "" if full else "measured with fewer connections (quick run)"))
    case = "handshakes: 16 at a time"
    if case in keys:
        measured, met = _at_least(summary, case, "aiohttp")
        out.append(_target("handshakes/s >= aiohttp", measured, met))
    out += tls_targets(summary, cases)
    growing = sorted(case for case, by_server in summary.items()
                     if by_server.get("rawws", {}).get("growing"))
    checked = [case for case, by_server in summary.items() if "rawws" in by_server]
    out.append(_target("no scenario leaves rawws's memory growing after the load stops",
                       "growing after: " + ", ".join(growing) if growing
                       else f"not growing in any of {len(checked)} cases",
                       None if not checked else not growing))
    return out


TLS_REFERENCES = ("websockets", "aiohttp")


def tls_targets(summary: dict, cases: list[Case]) -> list[dict]:
    """Issue 15: over TLS, rawws's ratio to each reference at least its plain-TCP ratio
    (both measured in this run), for every TLS case that mirrors a plain one."""
    out = []
    for case in cases:
        if not case.tls or case.plain is None:
            continue
        for reference in TLS_REFERENCES:
            over_tls = ratio(figure(summary, case.key, "rawws"), figure(summary, case.key, reference))
            over_tcp = ratio(figure(summary, case.plain, "rawws"),
                             figure(summary, case.plain, reference))
            met = None if over_tls is None or over_tcp is None else over_tls >= over_tcp
            out.append(_target(f"over TLS, {case.name}: rawws/{reference} >= its plain ratio",
                               f"{format_ratio(over_tls)} over TLS, {format_ratio(over_tcp)} "
                               "plain", met))
    return out


def tls_cost_table(cases: list[Case], summary: dict,
                   servers: list[Server]) -> tuple[list[str], list[list[str]]]:
    """What TLS costs each server: its figure over TLS / over plain TCP, same run."""
    tls_servers = [s for s in servers if s.tls and not s.skipped]
    header = ["case", *[f"{s.label} TLS/plain" for s in tls_servers],
              *[f"rawws/{s.label} plain" for s in tls_servers if s.key != "rawws"],
              *[f"rawws/{s.label} TLS" for s in tls_servers if s.key != "rawws"]]
    rows = []
    for case in cases:
        if not case.tls or case.plain is None:
            continue
        cells = [case.name]
        for s in tls_servers:
            cells.append(format_ratio(ratio(figure(summary, case.key, s.key),
                                            figure(summary, case.plain, s.key))))
        for key in (case.plain, case.key):
            for s in tls_servers:
                if s.key != "rawws":
                    cells.append(format_ratio(ratio(figure(summary, key, "rawws"),
                                                    figure(summary, key, s.key))))
        rows.append(cells)
    return header, rows


# ---- is the load generator the limit? ---------------------------------------------

def loadgen_check(summary: dict, cases: list[Case], servers: list[Server]) -> list[dict]:
    """Per case: the fastest reference and rawws, with the generator's CPU share for each."""
    rows = []
    for case in cases:
        if case.mode == "idle" or case.key not in summary:
            continue
        by_server = summary[case.key]
        references = [(by_server[s.key]["median"], s) for s in servers
                      if s.key != "rawws" and s.key in by_server
                      and by_server[s.key]["median"] is not None]
        if not references:
            continue
        best, fastest = max(references, key=lambda pair: pair[0])
        ours = by_server.get("rawws", {})
        rows.append({
            "case": case.key, "unit": case.unit,
            "fastest": fastest.label, "fastest_figure": best,
            "fastest_loadgen_cpu": by_server[fastest.key]["loadgen_cpu"],
            "fastest_server_cpu": by_server[fastest.key]["server_cpu"],
            "rawws_figure": ours.get("median"),
            "rawws_loadgen_cpu": ours.get("loadgen_cpu"),
            "rawws_server_cpu": ours.get("server_cpu"),
            "drove_faster": ours.get("median") is not None and best > ours["median"],
        })
    return rows


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


# ---- tables ---------------------------------------------------------------------

def figure_cell(entry: dict | None) -> str:
    if entry is None:
        return "-"
    text = format_figure(entry["median"])
    if entry["failed"]:
        text += f" ({entry['failed']}/{entry['runs']} failed)"
    return text


def case_table(case_list: list[Case], summary: dict, servers: list[Server]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: the median figure per server, then rawws / each reference."""
    refs = [s for s in servers if s.key != "rawws"]
    header = ["case", "unit", *[s.label for s in servers], *[f"rawws/{s.label}" for s in refs]]
    rows = []
    for case in case_list:
        by_server = summary.get(case.key, {})
        ours = by_server.get("rawws", {}).get("median")
        cells = [case.name, case.unit]
        for s in servers:
            cells.append("skipped" if s.skipped else figure_cell(by_server.get(s.key)))
        for s in refs:
            cells.append(format_ratio(ratio(ours, by_server.get(s.key, {}).get("median"))))
        rows.append(cells)
    return header, rows


def latency_table(case_list: list[Case], summary: dict, servers: list[Server],
                  unit: str = "µs") -> tuple[list[str], list[list[str]]]:
    """p50 / p99 per server."""
    header = ["case", *[f"{s.label} p50/p99 {unit}" for s in servers if not s.skipped]]
    rows = []
    for case in case_list:
        cells = [case.name]
        for s in servers:
            if s.skipped:
                continue
            entry = summary.get(case.key, {}).get(s.key)
            if entry is None or entry["p50_us"] is None:
                cells.append("-")
                continue
            scale = 1000.0 if unit == "ms" else 1.0
            cells.append(f"{format_figure(entry['p50_us'] / scale)} / "
                         f"{format_figure(entry['p99_us'] / scale)}")
        rows.append(cells)
    return header, rows


def memory_table(cases: list[Case], summary: dict, servers: list[Server]) -> tuple[list[str], list[list[str]]]:
    header = ["case", "server", "RSS before MiB", "peak MiB", "0.3 s after MiB",
              "1 s after MiB", "still growing?"]
    rows = []
    for case in cases:
        for s in servers:
            entry = summary.get(case.key, {}).get(s.key)
            if entry is None:
                continue
            mib = [None if entry[k] is None else entry[k] / 1024 for k in
                   ("rss_before_kib", "rss_peak_kib", "rss_after_kib", "rss_settled_kib")]
            rows.append([case.key, s.label, *[format_figure(v) for v in mib],
                         "YES" if entry["growing"] else "no"])
    return header, rows


def masking_table(masking: dict[str, dict[str, float]]) -> tuple[list[str], list[list[str]]]:
    """Every implementation's MB/s, and rawws's mask() on each of its paths against it."""
    ours = {name: sizes for name, sizes in masking.items()
            if name in ("rawws (pure Python)", "rawws (C)")}
    header = ["implementation", *[f"{MASK_SIZE_NAMES[s]} MB/s" for s in MASK_SIZES],
              *[f"{name}/it at 1 MiB" for name in ours]]
    rows = []
    for name, sizes in masking.items():
        rows.append([name, *[format_figure(sizes.get(s)) for s in MASK_SIZES],
                     *[format_ratio(ratio(mine.get("1048576"), sizes.get("1048576")))
                       for mine in ours.values()]])
    return header, rows


def render_text(header: list[str], rows: list[list[str]]) -> str:
    """A plain aligned table: first column left, the others right."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(cell).ljust(width) if index == 0 else str(cell).rjust(width)
                         for index, (cell, width) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(header), "  ".join("-" * width for width in widths),
                      *[line(row) for row in rows]])


def render_markdown(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"
    align = ["---"] + ["---:"] * (len(header) - 1)
    return "\n".join([line(header), line(align), *[line(row) for row in rows]])


def scenario_groups(cases: list[Case], masking: bool = False) -> list[tuple[str, list[Case]]]:
    """Cases by scenario, in the issue's order; masking (no cases, in-process) in its place."""
    groups: dict[str, list[Case]] = {}
    for case in cases:
        groups.setdefault(case.scenario, []).append(case)
    if masking:
        groups["masking"] = []
    return [(name, groups[name]) for name in SCENARIO_TITLES if name in groups]


# ---- the whole report -----------------------------------------------------------------

def terminal_report(meta: dict, cases: list[Case], servers: list[Server], summary: dict,
                    masking: dict, targets: list[dict]) -> str:
    parts = [f"rawws benchmarks {meta['date']}: {meta['cpu']}, {meta['cores']} cores, "
             f"load average {meta['load_before']:.2f} -> {meta['load_after']:.2f}, "
             f"{meta['repeats']} repeat(s), medians"]
    for scenario, group in scenario_groups(cases, bool(masking)):
        if scenario == "masking":
            parts += ["", SCENARIO_TITLES[scenario], render_text(*masking_table(masking))]
            continue
        shown = [s for s in servers if s.tls] if scenario == "tls" else servers
        parts += ["", SCENARIO_TITLES[scenario], render_text(*case_table(group, summary, shown))]
        if scenario == "tls":
            parts.append(render_text(*tls_cost_table(group, summary, servers)))
        if scenario in ("echo", "fanout"):
            parts.append(render_text(*latency_table(group, summary, servers,
                                                    "ms" if scenario == "fanout" else "µs")))
    parts += ["", "Targets (issues 8 and 15):"]
    for target in targets:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
        parts.append(f"  [{verdict:>12}] {target['target']}: {target['measured']}")
    return "\n".join(parts)


def markdown_report(meta: dict, cases: list[Case], servers: list[Server], summary: dict,
                    masking: dict, targets: list[dict], checks: list[dict],
                    micro: list[list] | None) -> str:
    out = ["# rawws benchmark results", "",
           f"Written by `{meta['command']}` on {meta['date']} ({meta['elapsed_s']:.0f} s). "
           "Regenerate with `make bench`; `make bench-quick` is a smoke check and "
           "does not write this file unless asked.", "",
           "**Compare ratios, not absolute figures.** Every server was measured in this one "
           "run on this one machine, alternately (A B C A B C...), and each figure is the "
           f"median of {meta['repeats']} run(s). The machine is a shared 2-core VM: other "
           "engineers' tests ran on it at the same time (load average "
           f"{meta['load_before']:.2f} at the start, {meta['load_after']:.2f} at the end), so "
           "absolute figures move from run to run, and p99 latencies include the time the "
           "server spent descheduled.", "",
           "## Machine and versions", "",
           f"- CPU: {meta['cpu']} ({meta['cores']} cores); memory {meta['memory']}; "
           f"{meta['kernel']}",
           f"- Pinning: {meta['pinning']}",
           f"- Load generator: `benchmarks/loadgen/loadgen.c` ({meta['compiler']}, -O2), "
           "one thread, epoll; no compression offered to any server",
           f"- Python {meta['python']} (rawws); references in `.bench-venv`: "
           f"Python {meta['bench_python'] or '-'}"]
    for s in servers:
        version = meta.get("versions", {}).get(s.key, s.version)
        out.append(f"- {s.label}: " + (f"skipped ({s.skipped})" if s.skipped else version))
    out += ["", "Servers: `python -m rawws.echo` and `python -m chat --rate 0 --flood-kick 0` "
            "(rawws); `benchmarks/servers/*` for the references, each written the way its "
            "library documents (defaults kept, message size limits raised to 32 MiB for "
            "the echo servers). Every chat server speaks beej-chat-protocol v1.", ""]

    if meta.get("tls"):
        out += [f"Over TLS (scenario 7): {meta['tls']}; TLS 1.3 with the `ssl` module's "
                "defaults on every server (" + ", ".join(meta.get("tls_servers") or []) + "); "
                "the load generator speaks OpenSSL's TLS, full handshakes, no certificate check. "
                "picows and ws (Node) are measured over plain TCP only.", ""]
    out += ["## Targets (issues 8 and 15)", "", render_markdown(
        ["target", "measured in this run", "met?"],
        [[t["target"], t["measured"] + (f" ({t['note']})" if t["note"] else ""),
          {True: "yes", False: "**no**", None: "not measured"}[t["met"]]] for t in targets]), ""]

    for scenario, group in scenario_groups(cases, bool(masking)):
        out += [f"## {SCENARIO_TITLES[scenario]}", "", _scenario_note(scenario), ""]
        if scenario == "masking":
            out += [render_markdown(*masking_table(masking)), ""]
            continue
        shown = [s for s in servers if s.tls] if scenario == "tls" else servers
        out += [render_markdown(*case_table(group, summary, shown)), ""]
        if scenario == "tls":
            out += ["What TLS costs each server (its figure over TLS / over plain TCP), and "
                    "rawws's ratios to the references without and with TLS:", "",
                    render_markdown(*tls_cost_table(group, summary, servers)), ""]
        if scenario in ("echo", "fanout"):
            label = "Delivery delay" if scenario == "fanout" else "Round-trip latency"
            out += [f"{label}, median of the runs' p50 and p99:", "",
                    render_markdown(*latency_table(group, summary, servers,
                                                   "ms" if scenario == "fanout" else "µs")), ""]

    out += ["## Is the load generator the bottleneck?", "",
            "For each case: the fastest reference and rawws under the same generator, with the "
            "share of one core the generator used (CPU time / measured time; on loopback this "
            "includes the kernel's TCP work for the packets it sends) and the server's share "
            "of its core. A reference driven faster than rawws shows the generator had room "
            "to go faster with rawws; a server near 100% of its core is the limit.", "",
            render_markdown(
                ["case", "fastest reference", "its figure", "generator CPU", "its server CPU",
                 "rawws", "generator CPU", "rawws server CPU"],
                [[c["case"], c["fastest"], format_figure(c["fastest_figure"]),
                  percent(c["fastest_loadgen_cpu"]), percent(c["fastest_server_cpu"]),
                  format_figure(c["rawws_figure"]), percent(c["rawws_loadgen_cpu"]),
                  percent(c["rawws_server_cpu"])] for c in checks]), ""]
    faster = [c for c in checks if c["drove_faster"]]
    out += [f"The generator drove the fastest reference faster than rawws in {len(faster)} of "
            f"{len(checks)} cases.", ""]

    out += ["## Server memory around each run", "",
            "RSS (VmRSS) before the load, the peak (VmHWM), and 0.3 s and 1 s after the load "
            "stopped; \"still growing\" means more than 0.5 MiB gained between those last two "
            "readings in any repeat. Medians of the repeats. Memory that stays at the peak "
            "after the load is retained (CPython rarely hands freed memory back to the system), "
            "not growing; telling retained from leaked needs the same load repeated against "
            "one server process, which these runs (a fresh server each) do not do.", "",
            render_markdown(*memory_table(cases, summary, servers)), ""]

    failures = [(case, server, entry) for case, by_server in summary.items()
                for server, entry in by_server.items() if entry["errors"]]
    if failures:
        out += ["## Failed runs", ""]
        out += [f"- {case}, {server}: {'; '.join(entry['errors'])[:300]}"
                for case, server, entry in failures]
        out.append("")
    if micro:
        out += ["## rawws alone: parsing and encoding in-process", "",
                "`benchmarks/micro.py`: not a comparison, a map of where rawws's time goes "
                "(CPU time, best of a few rounds).", "",
                render_markdown(["benchmark", "figure", "unit", "notes"],
                                [[row[0], format_figure(row[1]), row[2], row[3]]
                                 for row in micro]), ""]
    return "\n".join(out).rstrip() + "\n"


def _scenario_note(scenario: str) -> str:
    return {
        "echo": "Each connection has one message in flight: send, wait for the echo, send "
                "again. Round trips per second over the measured window (after a warm-up), "
                "all connections together. Ratios above 1 mean rawws did more.",
        "throughput": "One connection echoes binary messages, one in flight; MB/s is message "
                      "bytes echoed per second (each byte crosses the socket twice).",
        "fanout": "N receivers and one sender join the room; the sender keeps at most 10 "
                  "messages not yet delivered to every receiver. Deliveries/s counts messages "
                  "received by receivers (the sender's own copies are not counted), from the "
                  "first send to the last delivery. The joins before it (N x N/2 deliveries) "
                  "are not timed.",
        "idle": "(RSS with every connection open and idle for 1 s - RSS before) / "
                "connections. Lower is better, so a ratio below 1 favours rawws.",
        "handshakes": "16 connections at a time, each: TCP connect, opening handshake, Close "
                      "handshake, TCP close by the server; handshakes/s counts completed ones.",
        "tls": "Loads of scenarios 1, 2, 4, 5 and 6 over TLS, on the servers that have it: "
               "each given the same certificate (P-256 ECDSA, made for the run), the load "
               "generator doing TLS 1.3 with OpenSSL before its WebSocket handshake. Each TLS "
               "case follows its plain-TCP twin, measured just before it on the same servers, "
               "so their ratio is what TLS costs. The handshakes case is the TLS handshake "
               "rate (a full handshake each, no resumption) with the WebSocket opening and "
               "closing handshakes on top; idle is RSS per open TLS WebSocket (4.7 KiB "
               "over TCP in scenario 5).",
        "masking": "MB/s of payload masked, CPU time, median of rounds that alternate between "
                   "the implementations. Masking is its own inverse, so this is unmasking too. "
                   "aiohttp's functions mask a bytearray in place; the copy into one is "
                   "counted, as rawws returns new bytes.",
    }[scenario]


def write_json(path: Path, meta: dict, runs: list[Run], summary: dict, masking_raw: dict,
               masking: dict, targets: list[dict], checks: list[dict],
               micro: list[list] | None) -> None:
    data = {"meta": meta, "targets": targets, "summary": summary, "loadgen_check": checks,
            "masking": {"median_mb_s": masking, "rounds_mb_s": masking_raw},
            "micro": micro, "runs": [run.to_json() for run in runs]}
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
