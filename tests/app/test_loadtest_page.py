"""AppTest of the Load test page: the form, its errors, a run and a sweep against the real embedded
llama-server (whose requests reach the session's charts and the history file), and Stop."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app import state
from obs import semconv
from obs.loadgen.results import percentile
from obs.storage.sqlite import SqliteTraceStore
from tests.app.conftest import open_app, plain
from tests.app.fake_server import FakeLlamaServer
from tests.app.plotly_spec import figures

PAGE = state.LOADTEST_PAGE
TILES = ["Requests/s", "Output tokens/s", "Latency p50", "Latency p95", "Latency p99", "TTFT p50", "TTFT p95",
         "Errors"]
_RUN = "Run load test"


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def _fill(at: AppTest, *, requests: int, max_tokens: int = 8, concurrency: int = 2, stream: bool = True,
          mode: str = "Single run", levels: str | None = None, prompts: str | None = None) -> None:
    at.radio(key="w_load_mode").set_value(mode)
    at.number_input(key="w_load_concurrency").set_value(concurrency)
    at.number_input(key="w_load_requests").set_value(requests)
    at.number_input(key="w_load_max_tokens").set_value(max_tokens)
    at.toggle(key="w_load_stream").set_value(stream)
    if levels is not None:
        at.text_input(key="w_load_levels").set_value(levels)
    if prompts is not None:
        at.text_area(key="w_load_prompts").set_value(prompts)


def _running(at: AppTest) -> bool:
    return any(b.label in ("Stop", "Stopping...") for b in at.button)


def _wait_until_done(at: AppTest, timeout_s: float = 240.0) -> None:
    """Rerun the page, as its live panel does, until the run has ended and its results are drawn."""
    deadline = time.monotonic() + timeout_s
    while _running(at):
        assert time.monotonic() < deadline, "the load test did not end"
        time.sleep(0.25)
        at.run()
    at.run()
    assert not at.exception, at.exception


def _tiles(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _errors(at: AppTest) -> list[str]:
    return [plain(e.value) for e in at.error]


def test_the_page_offers_the_built_in_prompts_and_shows_no_result_yet() -> None:
    at = open_app(PAGE)
    assert not at.exception
    assert at.title[0].value == "Load test"
    prompts = at.text_area(key="w_load_prompts").value.splitlines()
    assert len(prompts) >= 5 and "What is the capital of France?" in prompts
    assert at.radio(key="w_load_mode").options == ["Single run", "Sweep"]
    assert at.number_input(key="w_load_concurrency").value == 4
    assert at.number_input(key="w_load_requests").value == 20
    assert at.toggle(key="w_load_stream").value is True
    assert not _button(at, _RUN).disabled
    assert _tiles(at) == {} and figures(at) == []


@pytest.mark.parametrize(("changes", "message"), [
    ({"prompts": "\n  \n# only a note\n"}, "Give at least one prompt, one per line"),
    ({"mode": "Sweep", "levels": "1,x"},
     "Sweep levels: concurrency levels are whole numbers of 1 or more, like 1,2,4,8; 'x' in '1,x' is not"),
])  # fmt: skip
def test_bad_input_is_named_and_nothing_runs(changes: dict, message: str) -> None:
    at = open_app(PAGE)
    _fill(at, requests=2, **changes)
    _button(at, _RUN).click().run()
    assert not at.exception
    assert any(e.startswith(message) for e in _errors(at)), _errors(at)
    assert not _running(at) and _tiles(at) == {}
    assert at.session_state[state.APP].collector.get_metrics().request_count == 0


def _stored_request_spans(db: Path, conversation: str) -> list:
    with SqliteTraceStore(str(db)) as store:
        return [s for t in store.all() for s in t.spans
                if s.attributes.get(semconv.GEN_AI_CONVERSATION_ID) == conversation]


def test_a_run_shows_its_summary_and_its_requests_reach_the_session_and_the_history(
    real_server: str, history_db: Path
) -> None:
    at = open_app(PAGE)
    app = at.session_state[state.APP]
    _fill(at, requests=4, max_tokens=8, concurrency=2, stream=True)
    _button(at, _RUN).click().run()
    assert not at.exception
    _wait_until_done(at)
    tiles = _tiles(at)
    assert list(tiles) == TILES
    assert tiles["Errors"] == "0"
    # The figures shown are the ones the stored traces give.
    (conversation,) = app.conversations
    spans = _stored_request_spans(history_db, conversation)
    assert len(spans) == 4 and all(s.status == "success" for s in spans)
    latency, ttft = semconv.OBS_LATENCY_MS, semconv.OBS_TTFT_MS
    for label, key, q in (("Latency p50", latency, 0.5), ("Latency p95", latency, 0.95),
                          ("TTFT p50", ttft, 0.5), ("TTFT p95", ttft, 0.95)):
        assert tiles[label] == f"{percentile([s.attributes[key] for s in spans], q):.0f} ms"
    caption = next(plain(c.value) for c in at.caption if "requests in" in c.value)
    tokens = sum(s.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] for s in spans)
    assert caption.startswith("4 requests in ") and f"4 answered, 0 failed; {tokens} output tokens" in caption
    (chart,) = [f for f in figures(at) if f.layout.title.text == "Latency per request"]
    assert sorted(y for trace in chart.data for y in trace.y) == sorted(s.attributes[latency] for s in spans)
    # The session's collector counted them, and the Dashboard (this session's scope) shows them.
    assert app.collector.get_metrics().request_count == 4
    at.switch_page(state.DASHBOARD_PAGE).run()
    assert {m.label: m.value for m in at.metric}["Total Requests"] == "4"


def test_a_sweep_shows_its_table_and_capacity_curve(real_server: str) -> None:
    at = open_app(PAGE)
    _fill(at, requests=2, max_tokens=8, mode="Sweep", levels="2, 1")
    _button(at, _RUN).click().run()
    _wait_until_done(at)
    (table,) = [frame.value for frame in at.dataframe]
    assert list(table.columns) == ["concurrency", "requests/s", "output tok/s", "p50 ms", "p95 ms", "p99 ms",
                                   "TTFT p95 ms", "errors"]
    assert list(table["concurrency"]) == ["1", "2"] and list(table["errors"]) == ["0", "0"]
    (curve,) = [f for f in figures(at) if f.layout.title.text == "Capacity curve"]
    (points,) = curve.data
    assert list(points.text) == ["c=1", "c=2"]
    assert [f"{x:.2f}" for x in points.x] == list(table["requests/s"])
    assert [f"{y:.0f}" for y in points.y] == list(table["p95 ms"])
    (knee,) = [plain(i.value) for i in at.info]
    assert knee.startswith(("knee at concurrency 1: going to 2", "no knee up to concurrency 2"))
    assert bool(curve.layout.annotations) == knee.startswith("knee")


def test_stop_cancels_the_requests_in_flight_and_another_session_waits_meanwhile(
    fake_server: FakeLlamaServer,
) -> None:
    fake_server.chunk_delay_s = 0.2  # a slow model: every answer takes a while
    at = open_app(PAGE)
    _fill(at, requests=200, concurrency=2, stream=True)
    _button(at, _RUN).click().run()
    assert _running(at)
    other = open_app(PAGE)  # another browser session of the same dashboard
    assert _button(other, _RUN).disabled
    assert any("Another browser session's load test is running" in plain(i.value) for i in other.info)
    deadline = time.monotonic() + 60
    while not at.get("progress") or "0/200 done" in at.get("progress")[0].proto.text:
        assert time.monotonic() < deadline
        time.sleep(0.2)
        at.run()
    _button(at, "Stop").click().run()
    _wait_until_done(at)
    caption = next(plain(c.value) for c in at.caption if "requests in" in c.value)
    done = int(caption.split(" requests in")[0])
    assert 1 <= done < 200 and "cancelled in flight by Stop" in caption
    other.run()
    assert not _button(other, _RUN).disabled
