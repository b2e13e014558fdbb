"""to_prometheus: text exposition that prometheus_client's own parser reads back."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from obs.clock import FakeClock
from obs.export import Histogram, collector_histograms, to_prometheus
from obs.export.histograms import DURATION_BUCKETS_S, TOKEN_BUCKETS
from obs.metrics.collector import MetricsCollector


def _collector() -> MetricsCollector:
    clock = FakeClock(start_ms=1_700_000_040_000)
    collector = MetricsCollector(clock=clock)
    collector.record_request(812.0, 1000, 500, ttft_ms=95.0)
    collector.record_request(15.0, 10, 5, error=True)
    collector.record_request(3000.0, 20, 40, cached=True, ttft_ms=2000.0)
    collector.record_request(99_000.0, 7, 0)
    collector.record_sampling("head")
    collector.record_sampling("tail")
    collector.record_sampling("dropped")
    collector.record_sampling("dropped")
    return collector


def _families(text: str) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _samples(family: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}  # type: ignore[attr-defined]


def test_the_text_parses_with_prometheus_clients_parser_and_has_the_counters() -> None:
    text = to_prometheus(_collector())
    assert text.endswith("\n")
    families = _families(text)
    assert {name: f.type for name, f in families.items()} == {  # type: ignore[attr-defined]
        "obs_llm_requests": "counter", "obs_llm_errors": "counter", "obs_llm_cache_hits": "counter",
        "obs_llm_tokens": "counter", "obs_llm_cost_usd": "counter", "obs_traces": "counter",
        "gen_ai_client_operation_duration_seconds": "histogram",
        "gen_ai_client_operation_time_to_first_chunk_seconds": "histogram",
        "gen_ai_client_token_usage": "histogram",
    }
    assert _samples(families["obs_llm_requests"]) == {("obs_llm_requests_total", ()): 4}
    assert _samples(families["obs_llm_errors"]) == {("obs_llm_errors_total", ()): 1}
    assert _samples(families["obs_llm_cache_hits"]) == {("obs_llm_cache_hits_total", ()): 1}
    assert _samples(families["obs_llm_tokens"]) == {
        ("obs_llm_tokens_total", (("gen_ai_token_type", "input"),)): 1037,
        ("obs_llm_tokens_total", (("gen_ai_token_type", "output"),)): 545,
    }
    assert _samples(families["obs_llm_cost_usd"])[("obs_llm_cost_usd_total", ())] == pytest.approx(0.002127)
    assert _samples(families["obs_traces"]) == {
        ("obs_traces_total", (("decision", "dropped"),)): 2,
        ("obs_traces_total", (("decision", "head"),)): 1,
        ("obs_traces_total", (("decision", "tail"),)): 1,
    }


def test_names_follow_prometheus_rules_and_each_metric_has_one_help_and_type_first() -> None:
    text = to_prometheus(_collector())
    seen: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# "):
            kind, name = line.split()[1:3]
            assert (name, kind) not in {(n, k) for n, k in seen.items()}
            seen.setdefault(name, "")
            seen[name] += kind
            continue
        name = re.match(r"[a-zA-Z_][a-zA-Z0-9_]*", line).group(0)  # type: ignore[union-attr]
        assert ":" not in name
        family = next(f for f in seen if name == f or name.startswith(f + "_"))
        assert seen[family] == "HELPTYPE"  # HELP then TYPE, once, before the samples
    for family, kinds in seen.items():
        assert kinds == "HELPTYPE"
        if family.startswith("obs_"):
            assert family.endswith("_total")
    assert "gen_ai_client_operation_duration_seconds_bucket" in text
    assert "{token}" not in text and "token_usage_tokens" not in text


def test_duration_and_ttft_histograms_use_the_genai_buckets_and_end_at_inf() -> None:
    text = to_prometheus(_collector())
    families = _families(text)
    duration = _samples(families["gen_ai_client_operation_duration_seconds"])
    buckets = [(float(dict(labels)["le"]), value) for (name, labels), value in duration.items()
               if name.endswith("_bucket")]
    assert [le for le, _ in buckets] == [*DURATION_BUCKETS_S, float("inf")]
    counts = [value for _, value in buckets]
    assert counts == sorted(counts) and counts[-1] == 4
    # 15 ms, 812 ms, 3 s, 99 s: each far from any boundary, so each in its exact bucket.
    assert dict(buckets)[0.01] == 0 and dict(buckets)[0.02] == 1 and dict(buckets)[0.64] == 1
    assert dict(buckets)[1.28] == 2 and dict(buckets)[5.12] == 3 and dict(buckets)[81.92] == 3
    assert duration[("gen_ai_client_operation_duration_seconds_count", ())] == 4
    assert duration[("gen_ai_client_operation_duration_seconds_sum", ())] == pytest.approx(102.827)
    ttft = _samples(families["gen_ai_client_operation_time_to_first_chunk_seconds"])
    assert ttft[("gen_ai_client_operation_time_to_first_chunk_seconds_count", ())] == 2
    assert ttft[("gen_ai_client_operation_time_to_first_chunk_seconds_bucket", (("le", "0.16"),))] == 1
    assert ttft[("gen_ai_client_operation_time_to_first_chunk_seconds_sum", ())] == pytest.approx(2.095)


def test_token_usage_without_exact_buckets_carries_count_and_sum() -> None:
    families = _families(to_prometheus(_collector()))
    usage = _samples(families["gen_ai_client_token_usage"])
    assert usage[("gen_ai_client_token_usage_count", (("gen_ai_token_type", "input"),))] == 4
    assert usage[("gen_ai_client_token_usage_sum", (("gen_ai_token_type", "output"),))] == 545
    assert usage[("gen_ai_client_token_usage_bucket", (("gen_ai_token_type", "input"), ("le", "+Inf")))] == 4


class _ExactCollector(MetricsCollector):
    """A collector that keeps fixed-bucket histograms, as MetricsCollector could (`genai_histograms`)."""

    def genai_histograms(self) -> dict[str, Histogram]:
        tokens = tuple(0 if b < 16 else 2 for b in TOKEN_BUCKETS)
        seconds = tuple(1 for _ in DURATION_BUCKETS_S)
        return {
            "duration": Histogram(DURATION_BUCKETS_S, seconds, 1, 0.005),
            "ttft": Histogram(DURATION_BUCKETS_S, seconds, 1, 0.005),
            "input_tokens": Histogram(TOKEN_BUCKETS, tokens, 2, 30.0),
            "output_tokens": Histogram(TOKEN_BUCKETS, tokens, 2, 24.0),
        }


def test_exact_histograms_are_used_when_the_collector_offers_them() -> None:
    families = _families(to_prometheus(_ExactCollector()))
    usage = _samples(families["gen_ai_client_token_usage"])
    buckets = [dict(labels)["le"] for (name, labels), _ in usage.items()
               if name.endswith("_bucket") and dict(labels)["gen_ai_token_type"] == "input"]
    assert buckets == ["1", "4", "16", "64", "256", "1024", "4096", "16384", "65536", "262144", "1048576",
                       "4194304", "16777216", "67108864", "+Inf"]
    assert usage[("gen_ai_client_token_usage_bucket", (("gen_ai_token_type", "input"), ("le", "16")))] == 2


def test_an_empty_collector_gives_zeros_and_a_bad_argument_is_refused() -> None:
    families = _families(to_prometheus(MetricsCollector()))
    assert _samples(families["obs_llm_requests"]) == {("obs_llm_requests_total", ()): 0}
    assert collector_histograms(MetricsCollector())["duration"].count == 0
    with pytest.raises(ValueError, match="to_prometheus: collector must be a MetricsCollector"):
        to_prometheus(object())
    with pytest.raises(ValueError, match="cumulative counts must not decrease"):
        Histogram((1.0, 2.0), (3, 2), 3, 0.0)
