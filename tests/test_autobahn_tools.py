"""The Autobahn|Testsuite harness (tools/autobahn/): specs, summaries, the client loop.

Nothing here needs Python 2 or the suite itself: the runner's pure parts are
checked on index.json data made here, and the client driver runs against a
small stand-in for the suite's fuzzing server written on rawws.net.server.
"""
from __future__ import annotations

import importlib.util
import json
import socket
import sys
from pathlib import Path

import pytest

from rawws.net.server import WebSocket, WebSocketApp

TOOLS = Path(__file__).resolve().parents[1] / "tools" / "autobahn"


def load(name: str):
    """Import a module from tools/autobahn/ (not a package) by file name."""
    spec = importlib.util.spec_from_file_location(f"autobahn_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


run = load("run")
driver = load("client_driver")


def entry(behavior: str, close: str = "OK") -> dict:
    return {"behavior": behavior, "behaviorClose": close, "duration": 1,
            "remoteCloseCode": 1000, "reportfile": "x.json"}


# ---- one case's outcome -------------------------------------------------------

@pytest.mark.parametrize("behavior", ["OK", "NON-STRICT", "INFORMATIONAL"])
def test_a_clean_close_keeps_the_behavior(behavior):
    assert run.case_outcome(entry(behavior, "OK")) == behavior


def test_a_failed_behavior_is_failed():
    assert run.case_outcome(entry("FAILED", "OK")) == "FAILED"


def test_an_unknown_behavior_counts_as_failed():
    assert run.case_outcome(entry("NO CLOSE", "OK")) == "FAILED"


def test_unimplemented_wins_over_the_close():
    assert run.case_outcome(entry("UNIMPLEMENTED", "FAILED")) == "UNIMPLEMENTED"


@pytest.mark.parametrize("close", ["FAILED", "UNCLEAN"])
def test_a_failed_close_fails_an_ok_case(close):
    assert run.case_outcome(entry("OK", close)) == "FAILED"


@pytest.mark.parametrize("close", ["WRONG CODE", "FAILED BY CLIENT"])
def test_a_wrong_close_code_makes_an_ok_case_non_strict(close):
    assert run.case_outcome(entry("OK", close)) == "NON-STRICT"


def test_an_informational_close_does_not_hide_a_non_strict_behavior():
    assert run.case_outcome(entry("NON-STRICT", "INFORMATIONAL")) == "NON-STRICT"


def test_an_informational_close_marks_an_ok_case_informational():
    assert run.case_outcome(entry("OK", "INFORMATIONAL")) == "INFORMATIONAL"


# ---- a run's summary ----------------------------------------------------------

SAMPLE_INDEX = {"rawws": {
    "1.1.1": entry("OK"),
    "9.10.1": entry("OK"),
    "9.2.1": entry("OK"),
    "3.2": entry("NON-STRICT"),
    "7.1.6": entry("INFORMATIONAL"),
    "7.13.1": entry("INFORMATIONAL"),
    "5.1": entry("OK", "WRONG CODE"),
    "6.4.3": entry("FAILED"),
    "12.1.1": entry("UNIMPLEMENTED"),
    "13.7.18": entry("UNIMPLEMENTED"),
}}


@pytest.fixture
def index_file(tmp_path: Path) -> Path:
    path = tmp_path / "index.json"
    path.write_text(json.dumps(SAMPLE_INDEX), encoding="utf-8")
    return path


def test_summary_counts_every_outcome(index_file):
    summary = run.summarise(run.load_results(index_file))
    assert {o: summary.count(o) for o in run.OUTCOMES} == {
        "OK": 3, "NON-STRICT": 2, "INFORMATIONAL": 2, "UNIMPLEMENTED": 2, "FAILED": 1}
    assert summary.total == 10


def test_summary_lists_cases_in_suite_order(index_file):
    summary = run.summarise(run.load_results(index_file))
    assert summary.cases["OK"] == ["1.1.1", "9.2.1", "9.10.1"]
    assert summary.cases["NON-STRICT"] == ["3.2", "5.1"]


def test_summary_line_names_every_outcome(index_file):
    summary = run.summarise(run.load_results(index_file))
    assert run.summary_line("server", summary, 12.4) == (
        "server: 10 cases in 12 s: OK 3, NON-STRICT 2, INFORMATIONAL 2,"
        " UNIMPLEMENTED 2, FAILED 1")


def test_detail_lines_name_the_cases_that_are_not_ok(index_file):
    summary = run.summarise(run.load_results(index_file))
    assert run.detail_lines(summary) == [
        "  FAILED: 6.4.3",
        "  UNIMPLEMENTED: 12.1.1, 13.7.18",
        "  NON-STRICT: 3.2, 5.1",
        "  INFORMATIONAL: 7.1.6, 7.13.1",
    ]


def test_long_lists_are_grouped_by_top_level_case():
    ids = [f"12.1.{n}" for n in range(1, 19)] + ["13.1.1"]
    assert run.group_ids(ids) == "12.*: 18, 13.*: 1"


def test_a_failed_case_fails_the_run():
    assert not run.summarise({"1.1.1": entry("OK"), "2.1": entry("FAILED")}).passed


def test_an_unimplemented_case_fails_the_run():
    assert not run.summarise({"1.1.1": entry("OK"), "12.1.1": entry("UNIMPLEMENTED")}).passed


def test_non_strict_and_informational_cases_pass_the_run():
    results = {"1.1.1": entry("OK"), "3.2": entry("NON-STRICT"), "7.1.6": entry("INFORMATIONAL")}
    assert run.summarise(results).passed


def test_a_run_with_no_cases_does_not_pass():
    assert not run.summarise({}).passed


def test_an_index_without_our_agent_is_an_error(tmp_path):
    path = tmp_path / "index.json"
    path.write_text(json.dumps({"other": {"1.1.1": entry("OK")}}), encoding="utf-8")
    with pytest.raises(KeyError):
        run.load_results(path)


# ---- specs and modes ----------------------------------------------------------

def test_fuzzingclient_spec_tests_one_server_and_excludes_no_agent_cases():
    spec = run.fuzzingclient_spec("ws://127.0.0.1:40001", "/tmp/out", ["*"], [])
    assert spec == {
        "outdir": "/tmp/out",
        "servers": [{"agent": "rawws", "url": "ws://127.0.0.1:40001"}],
        "cases": ["*"],
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    assert json.loads(json.dumps(spec)) == spec


def test_fuzzingserver_spec_listens_at_the_given_url():
    spec = run.fuzzingserver_spec("ws://127.0.0.1:40002", "/tmp/out", ["1.*"], ["9.*"])
    assert spec == {
        "url": "ws://127.0.0.1:40002",
        "outdir": "/tmp/out",
        "cases": ["1.*"],
        "exclude-cases": ["9.*"],
        "exclude-agent-cases": {},
    }


def test_full_mode_runs_every_case():
    assert run.mode_cases("full") == (["*"], [])


def test_quick_mode_samples_the_slow_groups_instead_of_excluding_them():
    cases, exclude = run.mode_cases("quick")
    # wstest drops excluded cases after adding listed ones, so nothing is
    # excluded and the sampled ids of 9, 12 and 13 are listed one by one.
    assert exclude == []
    assert {"9.*", "12.*", "13.*", "*"}.isdisjoint(cases)
    assert {"9.1.1", "12.1.1", "13.1.1"} <= set(cases)
    assert {f"{n}.*" for n in (1, 2, 3, 4, 5, 6, 7, 10)} <= set(cases)


def test_the_serving_line_gives_the_port():
    assert run.serving_port("Serving on ws://127.0.0.1:41234/\n") == 41234


@pytest.mark.parametrize("line", ["Listening on ws://127.0.0.1:1/", "Serving on ws://127.0.0.1/"])
def test_a_line_without_a_port_is_an_error(line):
    with pytest.raises(ValueError):
        run.serving_port(line)


def test_a_free_port_can_be_bound_on_loopback():
    port = run.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# ---- the client driver -----------------------------------------------------------

def test_the_driver_offers_compression_when_connect_takes_it():
    def connect_with(url, *, compression=False):
        pass

    def connect_without(url, *, timeout=10.0):
        pass

    assert driver.deflate_options(connect_with) == {"compression": True}
    assert driver.deflate_options(connect_without) == {}


class FakeFuzzingServer(WebSocketApp):
    """The fuzzing server's three URLs, in miniature: each case sends a text and a binary message."""

    allowed_origins = {"*"}

    def __init__(self, cases: int) -> None:
        self.cases = cases
        self.paths: list[str] = []
        self.echoes: dict[str, list[str | bytes]] = {}

    def on_open(self, ws: WebSocket) -> None:
        self.paths.append(ws.path)
        if ws.path.startswith("/getCaseCount"):
            ws.send_text(str(self.cases))
            ws.close()
        elif ws.path.startswith("/runCase"):
            self.echoes[ws.path] = []
            ws.send_text("h\u00e9llo " + ws.path)
            ws.send_binary(b"\x00\xff" + ws.path.encode())
        else:
            ws.close()

    def on_message(self, ws: WebSocket, message: str | bytes) -> None:
        echoes = self.echoes[ws.path]
        echoes.append(message)
        if len(echoes) == 2:
            ws.close()


def test_the_driver_runs_every_case_and_echoes_text_as_text_and_binary_as_binary(serve):
    app = FakeFuzzingServer(cases=3)
    server = serve(app)
    count = driver.run_all(f"ws://127.0.0.1:{server.port}", "rawws")
    assert count == 3
    cases = [f"/runCase?case={n}&agent=rawws" for n in (1, 2, 3)]
    assert app.paths == ["/getCaseCount?agent=rawws", *cases, "/updateReports?agent=rawws"]
    for path in cases:
        assert app.echoes[path] == ["h\u00e9llo " + path, b"\x00\xff" + path.encode()]


def test_over_tls_the_fuzzingserver_spec_names_its_certificate_and_key():
    spec = run.fuzzingserver_spec("wss://127.0.0.1:40002", "/tmp/out", ["1.*"], [],
                                  cert="/c/server.pem", key="/c/server.key")
    assert (spec["url"], spec["cert"], spec["key"]) == (
        "wss://127.0.0.1:40002", "/c/server.pem", "/c/server.key")


def test_over_tls_reports_go_beside_the_plain_ones(tmp_path):
    plain = run.Settings("quick", Path("python"), tmp_path, tmp_path, 1.0)
    tls = run.Settings("quick", Path("python"), tmp_path, tmp_path, 1.0, certs=object())
    assert plain.outdir("server") == tmp_path / "server"
    assert tls.outdir("client") == tmp_path / "client-tls"


def test_the_driver_runs_every_case_over_wss_trusting_the_ca(serve, tls_certs):
    from rawws.net.tls import client_context, server_context
    app = FakeFuzzingServer(cases=2)
    server = serve(app, ssl_context=server_context(tls_certs.cert, tls_certs.key))
    count = driver.run_all(f"wss://127.0.0.1:{server.port}", "rawws",
                           {"ssl_context": client_context(tls_certs.ca)})
    assert count == 2
    assert app.paths[-1] == "/updateReports?agent=rawws"
    assert len(app.echoes) == 2 and all(len(echoes) == 2 for echoes in app.echoes.values())
