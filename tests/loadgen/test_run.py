"""run_load and run_sweep against the real embedded llama-server and loopback servers that fail.

The summary a run prints is computed from its per-request results; these
tests read the spans stored in a real SQLite file back through obs.storage
and check that they say the same: requests, tokens, percentiles, errors.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from obs import semconv
from obs.llm.async_client import AsyncInstrumentedClient
from obs.llm.llama.server import EmbeddedServer
from obs.loadgen.background import BackgroundLoad
from obs.loadgen.options import LoadConfig
from obs.loadgen.results import Progress
from obs.loadgen.runner import run_load, run_sweep
from obs.trace.tracer import Tracer
from tests.llm.servers import Handler, error_status, garbage, good, refused_url, serve
from tests.loadgen.support import Stored, recording

PROMPTS = ("Name a colour.", "Say hi.", "What is one plus one?")


def _factory(config: LoadConfig, tracer: Tracer):
    return lambda: AsyncInstrumentedClient(config.url, tracer=tracer)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_summary_equals_what_the_stored_traces_say(
    embedded_server: EmbeddedServer, tmp_path: Path, stream: bool
) -> None:
    db = tmp_path / "obs.db"
    config = LoadConfig(embedded_server.url, concurrency=3, requests=9, prompts=PROMPTS, stream=stream,
                        max_tokens=8, params={"temperature": 0})
    with recording(db) as tracer:
        result = run_load(config, client_factory=_factory(config, tracer))
    summary, stored = result.summary, Stored.read(db)
    assert (summary.requests, summary.ok, summary.errors, summary.cancelled) == (9, 9, 0, 0)
    assert len(stored.spans) == 9 and len(stored.answered) == summary.ok
    assert {r.trace_id for r in result.results} == {s.trace_id for s in stored.spans}
    assert summary.output_tokens == stored.output_tokens > 0
    assert summary.input_tokens == sum(s.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] for s in stored.spans)
    for q, value in ((0.50, summary.latency_p50_ms), (0.95, summary.latency_p95_ms),
                     (0.99, summary.latency_p99_ms)):
        assert value == stored.answered_percentile(semconv.OBS_LATENCY_MS, q)
    if stream:
        assert summary.ttft_p50_ms == stored.answered_percentile(semconv.OBS_TTFT_MS, 0.50) is not None
        assert summary.ttft_p95_ms == stored.answered_percentile(semconv.OBS_TTFT_MS, 0.95)
    else:
        assert summary.ttft_p50_ms is None and summary.ttft_p95_ms is None
    assert summary.output_tokens_per_s == summary.output_tokens / result.elapsed_s
    assert sorted(r.index for r in result.results) == list(range(9))


def _fails_by_prompt(handler: Handler) -> None:
    """A server that answers well, except "please fail" prompts (HTTP 500) and "please garble" ones."""
    if handler.command == "POST":
        content = json.loads(handler.body)["messages"][0]["content"]
        if content == "please fail":
            return error_status(500, "boom")(handler)
        if content == "please garble":
            return garbage(handler)
    return good(handler)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_errors_by_type_equal_the_stored_error_spans(tmp_path: Path, stream: bool) -> None:
    db = tmp_path / "obs.db"
    with serve(_fails_by_prompt) as server:
        config = LoadConfig(server.url, concurrency=4, requests=12, stream=stream,
                            prompts=("fine", "please fail", "fine too", "please garble"))
        with recording(db) as tracer:
            result = run_load(config, client_factory=_factory(config, tracer))
    summary, stored = result.summary, Stored.read(db)
    assert summary.errors_by_type == stored.errors_by_type == {"500": 3, "BadResponse": 3}
    assert (summary.requests, summary.ok, summary.errors) == (12, 6, 6) == (
        len(stored.spans), len(stored.answered), sum(stored.errors_by_type.values()))
    assert summary.output_tokens == stored.output_tokens == 6 * 4  # the loopback answers 4 tokens


def test_a_server_that_is_not_there_gives_one_error_per_request() -> None:
    summary = run_load(LoadConfig(refused_url(), concurrency=2, requests=5)).summary
    assert (summary.ok, summary.errors_by_type, summary.latency_p50_ms) == (0, {"ServerUnavailable": 5}, None)


def test_a_stop_cancels_the_requests_in_flight_and_keeps_what_was_done(
    embedded_server: EmbeddedServer, tmp_path: Path
) -> None:
    db = tmp_path / "obs.db"
    stop = threading.Event()
    seen: list[Progress] = []

    def progress(p: Progress) -> None:
        seen.append(p)
        if p.done >= 2:
            stop.set()

    config = LoadConfig(embedded_server.url, concurrency=2, requests=200, max_tokens=32, stream=True)
    with recording(db) as tracer:
        result = run_load(config, client_factory=_factory(config, tracer), on_progress=progress,
                          stop_event=stop)
    summary, stored = result.summary, Stored.read(db)
    assert result.stopped and 2 <= summary.requests < 200
    assert summary.cancelled >= 1  # both slots were busy when the stop came
    # Every request sent is stored: those that ended, and those cancelled in flight (as failed).
    assert len(stored.spans) == summary.requests + summary.cancelled
    assert stored.errors_by_type.get("CancelledError", 0) + len(stored.answered) == len(stored.spans)
    assert len(stored.answered) >= summary.ok
    assert seen[-1].done == summary.requests and seen[-1].in_flight == 0


def test_a_rate_holds_each_request_back_until_its_turn(tmp_path: Path) -> None:
    with serve(good) as server:
        result = run_load(LoadConfig(server.url, concurrency=4, requests=6, rate=20.0))
    # Request i is not sent before i / rate seconds, so it cannot have ended before then.
    assert all(r.finished_s >= r.index / 20.0 for r in result.results)
    assert result.summary.ok == 6


def test_a_duration_alone_runs_until_it_ends() -> None:
    with serve(good) as server:
        result = run_load(LoadConfig(server.url, concurrency=2, requests=None, duration_s=0.5))
    assert result.summary.ok >= 2 and not result.stopped
    assert all(r.finished_s >= 0 for r in result.results)


def test_a_request_that_is_a_bug_ends_the_run_with_its_error() -> None:
    # A stop sequence that JSON cannot carry: the client refuses the body (ValueError), which is no
    # server failure, so the run stops and raises it rather than counting it.
    with serve(good) as server, pytest.raises(ValueError, match="JSON"):
        run_load(LoadConfig(server.url, concurrency=2, requests=4, params={"stop": {"a set"}}))


def test_a_progress_callback_that_raises_stops_the_run() -> None:
    def progress(p: Progress) -> None:
        raise KeyError("the page went away")

    with serve(good) as server, pytest.raises(KeyError, match="the page went away"):
        run_load(LoadConfig(server.url, concurrency=2, requests=50), on_progress=progress)


def test_a_sweep_runs_every_level_and_stores_every_request(
    embedded_server: EmbeddedServer, tmp_path: Path
) -> None:
    db = tmp_path / "obs.db"
    config = LoadConfig(embedded_server.url, requests=4, max_tokens=8, stream=True)
    levels_seen: list[int] = []
    with recording(db) as tracer:
        sweep = run_sweep(config, (2, 1), client_factory=_factory(config, tracer),
                          on_level=lambda run: levels_seen.append(run.concurrency))
    assert levels_seen == [1, 2] and not sweep.stopped
    summaries = sweep.summaries
    assert [s.concurrency for s in summaries] == [1, 2]
    assert all(s.ok == 4 and s.requests_per_s > 0 and s.ttft_p95_ms is not None for s in summaries)
    stored = Stored.read(db)
    assert len(stored.answered) == 8
    assert sum(s.output_tokens for s in summaries) == stored.output_tokens


def test_a_background_load_is_watched_and_stopped_from_another_thread(
    embedded_server: EmbeddedServer,
) -> None:
    job = BackgroundLoad(LoadConfig(embedded_server.url, requests=100, max_tokens=32),
                         levels=(1, 2)).start()
    try:
        while (p := job.progress) is None or p.done < 1:
            assert job.wait(0.05) is False, job.error
    finally:
        job.stop()
    assert job.wait(60.0)
    assert job.error is None and job.stopping
    sweep = job.result
    assert sweep is not None and sweep.stopped and len(sweep.runs) == 1  # level 2 never began
    assert job.levels_done == sweep.runs
    assert sweep.runs[0].summary.ok >= 1
