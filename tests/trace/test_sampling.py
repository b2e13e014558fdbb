"""Tests for obs.trace.sampling: head samplers against OpenTelemetry's, tail rules, environment config."""

from __future__ import annotations

import logging
import math
import random

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import sampling as otel_sampling

from obs import semconv
from obs.clock import FakeClock
from obs.metrics.collector import MetricsCollector
from obs.storage.memory import TraceStore
from obs.trace.ids import SequentialIdGenerator
from obs.trace.sampling.head import (
    AlwaysOff,
    AlwaysOn,
    HeadSampler,
    ParentBased,
    TraceIdRatio,
    sampler_from_env,
)
from obs.trace.sampling.tail import (
    KeepErrors,
    KeepMatching,
    KeepPredicate,
    KeepProbability,
    KeepSlow,
    TailRule,
    TailSampler,
    trace_duration_ms,
    trace_has_error,
)
from obs.trace.spans import create_span, end_span
from obs.trace.tracer import Tracer
from obs.trace.traces import Trace, add_span_to_trace, create_trace, end_trace
from tests.trace.support import Collected

RATES = [0.0, 1e-12, 0.001, 0.1, 0.25, 1 / 3, 0.5, 0.75, 0.9999, 1.0]


def _fixed_ids() -> list[str]:
    """Ids on both sides of every bound in RATES, extremes, and seeded random ones."""
    ids = {f"{1:032x}", f"{(1 << 128) - 1:032x}", f"{(1 << 64) - 1:032x}", f"{1 << 64:032x}"}
    for rate in RATES:
        bound = round(rate * 2**64)
        for low in (bound - 1, bound, bound + 1):
            if 0 <= low < 2**64:
                ids.add(f"{(0xABCDEF << 64) | low:032x}")
    rng = random.Random(20240501)
    ids.update(f"{rng.getrandbits(128):032x}" for _ in range(500))
    ids.discard("0" * 32)
    return sorted(ids)


FIXED_IDS = _fixed_ids()


def _otel_decision(sampler: otel_sampling.Sampler, trace_id: str, parent_sampled: bool | None = None) -> bool:
    context = None
    if parent_sampled is not None:
        parent = otel_trace.NonRecordingSpan(
            otel_trace.SpanContext(
                trace_id=int(trace_id, 16),
                span_id=0x1234,
                is_remote=True,
                trace_flags=otel_trace.TraceFlags(0x01 if parent_sampled else 0x00),
            )
        )
        context = otel_trace.set_span_in_context(parent)
    result = sampler.should_sample(context, int(trace_id, 16), "span")
    return result.decision.is_sampled()


# ---------------------------------------------------------------------------
# Head samplers


@pytest.mark.parametrize("rate", RATES)
def test_trace_id_ratio_decides_exactly_as_opentelemetry(rate: float) -> None:
    ours = TraceIdRatio(rate)
    theirs = otel_sampling.TraceIdRatioBased(rate)
    assert ours.bound == theirs.bound
    mismatches = [tid for tid in FIXED_IDS if ours.should_sample(tid) != _otel_decision(theirs, tid)]
    assert mismatches == []
    assert ours.description == theirs.get_description()


def test_fixed_ids_include_both_outcomes_for_a_middle_rate() -> None:
    decisions = {TraceIdRatio(0.5).should_sample(tid) for tid in FIXED_IDS}
    assert decisions == {True, False}


def test_trace_id_ratio_boundary_is_strictly_below() -> None:
    sampler = TraceIdRatio(0.5)
    assert sampler.bound == 2**63
    assert sampler.should_sample(f"{2**63 - 1:032x}") is True
    assert sampler.should_sample(f"{2**63:032x}") is False
    # Only the low 64 bits count: high bits do not change the decision.
    assert sampler.should_sample(f"{(0xFFFF << 64) | (2**63 - 1):032x}") is True


def test_trace_id_ratio_reads_64_bit_ids_like_their_low_half() -> None:
    sampler = TraceIdRatio(0.3)
    for tid in FIXED_IDS[:50]:
        assert sampler.should_sample(tid[-16:]) == sampler.should_sample(tid)


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5, 0.9])
def test_kept_fraction_over_100k_random_ids_is_within_one_percent(rate: float) -> None:
    rng = random.Random(7)
    sampler = TraceIdRatio(rate)
    n = 100_000
    kept = sum(sampler.should_sample(f"{rng.getrandbits(128):032x}") for _ in range(n))
    assert abs(kept / n - rate) < 0.01


def test_zero_and_one_keep_none_and_all() -> None:
    assert not any(TraceIdRatio(0.0).should_sample(tid) for tid in FIXED_IDS)
    assert all(TraceIdRatio(1.0).should_sample(tid) for tid in FIXED_IDS)


@pytest.mark.parametrize("bad", [-0.01, 1.0001, 2, float("nan"), float("inf"), "0.5", None, True])
def test_trace_id_ratio_rejects_rates_outside_zero_one(bad: object) -> None:
    with pytest.raises(ValueError) as excinfo:
        TraceIdRatio(bad)  # type: ignore[arg-type]
    message = str(excinfo.value)
    assert "rate" in message and "[0, 1]" in message and repr(bad) in message


def test_trace_id_ratio_rejects_non_hex_ids() -> None:
    with pytest.raises(ValueError, match="hex"):
        TraceIdRatio(0.5).should_sample("not-a-trace-id")


def test_always_on_and_off_ignore_the_parent_as_opentelemetry_does() -> None:
    tid = FIXED_IDS[3]
    for parent in (None, True, False):
        assert AlwaysOn().should_sample(tid, parent) is True
        assert AlwaysOff().should_sample(tid, parent) is False
        assert _otel_decision(otel_sampling.ALWAYS_ON, tid, parent) is True
        assert _otel_decision(otel_sampling.ALWAYS_OFF, tid, parent) is False
    assert AlwaysOn().description == otel_sampling.ALWAYS_ON.get_description()
    assert AlwaysOff().description == otel_sampling.ALWAYS_OFF.get_description()


@pytest.mark.parametrize("parent", [None, True, False])
@pytest.mark.parametrize("rate", [0.0, 0.25, 0.5, 1.0])
def test_parent_based_decides_exactly_as_opentelemetry(rate: float, parent: bool | None) -> None:
    ours = ParentBased(TraceIdRatio(rate))
    theirs = otel_sampling.ParentBased(otel_sampling.TraceIdRatioBased(rate))
    for tid in FIXED_IDS[:200]:
        assert ours.should_sample(tid, parent) == _otel_decision(theirs, tid, parent), tid
    assert ours.description == theirs.get_description()


def test_parent_based_children_share_the_root_decision() -> None:
    sampler = ParentBased(TraceIdRatio(0.5))
    for tid in FIXED_IDS:
        root = sampler.should_sample(tid)
        # A child asks with its parent's decision and always agrees with it.
        assert sampler.should_sample(tid, root) is root
        assert sampler.should_sample(tid, not root) is (not root)


def test_parent_based_rejects_a_root_that_is_not_a_sampler() -> None:
    with pytest.raises(ValueError, match="root"):
        ParentBased("always_on")  # type: ignore[arg-type]


def test_head_samplers_satisfy_the_protocol() -> None:
    for sampler in (AlwaysOn(), AlwaysOff(), TraceIdRatio(0.1), ParentBased(AlwaysOn())):
        assert isinstance(sampler, HeadSampler)


# ---------------------------------------------------------------------------
# Environment configuration


@pytest.mark.parametrize(
    ("name", "arg", "description"),
    [
        ("always_on", None, "AlwaysOnSampler"),
        ("always_off", None, "AlwaysOffSampler"),
        ("traceidratio", "0.25", "TraceIdRatioBased{0.25}"),
        ("parentbased_always_on", None, otel_sampling.ParentBased(otel_sampling.ALWAYS_ON).get_description()),
        (
            "parentbased_always_off",
            None,
            otel_sampling.ParentBased(otel_sampling.ALWAYS_OFF).get_description(),
        ),
        (
            "parentbased_traceidratio",
            "0.1",
            otel_sampling.ParentBasedTraceIdRatio(0.1).get_description(),
        ),
        ("  TraceIdRatio ", "0.5", "TraceIdRatioBased{0.5}"),
    ],
)
def test_sampler_from_env_builds_each_named_sampler(name: str, arg: str | None, description: str) -> None:
    environ = {"OTEL_TRACES_SAMPLER": name}
    if arg is not None:
        environ["OTEL_TRACES_SAMPLER_ARG"] = arg
    assert sampler_from_env(environ).description == description


@pytest.mark.parametrize("environ", [{}, {"OTEL_TRACES_SAMPLER": ""}, {"OTEL_TRACES_SAMPLER": "  "}])
def test_sampler_from_env_defaults_to_parent_based_always_on(environ: dict[str, str]) -> None:
    sampler = sampler_from_env(environ)
    assert isinstance(sampler, ParentBased) and isinstance(sampler.root, AlwaysOn)


def test_sampler_from_env_ratio_without_argument_keeps_everything() -> None:
    sampler = sampler_from_env({"OTEL_TRACES_SAMPLER": "traceidratio"})
    assert isinstance(sampler, TraceIdRatio) and sampler.rate == 1.0


@pytest.mark.parametrize("arg", ["abc", "1.5", "-0.1", "nan", "0,5"])
def test_sampler_from_env_invalid_argument_warns_and_uses_one(
    arg: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="obs.trace.sampling.head"):
        sampler = sampler_from_env({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                                    "OTEL_TRACES_SAMPLER_ARG": arg})
    assert isinstance(sampler, ParentBased)
    assert isinstance(sampler.root, TraceIdRatio) and sampler.root.rate == 1.0
    [record] = caplog.records
    assert "OTEL_TRACES_SAMPLER_ARG" in record.getMessage() and repr(arg) in record.getMessage()


def test_sampler_from_env_unknown_name_names_variable_value_and_allowed_values() -> None:
    with pytest.raises(ValueError) as excinfo:
        sampler_from_env({"OTEL_TRACES_SAMPLER": "traceidratoi"})
    message = str(excinfo.value)
    assert "OTEL_TRACES_SAMPLER" in message and "'traceidratoi'" in message
    assert "parentbased_traceidratio" in message and "always_off" in message


def test_sampler_from_env_unknown_name_not_strict_warns_and_uses_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="obs.trace.sampling.head"):
        sampler = sampler_from_env({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, strict=False)
    assert sampler.description == otel_sampling.DEFAULT_ON.get_description()
    assert "jaeger_remote" in caplog.text


def test_sampler_from_env_ignores_an_argument_for_samplers_without_one() -> None:
    sampler = sampler_from_env({"OTEL_TRACES_SAMPLER": "always_off", "OTEL_TRACES_SAMPLER_ARG": "0.5"})
    assert isinstance(sampler, AlwaysOff)


# ---------------------------------------------------------------------------
# Tail sampling


def _trace(
    *,
    spans: list[tuple[float, float, str]] | None = None,
    metadata: dict[str, object] | None = None,
    attributes: dict[str, object] | None = None,
) -> Trace:
    """A finished trace whose spans are (start offset ms, duration ms, status), all under one root."""
    clock = FakeClock(start_ms=1_000_000.0)
    ids = SequentialIdGenerator()
    trace = create_trace("request", metadata, clock=clock, id_generator=ids)
    spans = spans if spans is not None else [(0.0, 100.0, "success")]
    # Spans are built on their own clocks so each can start and last as asked.
    for index, (offset, duration, status) in enumerate(spans):
        span_clock = FakeClock(start_ms=1_000_000.0 + offset)
        span = create_span(f"step {index}", trace.id, None, attributes if index == 0 else None,
                           clock=span_clock, id_generator=ids)
        span_clock.advance(duration)
        span = end_span(span, "error" if status == "error" else "success", clock=span_clock)
        trace = add_span_to_trace(trace, span)
    clock.advance(max((o + d for o, d, _ in spans), default=0.0))
    return end_trace(trace, clock=clock)


def test_trace_duration_is_earliest_start_to_latest_end() -> None:
    trace = _trace(spans=[(10.0, 50.0, "success"), (0.0, 20.0, "success"), (30.0, 100.0, "success")])
    assert trace_duration_ms(trace) == 130.0


def test_trace_duration_without_spans_is_the_trace_duration() -> None:
    assert trace_duration_ms(_trace(spans=[])) == 0.0


def test_trace_has_error_sees_span_errors() -> None:
    assert trace_has_error(_trace(spans=[(0, 1, "success"), (1, 1, "error")]))
    assert not trace_has_error(_trace(spans=[(0, 1, "success")]))


def test_keep_errors_keeps_error_traces_only() -> None:
    sampler = TailSampler()
    assert sampler.decide(_trace(spans=[(0, 5, "error")])) == "errors"
    assert sampler.should_keep(_trace(spans=[(0, 5, "success")])) is False


def test_keep_errors_can_be_switched_off() -> None:
    sampler = TailSampler(keep_errors=False)
    assert sampler.rules == ()
    assert sampler.should_keep(_trace(spans=[(0, 5, "error")])) is False


def test_keep_slow_keeps_from_the_threshold_up() -> None:
    sampler = TailSampler(keep_errors=False, slow_threshold_ms=1000)
    assert sampler.decide(_trace(spans=[(0, 1000, "success")])) == "slow"
    assert sampler.should_keep(_trace(spans=[(0, 999.5, "success")])) is False
    # Two short spans far apart make a slow trace.
    assert sampler.should_keep(_trace(spans=[(0, 10, "success"), (1500, 10, "success")])) is True


def test_match_on_metadata_and_on_span_attributes() -> None:
    sampler = TailSampler(keep_errors=False, match={"user.tier": "premium",
                                                    semconv.GEN_AI_REQUEST_MODEL: {"big", "huge"}})
    assert sampler.decide(_trace(metadata={"user.tier": "premium"})) == "match user.tier"
    assert sampler.should_keep(_trace(metadata={"user.tier": "free"})) is False
    assert sampler.decide(_trace(attributes={semconv.GEN_AI_REQUEST_MODEL: "huge"})) == (
        f"match {semconv.GEN_AI_REQUEST_MODEL}"
    )
    assert sampler.should_keep(_trace(attributes={semconv.GEN_AI_REQUEST_MODEL: "small"})) is False


def test_match_with_a_value_predicate_and_unhashable_values() -> None:
    sampler = TailSampler(keep_errors=False, match={
        semconv.GEN_AI_USAGE_OUTPUT_TOKENS: lambda v: v > 1000,
        semconv.GEN_AI_RESPONSE_FINISH_REASONS: {"length"},
    })
    assert sampler.should_keep(_trace(attributes={semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 2048}))
    assert not sampler.should_keep(_trace(attributes={semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 10}))
    assert not sampler.should_keep(_trace(attributes={semconv.GEN_AI_RESPONSE_FINISH_REASONS: ["stop"]}))


def test_trace_predicate_rule() -> None:
    sampler = TailSampler(keep_errors=False, predicate=lambda t: len(t.spans) >= 3)
    assert sampler.decide(_trace(spans=[(0, 1, "success")] * 3)) == "predicate"
    assert not sampler.should_keep(_trace(spans=[(0, 1, "success")]))


def test_probability_draws_only_for_traces_no_other_rule_kept() -> None:
    draws = iter([0.05, 0.5, 0.09])
    calls: list[float] = []

    def rng() -> float:
        calls.append(value := next(draws))
        return value

    sampler = TailSampler(probability=0.1, rng=rng)
    assert sampler.decide(_trace(spans=[(0, 1, "error")])) == "errors"
    assert calls == []
    assert sampler.decide(_trace()) == "probability"
    assert sampler.decide(_trace()) is None
    assert sampler.decide(_trace()) == "probability"
    assert calls == [0.05, 0.5, 0.09]


def test_probability_share_over_many_traces_with_a_seeded_source() -> None:
    rule = KeepProbability(0.2, random.Random(3).random)
    trace = _trace()
    kept = sum(rule.keeps(trace) for _ in range(20_000))
    assert abs(kept / 20_000 - 0.2) < 0.01


def test_probability_zero_and_one_never_draw() -> None:
    def rng() -> float:
        raise AssertionError("must not draw")

    assert KeepProbability(0.0, rng).keeps(_trace()) is False
    assert KeepProbability(1.0, rng).keeps(_trace()) is True


def test_any_rule_keeps_and_rules_run_in_documented_order() -> None:
    custom = KeepPredicate(lambda t: t.name == "request", name="custom")
    sampler = TailSampler([custom], slow_threshold_ms=50, match={"k": "v"})
    assert [r.name for r in sampler.rules] == ["errors", "slow", "match k", "custom"]
    assert sampler.description == "TailSampler{errors,slow,match k,custom}"
    assert sampler.decide(_trace(spans=[(0, 100, "error")])) == "errors"
    assert sampler.decide(_trace(spans=[(0, 100, "success")])) == "slow"
    assert sampler.decide(_trace(spans=[(0, 1, "success")])) == "custom"


def test_a_raising_rule_keeps_the_trace_is_counted_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(trace: Trace) -> bool:
        raise RuntimeError("boom")

    sampler = TailSampler([KeepPredicate(broken, name="broken")], keep_errors=True)
    with caplog.at_level(logging.WARNING, logger="obs.trace.sampling.tail"):
        assert sampler.decide(_trace(spans=[(0, 1, "error")])) == "errors"
        assert sampler.rule_errors == 0
        assert sampler.decide(_trace()) == "broken"
    assert sampler.rule_errors == 1
    assert "broken" in caplog.text and "boom" in caplog.text


def test_rule_classes_satisfy_the_protocol() -> None:
    for rule in (KeepErrors(), KeepSlow(1), KeepMatching("k", 1), KeepPredicate(bool), KeepProbability(0.5)):
        assert isinstance(rule, TailRule)


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: TailSampler(probability=1.5), ["probability", "[0, 1]", "1.5"]),
        (lambda: TailSampler(probability=math.nan), ["probability", "nan"]),
        (lambda: TailSampler(slow_threshold_ms=-1), ["threshold_ms", "-1"]),
        (lambda: TailSampler(slow_threshold_ms=math.inf), ["threshold_ms", "inf"]),
        (lambda: TailSampler(match=[("k", "v")]), ["match", "mapping"]),
        (lambda: TailSampler(["not a rule"]), ["rule", "not a rule"]),
        (lambda: TailSampler(keep_errors="yes"), ["keep_errors", "yes"]),
        (lambda: KeepMatching("", 1), ["key"]),
        (lambda: KeepPredicate(42), ["predicate", "42"]),
        (lambda: KeepProbability(0.5, rng=3), ["rng"]),
    ],
)
def test_tail_configuration_is_validated_at_construction(build, words: list[str]) -> None:
    with pytest.raises(ValueError) as excinfo:
        build()
    for word in words:
        assert word in str(excinfo.value)


# ---------------------------------------------------------------------------
# Through the Tracer: what is stored, what is counted


class _SeededIds:
    """Random-looking but repeatable ids, so ratio decisions vary across traces."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def trace_id(self) -> str:
        return f"{self._rng.getrandbits(128) | 1:032x}"

    def span_id(self) -> str:
        return f"{self._rng.getrandbits(64) | 1:016x}"


def test_sampling_decides_what_is_stored_never_what_is_counted() -> None:
    clock = FakeClock()
    collector = MetricsCollector(clock=clock)
    store = TraceStore(max_traces=1000)
    exported = Collected()
    head = TraceIdRatio(0.25)
    tracer = Tracer(store=store, collector=collector, processors=[exported], clock=clock,
                    id_generator=_SeededIds(11), head_sampler=head, tail_sampler=TailSampler())
    expected = {"head": 0, "tail": 0, "dropped": 0}
    for index in range(400):
        failed = index % 10 == 0
        with tracer.start_span("chat") as span:
            clock.advance(5)
            # The client records every request's metrics, whatever sampling does with its trace.
            collector.record_request(5.0, 10, 20, error=failed)
            if failed:
                span.record_error("server said 500")
        kept_by_head = head.should_sample(span.trace_id)
        expected["head" if kept_by_head else "tail" if failed else "dropped"] += 1
    metrics = collector.get_metrics()
    assert metrics.request_count == 400 and metrics.error_count == 40
    assert metrics.traces_seen == 400
    assert (metrics.traces_kept_head, metrics.traces_kept_tail, metrics.traces_dropped) == (
        expected["head"], expected["tail"], expected["dropped"])
    assert 0 < expected["tail"] < 40 and expected["dropped"] > 200
    assert len(store) == len(exported) == expected["head"] + expected["tail"]
    assert all(head.should_sample(t.id) or t.status == "error" for t in store.all())


@pytest.mark.parametrize("flag", ["01", "00"])
def test_a_continued_trace_follows_the_incoming_decision(flag: str) -> None:
    store = TraceStore()
    # The ratio alone would keep this id (low 64 bits are 1); the parent's flag wins.
    tracer = Tracer(store=store, head_sampler=ParentBased(TraceIdRatio(0.5)))
    trace_id = f"{1:032x}"
    handle = tracer.begin_trace("incoming", traceparent=f"00-{trace_id}-{'ab' * 8}-{flag}")
    with tracer.start_span("child") as span:
        assert span.sampled is (flag == "01")
        assert tracer.traceparent().endswith(f"-{flag}")
    tracer.end_trace(handle)
    assert (store.get(trace_id) is not None) is (flag == "01")
