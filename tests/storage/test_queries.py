"""The dashboard's queries against a brute-force computation over the same traces.

One file of 1,200 random traces (chats in conversations, turns with a call
under them, jobs with no LLM call, three services and models, errors, cache
hits, missing usage) is written once; every query over ranges that start and
end mid-minute and over each scope must equal what Python computes from the
trace objects themselves: counts and sums exactly (costs to the picodollar),
tile percentiles and per-minute series exactly, hourly percentiles within the 4% of their bins.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from obs import semconv
from obs.alerting.manager import AlertTransition
from obs.clock import FakeClock
from obs.logs import LogEntry
from obs.metrics.quantiles import exact_quantile
from obs.storage._checks import check_range, check_scope
from obs.storage._percentile import through_bins
from obs.storage.queries import DEFAULT_LATENCY_BOUNDS_MS, DashboardQueries
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.traces import Trace
from tests.storage._traces import BASE_MS, MODELS, SERVICES, request_span, requests, sums, trace_of
from tests.storage._traces import random_traces as make_traces

HOURLY_ACCURACY = 0.04
NOW_MS = BASE_MS + 4 * 3_600_000.0


@pytest.fixture(scope="module")
def traces() -> list[Trace]:
    return make_traces(1200)


@pytest.fixture(scope="module")
def queries(traces: list[Trace], tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardQueries]:
    path = tmp_path_factory.mktemp("queries") / "obs.db"
    with SqliteTraceStore(path) as store:
        for start in range(0, len(traces), 100):
            assert store.add_many(traces[start : start + 100]) == 100
        yield DashboardQueries(store, clock=FakeClock(start_ms=NOW_MS))


def _s(ms: float) -> float:
    return ms / 1000.0


# Ranges that start and end inside a minute, span one minute, lie inside one minute, or are open.
RANGES: list[tuple[float | None, float | None]] = [
    (None, None),
    (_s(BASE_MS + 12_345.678), _s(BASE_MS + 2 * 3_600_000.0 + 7_777.5)),
    (_s(BASE_MS + 60_000.0 * 30), _s(BASE_MS + 60_000.0 * 90)),  # on minute boundaries
    (_s(BASE_MS + 60_000.0 * 30 + 100.0), _s(BASE_MS + 60_000.0 * 30 + 59_000.0)),  # inside one minute
    (_s(BASE_MS + 3_600_000.0), None),
    (None, _s(BASE_MS + 1_000_000.25)),
    (_s(BASE_MS + 5 * 3_600_000.0), None),  # nothing there
]
SCOPES: list[dict[str, Any]] = [
    {}, {"service": "chat-app"}, {"model": "qwen"}, {"service": "batch-job", "model": "llama"},
    {"conversation": "conv-3"}, {"conversation": ["conv-1", "conv-2", "conv-40"]}, {"service": "nobody"},
]  # fmt: skip


def _expected_scope(scope: dict[str, Any]) -> dict[str, Any]:
    conversation = scope.get("conversation")
    if isinstance(conversation, str):
        conversation = [conversation]
    return {"service": scope.get("service"), "model": scope.get("model"), "conversation": conversation}


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize(("since", "until"), RANGES)
def test_tiles_equal_the_brute_force(
    queries: DashboardQueries, traces: list[Trace], since: float | None, until: float | None,
    scope: dict[str, Any],
) -> None:  # fmt: skip
    tiles = queries.tiles(since, until, **scope)
    want = sums(requests(traces, since, until, **_expected_scope(scope)))
    n = want["requests"]
    assert tiles.request_count == n
    assert tiles.error_count == want["errors"]
    assert tiles.prompt_tokens == want["inputs"] and tiles.completion_tokens == want["outputs"]
    assert tiles.total_tokens == want["inputs"] + want["outputs"]
    assert tiles.total_cost == pytest.approx(want["cost"], abs=1e-12 * (n + 1))
    assert tiles.cache_hits == want["cache_hits"] and tiles.cache_misses == n - want["cache_hits"]
    assert tiles.avg_latency_ms == pytest.approx(want["avg_latency"], rel=1e-9)
    assert tiles.p50_latency_ms == want["p50"]  # exact: nearest rank, read off the latency index
    assert tiles.p95_latency_ms == want["p95"]
    assert tiles.avg_ttft_ms == pytest.approx(want["avg_ttft"], rel=1e-9)
    assert tiles.error_rate == pytest.approx(want["errors"] / n if n else 0.0)
    assert tiles.cache_hit_rate == pytest.approx(want["cache_hits"] / n if n else 0.0)
    if n:
        assert tiles.first_request_at == _s(want["first"]) and tiles.last_request_at == _s(want["last"])
        start = since * 1000 if since is not None else want["first"]
        end = until * 1000 if until is not None else (NOW_MS if since is not None else want["last"])
        elapsed = max(1.0, (end - start) / 1000.0)
        assert tiles.requests_per_second == pytest.approx(n / elapsed)
        assert tiles.tokens_per_second == pytest.approx((want["inputs"] + want["outputs"]) / elapsed)
    else:
        assert tiles.first_request_at is None and tiles.requests_per_second == 0.0


def _buckets(found: list[Any], bucket_ms: float) -> dict[float, list[Any]]:
    grouped: dict[float, list[Any]] = {}
    for request in found:
        key = math.floor(request.span.start_time / bucket_ms) * bucket_ms / 1000.0
        grouped.setdefault(key, []).append(request)
    return grouped


def _close(got: float, want: float, accuracy: float) -> bool:
    return abs(got - want) <= accuracy * abs(want) + 1e-12


@pytest.mark.parametrize("bucket_s", [60, 3600])
@pytest.mark.parametrize("scope", [{}, {"service": "obs"}, {"model": "smollm2"}, {"conversation": "conv-7"}])
@pytest.mark.parametrize(("since", "until"), RANGES[:5])
def test_series_equal_the_brute_force(
    queries: DashboardQueries, traces: list[Trace], bucket_s: int, scope: dict[str, Any],
    since: float | None, until: float | None,
) -> None:  # fmt: skip
    got = queries.series(bucket_s, since, until, **scope)
    grouped = _buckets(requests(traces, since, until, **_expected_scope(scope)), bucket_s * 1000.0)
    assert [b.start for b in got] == sorted(grouped)
    exact = "conversation" in scope or bucket_s == 60
    for bucket in got:
        want = sums(grouped[bucket.start])
        assert (bucket.requests, bucket.errors, bucket.cache_hits) == (
            want["requests"], want["errors"], want["cache_hits"])  # fmt: skip
        assert (bucket.prompt_tokens, bucket.completion_tokens) == (want["inputs"], want["outputs"])
        assert bucket.cost == pytest.approx(want["cost"], abs=1e-12 * (want["requests"] + 1))
        assert bucket.avg_latency_ms == pytest.approx(want["avg_latency"], rel=1e-9)
        accuracy = 0.0 if exact else HOURLY_ACCURACY
        for field, key in (("p50_latency_ms", "p50"), ("p95_latency_ms", "p95"), ("p95_ttft_ms", "p95_ttft")):
            assert _close(getattr(bucket, field), want[key], accuracy), (bucket, field, want[key])


def test_per_second_series_are_exact(queries: DashboardQueries, traces: list[Trace]) -> None:
    since, until = _s(BASE_MS + 600_000.5), _s(BASE_MS + 600_000.5 + 3_600_000.0)
    got = queries.series(1, since, until)
    grouped = _buckets(requests(traces, since, until), 1000.0)
    assert [b.start for b in got] == sorted(grouped) and got
    for bucket in got:
        want = sums(grouped[bucket.start])
        assert (bucket.requests, bucket.p50_latency_ms, bucket.p95_latency_ms, bucket.p95_ttft_ms) == (
            want["requests"], want["p50"], want["p95"], want["p95_ttft"])  # fmt: skip


_PERCENTILES = ("p50_latency_ms", "p95_latency_ms", "p95_ttft_ms")


@pytest.mark.parametrize("bucket_s", [60, 3600])
@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize(("since", "until"), RANGES)
def test_series_without_percentiles_hold_the_same_sums_from_the_rollups(
    queries: DashboardQueries, bucket_s: int, scope: dict[str, Any], since: float | None, until: float | None,
) -> None:  # fmt: skip
    """The dashboard's buckets (no percentiles: from the rollups alone) equal the full series in all else."""
    full = queries.series(bucket_s, since, until, **scope)
    sums_only = queries.series(bucket_s, since, until, **scope, percentiles=False)
    assert [b.start for b in sums_only] == [b.start for b in full]
    for got, want in zip(sums_only, full, strict=True):
        assert all(math.isnan(getattr(got, name)) for name in _PERCENTILES)
        nan = dict.fromkeys(_PERCENTILES, math.nan)
        assert dataclasses.replace(got, **nan).to_dict().keys() == want.to_dict().keys()
        for name, value in want.to_dict().items():
            if name not in _PERCENTILES:
                assert getattr(got, name) == pytest.approx(value, rel=1e-12, abs=1e-15), (name, got, want)


def test_per_second_series_without_percentiles(queries: DashboardQueries) -> None:
    since, until = _s(BASE_MS + 600_000.5), _s(BASE_MS + 600_000.5 + 3_600_000.0)
    full, sums_only = queries.series(1, since, until), queries.series(1, since, until, percentiles=False)
    assert [(b.start, b.requests, b.cost) for b in sums_only] == [(b.start, b.requests, b.cost) for b in full]
    assert all(math.isnan(b.p95_latency_ms) for b in sums_only) and sums_only
    with pytest.raises(ValueError, match=r"percentiles must be True or False"):
        queries.series(60, percentiles=1)  # type: ignore[arg-type]


def _point(request: Any) -> tuple[Any, ...]:
    return (request.span.start_time / 1000.0, request.trace.id, request.span.status, request.latency,
            request.attrs.get(semconv.OBS_TTFT_MS))  # fmt: skip


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize(("since", "until"), RANGES)
def test_request_points_are_every_request_when_they_fit(
    queries: DashboardQueries, traces: list[Trace], since: float | None, until: float | None,
    scope: dict[str, Any],
) -> None:  # fmt: skip
    got = queries.request_points(since, until, points=5000, **scope)
    want = sorted(_point(r) for r in requests(traces, since, until, **_expected_scope(scope)))
    assert [(p.start, p.trace_id, p.status, p.latency_ms, p.ttft_ms) for p in got] == want


def _first_of_each_slice(found: list[Any], points: int) -> list[tuple[Any, ...]]:
    """The first request of each of `points` equal slices of time (`points` - 1 of them reach from the
    first request to the last), each bound computed as first + j * width, the same floats as the query's."""
    ordered = sorted(found, key=lambda r: r.span.start_time)
    first, last = ordered[0].span.start_time, ordered[-1].span.start_time
    width = (last - first) / (points - 1)
    picked = []
    for j in range(points):
        inside = [r for r in ordered if first + j * width <= r.span.start_time < first + (j + 1) * width]
        if inside:
            picked.append(_point(inside[0]))
    return picked


@pytest.mark.parametrize("points", [2, 7, 40])
@pytest.mark.parametrize("scope", [{}, {"model": "qwen"}, {"service": "chat-app", "model": "llama"},
                                   {"conversation": [f"conv-{i}" for i in range(0, 300, 3)]}])
@pytest.mark.parametrize(("since", "until"), [RANGES[0], RANGES[1], RANGES[4]])
def test_request_points_spread_over_the_range_when_they_do_not_fit(
    queries: DashboardQueries, traces: list[Trace], since: float | None, until: float | None,
    scope: dict[str, Any], points: int,
) -> None:  # fmt: skip
    found = requests(traces, since, until, **_expected_scope(scope))
    assert len(found) > points
    got = queries.request_points(since, until, points=points, **scope)
    want = _first_of_each_slice(found, points)
    assert [(p.start, p.trace_id, p.status, p.latency_ms, p.ttft_ms) for p in got] == want
    assert len(got) <= points and got[0].start == min(r.span.start_time for r in found) / 1000.0
    with pytest.raises(ValueError, match=r"points must be an int in \[1, 100000\]"):
        queries.request_points(points=0)


def test_series_arguments_are_checked(queries: DashboardQueries) -> None:
    with pytest.raises(ValueError, match=r"bucket_s must be 1, 60 or 3600"):
        queries.series(30)
    with pytest.raises(ValueError, match=r"bucket_s=1 needs a range of at most 3600 s.*use bucket_s=60"):
        queries.series(1, _s(BASE_MS), _s(BASE_MS + 3_600_001.0))
    with pytest.raises(ValueError, match=r"bucket_s=1 needs a range"):
        queries.series(1)
    with pytest.raises(ValueError, match=r"since must be None or epoch seconds"):
        queries.tiles(float("nan"))
    with pytest.raises(ValueError, match=r"since .* must not be after until"):
        queries.tiles(2.0, 1.0)
    with pytest.raises(ValueError, match=r"service must be None \(every service\) or a non-empty string"):
        queries.tiles(service="")
    with pytest.raises(ValueError, match=r"conversation must be None, a conversation id or a collection"):
        queries.tiles(conversation=[1, 2])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start=st.floats(min_value=-60_000.0, max_value=3 * 3_600_000.0),
    length=st.floats(min_value=0.0, max_value=2 * 3_600_000.0),
    service=st.sampled_from([None, *SERVICES]),
    model=st.sampled_from([None, *MODELS]),
)
def test_tiles_over_any_range_equal_the_brute_force(
    queries: DashboardQueries, traces: list[Trace], start: float, length: float, service: str | None,
    model: str | None,
) -> None:  # fmt: skip
    since, until = _s(BASE_MS + start), _s(BASE_MS + start + length)
    tiles = queries.tiles(since, until, service=service, model=model)
    want = sums(requests(traces, since, until, service=service, model=model))
    assert (tiles.request_count, tiles.error_count, tiles.prompt_tokens, tiles.p95_latency_ms) == (
        want["requests"], want["errors"], want["inputs"], want["p95"])  # fmt: skip


@pytest.mark.parametrize("scope", [{}, {"service": "chat-app"}, {"model": "qwen"},
                                   {"service": "batch-job", "model": "llama"}])
@pytest.mark.parametrize(("since", "until"), [RANGES[0], RANGES[1], RANGES[4], RANGES[5]])
def test_exact_percentiles_are_found_through_the_hourly_bins(
    queries: DashboardQueries, traces: list[Trace], since: float | None, until: float | None,
    scope: dict[str, Any],
) -> None:  # fmt: skip
    """Over a range holding whole hours the tiles' percentiles come through the hourly bins (not a walk
    along an index), and every quantile, the extremes too, is the exact one."""
    found = requests(traces, since, until, **_expected_scope(scope))
    latencies = [r.latency for r in found]
    qs = (0.0, 0.001, 0.25, 0.5, 0.95, 0.99, 1.0)
    lo, hi = check_range(since, until)
    with queries.store.database().read() as conn:
        got = through_bins(conn, lo, hi, check_scope(scope.get("service"), scope.get("model"), None),
                           len(latencies), qs)  # fmt: skip
    assert got == [exact_quantile(latencies, q) for q in qs]


def test_latency_histogram_counts_between_the_bounds(queries: DashboardQueries, traces: list[Trace]) -> None:
    since = _s(BASE_MS + 99_999.0)
    bounds = (100.0, 250.0, 1000.0)
    got = queries.latency_histogram(since, bounds_ms=bounds, model="qwen")
    latencies = [r.latency for r in requests(traces, since, None, model="qwen")]
    edges = [0.0, *bounds, math.inf]
    assert got == [sum(lo <= v < hi for v in latencies) for lo, hi in itertools.pairwise(edges)]
    with pytest.raises(ValueError, match=r"bounds_ms must be increasing"):
        queries.latency_histogram(bounds_ms=(5.0, 1.0))


@pytest.mark.parametrize("scope", SCOPES[:5])
@pytest.mark.parametrize(("since", "until"), RANGES[:4])
def test_the_dashboards_latency_histogram_comes_from_the_rollups(
    queries: DashboardQueries, traces: list[Trace], since: float | None, until: float | None,
    scope: dict[str, Any],
) -> None:  # fmt: skip
    latencies = [r.latency for r in requests(traces, since, until, **_expected_scope(scope))]
    edges = [0.0, *DEFAULT_LATENCY_BOUNDS_MS, math.inf]
    want = [sum(lo <= v < hi for v in latencies) for lo, hi in itertools.pairwise(edges)]
    assert queries.latency_histogram(since, until, **scope) == want


# -- traces ---------------------------------------------------------------------------------------


def _newest_first(traces: list[Trace]) -> list[Trace]:
    order = {t.id: i for i, t in enumerate(traces)}  # insertion order breaks ties, newest first too
    return sorted(traces, key=lambda t: (t.start_time, order[t.id]), reverse=True)


def test_trace_pages_are_newest_first_and_complete(queries: DashboardQueries, traces: list[Trace]) -> None:
    seen: list[str] = []
    offset = 0
    while True:
        page = queries.traces(limit=250, offset=offset)
        seen += [item.trace_id for item in page.items]
        offset += 250
        if not page.has_more:
            break
    assert seen == [t.id for t in _newest_first(traces)]


def test_trace_summaries_hold_what_the_traces_hold(queries: DashboardQueries, traces: list[Trace]) -> None:
    page = queries.traces(limit=1000)
    by_id = {t.id: t for t in traces}
    for item in page.items:
        trace = by_id[item.trace_id]
        calls = [s for s in trace.spans if semconv.GEN_AI_OPERATION_NAME in s.attributes]
        assert (item.name, item.status, item.span_count, item.requests) == (
            trace.name, trace.status, len(trace.spans), len(calls))  # fmt: skip
        assert item.start_time == _s(trace.start_time) and item.duration_ms == trace.duration
        assert item.service == trace.metadata[semconv.SERVICE_NAME]
        assert item.input_tokens == sum(s.attributes.get(semconv.GEN_AI_USAGE_INPUT_TOKENS, 0) for s in calls)
        assert item.cost == pytest.approx(sum(s.attributes.get(semconv.OBS_COST_USD, 0.0) for s in calls))
        assert item.model == (calls[0].attributes[semconv.GEN_AI_REQUEST_MODEL] if calls else None)
        question = calls[0].attributes.get(semconv.GEN_AI_INPUT_MESSAGES) if calls else None
        assert (item.input_preview is None) == (question is None)
        if question is not None:
            assert item.input_preview is not None and item.input_preview.startswith("question ")


@pytest.mark.parametrize(
    "filters",
    [
        {"status": "error"}, {"text": "CATS"}, {"text": "turn"}, {"model": "llama"}, {"service": "obs"},
        {"min_duration_ms": 900.0}, {"conversation": "conv-5"},
        {"status": "success", "service": "chat-app", "min_duration_ms": 100.0, "since": _s(BASE_MS + 3e6)},
        {"text": "100%_"},
    ],
)  # fmt: skip
def test_trace_filters_equal_the_brute_force(
    queries: DashboardQueries, traces: list[Trace], filters: dict[str, Any]
) -> None:
    def keep(t: Trace) -> bool:
        calls = [s for s in t.spans if semconv.GEN_AI_OPERATION_NAME in s.attributes]
        conversation = next((s.attributes.get(semconv.GEN_AI_CONVERSATION_ID) for s in t.spans
                             if semconv.GEN_AI_CONVERSATION_ID in s.attributes), None)  # fmt: skip
        model = calls[0].attributes.get(semconv.GEN_AI_REQUEST_MODEL) if calls else None
        text = filters.get("text", "").lower()
        haystack = [t.name, t.id, conversation or ""] + [
            s.attributes.get(k, "") for s in calls[:1] for k in (semconv.GEN_AI_INPUT_MESSAGES,)
        ]
        return (
            filters.get("status", t.status) == t.status
            and filters.get("model", model) == model
            and filters.get("service", t.metadata[semconv.SERVICE_NAME]) == t.metadata[semconv.SERVICE_NAME]
            and filters.get("conversation", conversation) == conversation
            and (t.duration or 0) >= filters.get("min_duration_ms", 0)
            and t.start_time >= filters.get("since", 0) * 1000
            and (not text or any(text in h.lower() for h in haystack))
        )

    page = queries.traces(limit=1000, **filters)
    assert [i.trace_id for i in page.items] == [t.id for t in _newest_first(traces) if keep(t)]


def test_one_trace_comes_back_whole(queries: DashboardQueries, traces: list[Trace]) -> None:
    for trace in traces[:50]:
        assert queries.trace(trace.id) == trace
    assert queries.trace("f" * 32) is None


# -- sessions --------------------------------------------------------------------------------------


def _conversations(traces: list[Trace]) -> dict[str, list[Trace]]:
    grouped: dict[str, list[Trace]] = {}
    for trace in traces:
        conversation = next((s.attributes[semconv.GEN_AI_CONVERSATION_ID] for s in trace.spans
                             if semconv.GEN_AI_CONVERSATION_ID in s.attributes), None)  # fmt: skip
        if conversation is not None:
            grouped.setdefault(conversation, []).append(trace)
    return grouped


def test_sessions_equal_the_brute_force(queries: DashboardQueries, traces: list[Trace]) -> None:
    grouped = _conversations(traces)
    page = queries.sessions(limit=1000)
    assert not page.has_more
    want_order = sorted(grouped, key=lambda c: max(t.end_time for t in grouped[c]), reverse=True)  # type: ignore[type-var]
    assert [s.conversation_id for s in page.items] == want_order
    for session in page.items:
        turns = sorted(grouped[session.conversation_id], key=lambda t: t.start_time)
        calls = [s for t in turns for s in t.spans if semconv.GEN_AI_OPERATION_NAME in s.attributes]
        assert session.turns == len(turns) and session.requests == len(calls)
        assert session.errors == sum(t.status == "error" for t in turns)
        inputs = sum(s.attributes.get(semconv.GEN_AI_USAGE_INPUT_TOKENS, 0) for s in calls)
        assert session.input_tokens == inputs
        assert session.cost == pytest.approx(sum(s.attributes.get(semconv.OBS_COST_USD, 0.0) for s in calls))
        assert session.total_latency_ms == pytest.approx(sum(t.duration for t in turns))  # type: ignore[misc]
        assert session.p95_latency_ms == exact_quantile([t.duration for t in turns], 0.95)  # type: ignore[misc]
        assert session.first_at == _s(turns[0].start_time)
        assert session.last_activity == _s(max(t.end_time for t in turns))  # type: ignore[type-var]
        first = next((t for t in turns if any(
            semconv.GEN_AI_INPUT_MESSAGES in s.attributes for s in t.spans)), None)  # fmt: skip
        if first is None:
            assert session.first_message is None
        else:
            index = int(first.id, 16) - 1
            assert session.first_message == f"question {index} about cats"


def test_session_filters(queries: DashboardQueries, traces: list[Trace]) -> None:
    grouped = _conversations(traces)
    failed = {c for c, ts in grouped.items() if any(t.status == "error" for t in ts)}
    assert {s.conversation_id for s in queries.sessions(limit=1000, errors_only=True).items} == failed
    on_llama = {c for c, ts in grouped.items() if any(
        s.attributes.get(semconv.GEN_AI_REQUEST_MODEL) == "llama" for t in ts for s in t.spans[:2]
        if semconv.GEN_AI_OPERATION_NAME in s.attributes and s is next(
            x for x in t.spans if semconv.GEN_AI_OPERATION_NAME in x.attributes))}  # fmt: skip
    assert {s.conversation_id for s in queries.sessions(limit=1000, model="llama").items} == on_llama
    matched = queries.sessions(limit=1000, text="conv-1").items
    assert matched and all("conv-1" in s.conversation_id for s in matched)
    first = queries.sessions(limit=3)
    second = queries.sessions(limit=3, offset=3)
    assert first.has_more and [s.conversation_id for s in first.items + second.items] == [
        s.conversation_id for s in queries.sessions(limit=6).items]  # fmt: skip


def test_one_session_gives_its_turns_in_order(queries: DashboardQueries, traces: list[Trace]) -> None:
    turns = sorted(_conversations(traces)["conv-9"], key=lambda t: t.start_time)
    assert [s.trace_id for s in queries.session("conv-9")] == [t.id for t in turns]
    assert queries.session_traces("conv-9") == turns
    assert queries.session("no such conversation") == []


def test_scope_values_are_listed(queries: DashboardQueries) -> None:
    assert queries.services() == sorted(SERVICES)
    assert queries.models() == sorted(MODELS)


# -- logs and alert transitions ----------------------------------------------------------------------


def test_logs_and_alert_transitions_are_paged_newest_first(tmp_path: Path) -> None:
    entries = [
        LogEntry(BASE_MS + i * 10.0, ("debug", "info", "warn", "error")[i % 4], f"message {i}",
                 {"i": i, "nan": float("nan")} if i % 7 == 0 else {"i": i}, f"{i:032x}", None)
        for i in range(100)
    ]  # fmt: skip
    transitions = [
        AlertTransition(f"rule-{i % 2}", "ok", "firing", _s(BASE_MS) + i, 3.0 if i % 3 else None, 2.0,
                        "error_rate", ">", 10)
        for i in range(10)
    ]  # fmt: skip
    with SqliteTraceStore(tmp_path / "obs.db") as store:
        assert store.add_logs(entries[:60], service="a") == 60
        assert store.add_logs(entries[60:], service="b") == 40
        assert store.add_alert_transitions(transitions) == 10
        queries = DashboardQueries(store)
        page = queries.logs(limit=30, min_level="warn", since=_s(BASE_MS + 100.0))
        want = [e for e in reversed(entries) if e.level in ("warn", "error") and e.timestamp >= BASE_MS + 100]
        assert [e.message for e in page.items] == [e.message for e in want[:30]] and page.has_more
        assert page.items[0].data == want[0].data and page.items[0].trace_id == want[0].trace_id
        assert queries.logs(limit=1000, text="message 7").items[-1].message == "message 7"
        assert queries.logs(limit=5, service="a").services == ("a",) * 5
        assert [e.message for e in queries.logs(trace_id=f"{3:032x}").items] == ["message 3"]
        got = queries.alert_transitions(rule="rule-1")
        assert got == [t for t in reversed(transitions) if t.rule == "rule-1"]
        with pytest.raises(ValueError, match=r"min_level must be None or one of"):
            queries.logs(min_level="loud")
        with pytest.raises(ValueError, match=r"limit must be an int in \[1, 1000\]"):
            queries.logs(limit=0)


def test_queries_refuse_what_is_not_a_sqlite_store() -> None:
    with pytest.raises(ValueError, match=r"store must be a SqliteTraceStore"):
        DashboardQueries(object())  # type: ignore[arg-type]


def test_a_removed_trace_leaves_the_sums(tmp_path: Path) -> None:
    """Replacing and evicting traces take their requests out of the rollup and the sessions again."""
    a = trace_of("a" * 32, "chat", [request_span("a" * 32, "1" * 16, BASE_MS, 100.0, conversation="c")])
    b = trace_of("b" * 32, "chat", [request_span("b" * 32, "2" * 16, BASE_MS + 10, 300.0, conversation="c")])
    replaced = trace_of("a" * 32, "chat", [request_span("a" * 32, "1" * 16, BASE_MS, 200.0, conversation="c",
                                                        inputs=99)])  # fmt: skip
    with SqliteTraceStore(tmp_path / "obs.db", max_traces=2) as store:
        queries = DashboardQueries(store)
        store.add_many([a, b])
        store.add(replaced)
        tiles = queries.tiles()
        assert (tiles.request_count, tiles.prompt_tokens, tiles.avg_latency_ms) == (2, 109, 250.0)
        assert [s.turns for s in queries.sessions().items] == [2]
        store.add(trace_of("c" * 32, "job", [request_span("c" * 32, "3" * 16, BASE_MS + 20, 1.0, model="x")]))
        assert len(store) == 2 and queries.tiles().request_count == 2  # b evicted (oldest insertion)
        assert [(s.turns, s.input_tokens) for s in queries.sessions().items] == [(1, 99)]
        assert queries.series(60)[0].requests == 2 and queries.series(3600)[0].requests == 2
        assert sum(queries.latency_histogram()) == 2
        store.clear()
        assert queries.tiles().request_count == 0 and queries.sessions().items == ()
        assert queries.series(60) == [] and queries.models() == []
