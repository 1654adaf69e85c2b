"""The benchmark harness (benchmarks/): its pure parts on made-up runs, and the C load generator for real.

No speed is asserted here: these tests check that the instrument counts,
orders and reports correctly, and that the load generator builds and speaks
the protocol to rawws's own servers on 127.0.0.1.
"""
from __future__ import annotations

import sys

import pytest

from benchmarks import loadgen
from benchmarks.procs import ServerProcess
from benchmarks.report import (evaluate_targets, format_figure, format_ratio, markdown_report,
                               masking_table, ratio, summarize, terminal_report)
from benchmarks.runner import Run, alternation, median
from benchmarks.scenarios import cases
from benchmarks.targets import Server, rawws_server

SERVERS = [Server("rawws", "rawws", "0.1.0", ("x",), ("x",)),
           Server("websockets", "websockets", "17.4", ("x",), ("x",)),
           Server("aiohttp", "aiohttp", "3.14", ("x",), ("x",)),
           Server("ws", "ws (Node)", skipped="node not found")]

META = {"date": "2026-11-26 12:00 UTC", "command": "make bench", "repeats": 3,
        "cpu": "Test CPU 9000", "cores": 2, "memory": "24 GiB", "kernel": "Linux test",
        "pinning": "servers on CPU 0, load on CPU 1", "compiler": "gcc 12", "python": "3.11.7",
        "bench_python": "3.11.7", "load_before": 1.0, "load_after": 1.5, "elapsed_s": 60.0}


def fake_run(case: str, server: str, repeat: int, figure: float | None, **fields) -> Run:
    run = Run(case, server, repeat, figure, report={"p50_us": 100.0, "p99_us": 200.0,
                                                    "loadgen_cpu": 0.2})
    run.rss_before_kib, run.rss_peak_kib = 20_000, 30_000
    run.rss_after_kib, run.rss_settled_kib = 25_000, 25_100
    for name, value in fields.items():
        setattr(run, name, value)
    return run


# ---- alternation and medians ----------------------------------------------------

def test_alternation_visits_every_server_once_per_repeat_in_turn():
    assert list(alternation(["A", "B", "C"], 2)) == [
        (0, "A"), (0, "B"), (0, "C"), (1, "A"), (1, "B"), (1, "C")]


def test_median_of_three_is_the_middle_value():
    assert median([3.0, 1.0, 2.0]) == 2.0


def test_median_skips_missing_values():
    assert median([None, 4.0, None, 2.0]) == 3.0


def test_median_of_nothing_is_none():
    assert median([None, None]) is None


# ---- summaries --------------------------------------------------------------------

def test_summary_takes_the_median_over_repeats_per_server():
    runs = [fake_run("echo: 32 B text, 1 conn", "rawws", r, f) for r, f in enumerate((10, 30, 20))]
    runs += [fake_run("echo: 32 B text, 1 conn", "aiohttp", r, f) for r, f in enumerate((5, 6, 7))]
    summary = summarize(runs)
    assert summary["echo: 32 B text, 1 conn"]["rawws"]["median"] == 20
    assert summary["echo: 32 B text, 1 conn"]["aiohttp"]["median"] == 6


def test_failed_runs_are_counted_and_left_out_of_the_median():
    runs = [fake_run("c", "rawws", 0, 10.0), fake_run("c", "rawws", 1, None, error="boom"),
            fake_run("c", "rawws", 2, 30.0)]
    entry = summarize(runs)["c"]["rawws"]
    assert (entry["median"], entry["failed"], entry["errors"]) == (20.0, 1, ["boom"])


def test_memory_still_rising_after_the_load_is_growing():
    rising = fake_run("c", "rawws", 0, 1.0, rss_after_kib=25_000, rss_settled_kib=26_000)
    steady = fake_run("c", "rawws", 0, 1.0, rss_after_kib=25_000, rss_settled_kib=25_100)
    assert (rising.growing, steady.growing) == (True, False)


def test_one_growing_repeat_marks_the_case_growing():
    runs = [fake_run("c", "rawws", 0, 1.0),
            fake_run("c", "rawws", 1, 1.0, rss_after_kib=25_000, rss_settled_kib=27_000)]
    assert summarize(runs)["c"]["rawws"]["growing"] is True


# ---- numbers and ratios -------------------------------------------------------------

@pytest.mark.parametrize("value, text", [(None, "-"), (1234567.8, "1,234,568"), (123.4, "123"),
                                         (12.34, "12.3"), (1.234, "1.23")])
def test_figures_are_printed_to_about_three_digits(value, text):
    assert format_figure(value) == text


def test_ratio_is_ours_over_theirs():
    assert format_ratio(ratio(30.0, 20.0)) == "1.50x"


def test_ratio_with_a_missing_side_is_none():
    assert (ratio(None, 1.0), ratio(1.0, None), ratio(1.0, 0.0)) == (None, None, None)


# ---- targets ------------------------------------------------------------------------

def summary_of(figures: dict[str, dict[str, float]]) -> dict:
    runs = [fake_run(case, server, 0, value)
            for case, by_server in figures.items() for server, value in by_server.items()]
    return summarize(runs)


def target(targets: list[dict], text: str) -> dict:
    (found,) = [t for t in targets if t["target"].startswith(text)]
    return found


def test_echo_target_is_met_when_rawws_matches_aiohttp():
    summary = summary_of({"echo: 32 B text, 1 conn": {"rawws": 28_000, "aiohttp": 28_000},
                          "echo: 32 B text, 64 conns": {"rawws": 40_000, "aiohttp": 45_000}})
    targets = evaluate_targets(summary, {}, cases())
    assert target(targets, "echo 32 B round trips/s >= aiohttp, 1 conn")["met"] is True
    assert target(targets, "echo 32 B round trips/s >= aiohttp, 64 conns")["met"] is False


def test_fanout_target_needs_twice_websockets():
    summary = summary_of({"fanout: 100 clients": {"rawws": 74_000, "websockets": 37_000},
                          "fanout: 1000 clients": {"rawws": 73_999, "websockets": 37_000}})
    targets = evaluate_targets(summary, {}, cases())
    assert target(targets, "chat fan-out, 100 clients")["met"] is True
    assert target(targets, "chat fan-out, 1000 clients")["met"] is False


def test_idle_target_is_at_most_7_kib_per_connection():
    summary = summary_of({"idle: 10,000 connections": {"rawws": 7.0}})
    assert target(evaluate_targets(summary, {}, cases()), "10,000 idle")["met"] is True
    summary = summary_of({"idle: 10,000 connections": {"rawws": 7.1}})
    assert target(evaluate_targets(summary, {}, cases()), "10,000 idle")["met"] is False


def test_masking_target_is_600_mb_s_at_1_mib():
    masking = {"rawws (pure Python)": {"125": 100.0, "4096": 400.0, "1048576": 599.0}}
    assert target(evaluate_targets({}, masking, cases()), "masking")["met"] is False


def test_masking_target_takes_the_faster_of_rawws_two_functions_and_names_it():
    masking = {"rawws (pure Python)": {"1048576": 450.0},
               "rawws in place (pure Python)": {"1048576": 610.0},
               "aiohttp (pure Python fallback)": {"1048576": 900.0}}
    found = target(evaluate_targets({}, masking, cases()), "masking")
    assert found["met"] is True
    assert "610" in found["measured"] and "in place" in found["measured"]


def test_the_pure_masking_target_ignores_the_c_path():
    masking = {"rawws (pure Python)": {"1048576": 450.0}, "rawws (C)": {"1048576": 20_000.0}}
    found = target(evaluate_targets({}, masking, cases()), "masking")
    assert found["met"] is False and "450" in found["measured"]


def test_the_c_masking_target_is_5_gb_s_at_1_mib():
    masking = {"rawws (pure Python)": {"1048576": 600.0},
               "rawws (C)": {"1048576": 4_900.0}, "rawws in place (C)": {"1048576": 5_100.0}}
    found = target(evaluate_targets({}, masking, cases()), "C masking")
    assert found["met"] is True and "in place (C)" in found["measured"]
    masking["rawws in place (C)"]["1048576"] = 4_000.0
    assert target(evaluate_targets({}, masking, cases()), "C masking")["met"] is False


def test_the_c_masking_target_is_unmeasured_without_the_extension():
    masking = {"rawws (pure Python)": {"1048576": 600.0}}
    assert target(evaluate_targets({}, masking, cases()), "C masking")["met"] is None


def test_the_masking_table_compares_each_rawws_path_with_every_implementation():
    masking = {"rawws (pure Python)": {"1048576": 500.0}, "rawws (C)": {"1048576": 20_000.0},
               "websockets (C speedups)": {"1048576": 10_000.0}}
    header, rows = masking_table(masking)
    assert header[-2:] == ["rawws (pure Python)/it at 1 MiB", "rawws (C)/it at 1 MiB"]
    assert rows[2][-2:] == [format_ratio(0.05), format_ratio(2.0)]


def test_a_reference_that_was_skipped_leaves_its_target_unmeasured():
    summary = summary_of({"handshakes: 16 at a time": {"rawws": 5_000}})
    assert target(evaluate_targets(summary, {}, cases()), "handshakes/s")["met"] is None


def test_growing_memory_fails_the_memory_target():
    runs = [fake_run("echo: 32 B text, 1 conn", "rawws", 0, 1.0, rss_settled_kib=30_000)]
    targets = evaluate_targets(summarize(runs), {}, cases())
    assert target(targets, "no scenario leaves")["met"] is False


# ---- the report -----------------------------------------------------------------------

def test_markdown_report_has_date_cpu_versions_medians_and_ratios():
    summary = summary_of({"echo: 32 B text, 1 conn": {"rawws": 30_000, "websockets": 10_000,
                                                      "aiohttp": 20_000}})
    case_list = [c for c in cases() if c.key == "echo: 32 B text, 1 conn"]
    text = markdown_report(META, case_list, SERVERS, summary, {}, [], [], None)
    assert "2026-11-26 12:00 UTC" in text and "Test CPU 9000" in text
    assert "- websockets: 17.4" in text and "- ws (Node): skipped (node not found)" in text
    assert "| 32 B text, 1 conn | round trips/s | 30,000 | 10,000 | 20,000 | skipped | " \
           "3.00x | 1.50x | - |" in text


def test_terminal_report_names_each_target_and_its_verdict():
    summary = summary_of({"handshakes: 16 at a time": {"rawws": 5_000, "aiohttp": 4_000}})
    case_list = [c for c in cases() if c.scenario == "handshakes"]
    targets = evaluate_targets(summary, {}, case_list)
    text = terminal_report(META, case_list, SERVERS, summary, {}, targets)
    assert "[         met] handshakes/s >= aiohttp: rawws 5,000, aiohttp 4,000 (1.25x)" in text


# ---- the cases ---------------------------------------------------------------------------

def test_full_run_has_every_scenario_of_the_issue():
    keys = {case.key for case in cases()}
    for conns in ("1 conn", "10 conns", "64 conns", "100 conns"):
        assert f"echo: 32 B text, {conns}" in keys and f"echo: 1 KiB text, {conns}" in keys
    for size in ("64 KiB", "1 MiB", "16 MiB"):
        assert f"throughput: {size} binary" in keys
    assert {"fanout: 100 clients", "fanout: 1000 clients", "idle: 10,000 connections",
            "handshakes: 16 at a time"} <= keys


def test_quick_run_is_a_smaller_subset():
    quick = cases(quick=True)
    assert len(quick) < len(cases()) and {c.scenario for c in quick} == {
        "echo", "throughput", "fanout", "idle", "handshakes", "tls"}


def test_the_tls_cases_mirror_plain_ones_of_the_same_run_with_loadgen_tls():
    every = {case.key: case for case in cases()}
    tls = [case for case in every.values() if case.tls]
    assert {case.name for case in tls} >= {"echo 32 B text, 64 conns", "throughput 1 MiB binary",
                                           "fan-out, 100 clients",
                                           "TLS + WebSocket handshakes, 16 at a time"}
    order = list(every)
    for case in tls:
        assert "--tls" in case.args and case.tls_pair
        if case.plain is not None:
            plain = every[case.plain]
            assert (plain.mode, plain.metric, plain.tls, plain.tls_pair) == (
                case.mode, case.metric, False, True)
            assert case.args == (*plain.args, "--tls")
            assert order.index(case.plain) == order.index(case.key) - 1   # measured just before


def test_over_tls_a_server_gets_the_certificate_or_has_no_command():
    rawws = rawws_server()
    assert rawws.command("echo", ("c.pem", "k.pem"))[-4:] == ("--certfile", "c.pem",
                                                               "--keyfile", "k.pem")
    assert rawws.command("echo") == rawws.echo
    picows = Server("picows", "picows", "2", ("x",), ("x",))
    assert picows.command("echo", ("c.pem", "k.pem")) is None


def test_the_tls_target_compares_the_tls_ratio_with_the_plain_one():
    summary = summary_of({"tls: echo 32 B text, 64 conns, plain TCP": {
                              "rawws": 40_000, "websockets": 10_000, "aiohttp": 10_000},
                          "tls: echo 32 B text, 64 conns": {"rawws": 20_000, "websockets": 4_000,
                                                            "aiohttp": 6_000}})
    targets = evaluate_targets(summary, {}, cases())
    assert target(targets, "over TLS, echo 32 B text, 64 conns: rawws/websockets")["met"] is True
    assert target(targets, "over TLS, echo 32 B text, 64 conns: rawws/aiohttp")["met"] is False


def test_rawws_chat_is_started_without_a_rate_limit_for_the_fanout_sender():
    chat = rawws_server().chat
    assert chat[chat.index("--rate") + 1] == "0" and chat[chat.index("--flood-kick") + 1] == "0"


# ---- the C load generator, for real --------------------------------------------------------

@pytest.fixture(scope="module")
def loadgen_binary(tmp_path_factory):
    return loadgen.build(tmp_path_factory.mktemp("loadgen") / "loadgen", force=True)


def test_load_generator_echoes_100_messages_on_one_connection(loadgen_binary):
    echo = [sys.executable, "-m", "rawws.echo", "--port", "0", "--ping-interval", "0"]
    with ServerProcess(echo, cpu=None) as server:
        result = loadgen.run(loadgen_binary, "echo", server.port,
                             ["--conns", "1", "--size", "32", "--count", "100", "--warmup", "0",
                              "--duration", "20"], cpu=None, timeout=30)
    assert (result["round_trips"], result["errors"], result["opened"]) == (100, 0, 1)
    assert result["p50_us"] > 0 and result["p99_us"] >= result["p50_us"]


def test_load_generator_checks_large_binary_echoes(loadgen_binary):
    echo = [sys.executable, "-m", "rawws.echo", "--port", "0", "--ping-interval", "0"]
    with ServerProcess(echo, cpu=None) as server:
        result = loadgen.run(loadgen_binary, "throughput", server.port,
                             ["--size", str(1 << 20), "--count", "3", "--warmup", "0",
                              "--duration", "20"], cpu=None, timeout=30)
    assert (result["round_trips"], result["binary"], result["errors"]) == (3, True, 0)


def test_load_generator_fans_out_through_the_chat(loadgen_binary):
    with ServerProcess(list(rawws_server(sys.executable).chat), cpu=None) as server:
        result = loadgen.run(loadgen_binary, "fanout", server.port,
                             ["--conns", "3", "--messages", "20", "--window", "5",
                              "--duration", "20"], cpu=None, timeout=30)
    assert (result["deliveries"], result["complete"], result["errors"]) == (60, 20, 0)


def test_load_generator_counts_whole_open_and_close_cycles(loadgen_binary):
    echo = [sys.executable, "-m", "rawws.echo", "--port", "0", "--ping-interval", "0"]
    with ServerProcess(echo, cpu=None) as server:
        result = loadgen.run(loadgen_binary, "handshakes", server.port,
                             ["--conns", "2", "--duration", "0.5"], cpu=None, timeout=30)
    assert result["handshakes"] > 0 and result["errors"] == 0 and result["unclean_closes"] == 0


def test_load_generator_holds_idle_connections_until_released(loadgen_binary):
    echo = [sys.executable, "-m", "rawws.echo", "--port", "0", "--ping-interval", "0"]
    with ServerProcess(echo, cpu=None) as server:
        idle = loadgen.IdleConnections(loadgen_binary, server.port, 50, cpu=None, timeout=30)
        try:
            ready = idle.wait_ready()
            final = idle.release()
        finally:
            idle.kill()
    assert (ready["event"], ready["open"]) == ("ready", 50)
    assert (final["opened"], final["errors"], final["unclean_closes"]) == (50, 0, 0)



def test_load_generator_echoes_over_tls(loadgen_binary, tls_certs):
    if not loadgen.has_tls(loadgen_binary):
        pytest.skip("the load generator was built without OpenSSL (libssl-dev)")
    echo = [sys.executable, "-m", "rawws.echo", "--port", "0", "--ping-interval", "0",
            "--certfile", str(tls_certs.cert), "--keyfile", str(tls_certs.key)]
    with ServerProcess(echo, cpu=None) as server:
        result = loadgen.run(loadgen_binary, "echo", server.port,
                             ["--conns", "2", "--size", "32", "--count", "100", "--warmup", "0",
                              "--duration", "20", "--tls"], cpu=None, timeout=30)
        big = loadgen.run(loadgen_binary, "throughput", server.port,
                          ["--size", str(1 << 20), "--count", "3", "--warmup", "0",
                           "--duration", "20", "--tls"], cpu=None, timeout=30)
        cycles = loadgen.run(loadgen_binary, "handshakes", server.port,
                             ["--conns", "2", "--duration", "0.5", "--tls"], cpu=None, timeout=30)
    assert (result["round_trips"], result["errors"], result["opened"]) == (100, 0, 2)
    assert (big["round_trips"], big["errors"]) == (3, 0)
    assert cycles["handshakes"] > 0 and cycles["errors"] == 0 and cycles["unclean_closes"] == 0
