"""A MetricsCollector rebuilt from the file equals the one that recorded the calls.

Real calls through InstrumentedClient to loopback servers (answers, streams,
cached answers, server errors) are recorded in a collector and stored in a
SQLite file; after a "restart" the collector rebuilt from the file has the
same numbers: counts, tokens, cost (priced by server time), latency and TTFT
percentiles.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from obs.llm.client import InstrumentedClient
from obs.llm.errors import LLMServerError
from obs.metrics.collector import MetricsCollector
from obs.metrics.rebuild import RebuildReport, rebuild_collector
from obs.storage.queries import DashboardQueries
from obs.storage.sqlite import SqliteTraceStore
from tests.llm.servers import error_status, good, serve
from tests.storage._traces import BASE_MS, request_span, trace_of


def _collector() -> MetricsCollector:
    return MetricsCollector(compute_price_per_hour=0.9, model_prices={"other": (0.5, 1.0)})


def test_a_rebuilt_collector_equals_the_one_before_the_restart(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    before = _collector()
    with SqliteTraceStore(path) as store:
        with serve(good) as server, InstrumentedClient(
            server.url, store=store, collector=before, cache_size=4, capture_content=True
        ) as client:
            for i in range(6):
                client.chat([{"role": "user", "content": f"question {i % 4}"}], max_tokens=8)  # cache hits
            for _ in range(3):
                stream = client.chat_stream([{"role": "user", "content": "stream"}], max_tokens=8)
                assert "".join(stream)
        with serve(error_status(500, "boom")) as broken, InstrumentedClient(
            broken.url, store=store, collector=before
        ) as failing:
            for _ in range(2):
                with pytest.raises(LLMServerError):
                    failing.chat([{"role": "user", "content": "fail"}])
        want = before.get_metrics()
        assert want.request_count == 11 and want.cache_hits >= 2 and want.error_count == 2

    with SqliteTraceStore(path) as reopened:  # the restart
        after, report = rebuild_collector(reopened, _collector())
        got = after.get_metrics()
        tiles = DashboardQueries(reopened).tiles()
    assert report == RebuildReport(recorded=11, refused=0)
    same = (
        "request_count", "prompt_tokens", "completion_tokens", "total_tokens", "total_cost", "avg_latency_ms",
        "min_latency_ms", "max_latency_ms", "p50_latency_ms", "p90_latency_ms", "p95_latency_ms",
        "p99_latency_ms", "error_count", "cache_hits", "avg_ttft_ms", "p50_ttft_ms", "p95_ttft_ms",
    )  # fmt: skip
    assert {f: getattr(got, f) for f in same} == {f: getattr(want, f) for f in same}
    assert got.first_request_at == pytest.approx(want.first_request_at, abs=0.05)
    assert sum(b.requests for b in after.time_series(60)) == 11
    # The dashboard's tiles, read from the file, agree with both.
    assert (tiles.request_count, tiles.total_tokens, tiles.error_count) == (11, want.total_tokens, 2)
    assert tiles.total_cost == pytest.approx(want.total_cost, abs=1e-11)


def test_a_rebuild_over_a_range_and_scope_records_only_those(tmp_path: Path) -> None:
    spans = [request_span(f"{i + 1:032x}", f"{i + 1:016x}", BASE_MS + i * 60_000.0, 100.0 + i,
                          model="other" if i % 2 else "smollm2") for i in range(10)]  # fmt: skip
    with SqliteTraceStore(tmp_path / "obs.db") as store:
        store.add_many([trace_of(s.trace_id, "chat", [s]) for s in spans])
        collector, report = rebuild_collector(store, since=(BASE_MS + 120_000.0) / 1000, model="other")
        assert report.recorded == 4 and collector.get_metrics().request_count == 4  # i = 3, 5, 7, 9
        assert collector.get_metrics().min_latency_ms == 103.0
        with pytest.raises(ValueError, match=r"store must be a SqliteTraceStore"):
            rebuild_collector(object())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"since must be None or epoch seconds"):
            rebuild_collector(store, since="yesterday")  # type: ignore[arg-type]


def test_requests_the_collector_refuses_are_counted_not_raised(tmp_path: Path) -> None:
    ancient = request_span("a" * 32, "1" * 16, 100_000.0, 5.0)  # 1970: before what a collector takes
    with SqliteTraceStore(tmp_path / "obs.db") as store:
        store.add(trace_of("a" * 32, "chat", [ancient]))
        collector, report = rebuild_collector(store)
    assert report == RebuildReport(recorded=0, refused=1) and collector.get_metrics().request_count == 0
