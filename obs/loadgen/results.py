"""What a load run found: per-request results, the summary computed from them, and a sweep's knee.

Pure values and functions. A `RequestResult` is read off the span the
instrumented client recorded for the request (`RequestResult.from_span`), or
made from the error a failed request raised; `summarize` turns a run's
results into a `LoadSummary` (throughput, latency and TTFT percentiles,
errors by type), so the summary says exactly what the stored spans say.
Percentiles are nearest-rank (the value at rank ceil(q * n)), the
definition the dashboard's stored percentiles use. `find_knee` reads a
sweep's capacity curve.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from obs import semconv

__all__ = [
    "Knee",
    "LoadResult",
    "LoadSummary",
    "Progress",
    "RequestResult",
    "SweepResult",
    "find_knee",
    "percentile",
    "summarize",
]

# A step to more concurrency is past the knee when p95 grows this much more than throughput does.
KNEE_TOLERANCE = 1.10


def percentile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank q-quantile of `values` (0 < q <= 1): the value at rank ceil(q * n); None if empty."""
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], got {q!r}")
    ordered = sorted(values)
    if not ordered:
        return None
    return float(ordered[max(1, math.ceil(q * len(ordered) - 1e-9)) - 1])


def _number(attributes: Mapping[str, Any], key: str) -> float | None:
    value = attributes.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a run stands: requests ended (`done`, of which `errors` failed), `in_flight`, time so far.

    `total` is the number of requests asked for and `duration_s` the time
    allowed (either may be None); `concurrency` is the run's; `results` the
    requests ended so far, in the order they ended.
    """

    concurrency: int
    done: int
    errors: int
    in_flight: int
    elapsed_s: float
    output_tokens: int = 0
    total: int | None = None
    duration_s: float | None = None
    results: tuple[RequestResult, ...] = ()

    @property
    def fraction(self) -> float:
        """How far the run is, 0..1: the larger of requests done / total and time / duration."""
        parts = [0.0]
        if self.total:
            parts.append(self.done / self.total)
        if self.duration_s:
            parts.append(self.elapsed_s / self.duration_s)
        return min(1.0, max(parts))


@dataclass(frozen=True, slots=True)
class RequestResult:
    """One request of a load run, as it ended.

    `error_type` is None for an answered request, else the `error.type` its
    span carries (the obs error's class name, or the HTTP status).
    `latency_ms` and `ttft_ms` (streamed answers only) are the span's
    `obs.latency_ms` and `obs.ttft_ms`; tokens are its
    `gen_ai.usage.*_tokens` (0 when it has none). `finished_s` is when it
    ended, in seconds from the run's start; `trace_id` the span's trace.
    """

    index: int
    latency_ms: float
    finished_s: float
    error_type: str | None = None
    ttft_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    trace_id: str | None = None

    @property
    def ok(self) -> bool:
        """True for an answered request."""
        return self.error_type is None

    @classmethod
    def from_span(cls, index: int, span: Any, finished_s: float) -> RequestResult:
        """The result of request `index` read off the span the client recorded for it (an obs Span)."""
        attrs = span.attributes
        latency = _number(attrs, semconv.OBS_LATENCY_MS)
        error = attrs.get(semconv.ERROR_TYPE) if span.status == "error" else None
        if span.status == "error" and error is None:
            error = semconv.ERROR_TYPE_OTHER
        return cls(
            index=index,
            latency_ms=latency if latency is not None else float(span.duration or 0.0),
            finished_s=finished_s,
            error_type=None if error is None else str(error),
            ttft_ms=_number(attrs, semconv.OBS_TTFT_MS),
            input_tokens=int(_number(attrs, semconv.GEN_AI_USAGE_INPUT_TOKENS) or 0),
            output_tokens=int(_number(attrs, semconv.GEN_AI_USAGE_OUTPUT_TOKENS) or 0),
            trace_id=span.trace_id,
        )


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """A run in numbers. Rates are per second of `elapsed_s`; latencies in ms, None when nothing to measure.

    `requests` counts the requests that ended (answered or failed), `ok` the
    answered ones, `errors` the failed ones (`errors_by_type` by
    `error.type`), `cancelled` those stopped in flight by a stop (Ctrl-C).
    `requests_per_s` and `output_tokens_per_s` count answered requests and
    their output tokens; latency and TTFT percentiles are over answered
    requests (TTFT only for streamed ones).
    """

    concurrency: int
    elapsed_s: float
    requests: int
    ok: int
    errors: int
    cancelled: int
    input_tokens: int
    output_tokens: int
    requests_per_s: float
    output_tokens_per_s: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    errors_by_type: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-ready values."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values["errors_by_type"] = dict(self.errors_by_type)
        return values


def summarize(
    results: Sequence[RequestResult], elapsed_s: float, *, concurrency: int, cancelled: int = 0
) -> LoadSummary:
    """The summary of a run whose requests ended as `results` over `elapsed_s` seconds."""
    answered = [r for r in results if r.ok]
    failed = Counter(r.error_type for r in results if not r.ok)
    output = sum(r.output_tokens for r in answered)
    latencies = [r.latency_ms for r in answered]
    ttfts = [r.ttft_ms for r in answered if r.ttft_ms is not None]
    per_s = (lambda count: count / elapsed_s) if elapsed_s > 0 else (lambda count: 0.0)
    return LoadSummary(
        concurrency=concurrency,
        elapsed_s=elapsed_s,
        requests=len(results),
        ok=len(answered),
        errors=sum(failed.values()),
        cancelled=cancelled,
        input_tokens=sum(r.input_tokens for r in answered),
        output_tokens=output,
        requests_per_s=per_s(len(answered)),
        output_tokens_per_s=per_s(output),
        latency_p50_ms=percentile(latencies, 0.50),
        latency_p95_ms=percentile(latencies, 0.95),
        latency_p99_ms=percentile(latencies, 0.99),
        ttft_p50_ms=percentile(ttfts, 0.50),
        ttft_p95_ms=percentile(ttfts, 0.95),
        errors_by_type=dict(sorted(failed.items(), key=lambda kv: (-kv[1], str(kv[0])))),  # type: ignore[arg-type]
    )


@dataclass(frozen=True, slots=True)
class LoadResult:
    """A finished (or stopped) run: its results in the order they ended, and its summary.

    `stopped` is True when a stop (Ctrl-C, `stop_event`) ended it early;
    `cancelled` requests were in flight then and are not in `results`.
    """

    concurrency: int
    results: tuple[RequestResult, ...]
    elapsed_s: float
    cancelled: int = 0
    stopped: bool = False

    @property
    def summary(self) -> LoadSummary:
        """The numbers of the run, computed from `results`."""
        return summarize(self.results, self.elapsed_s, concurrency=self.concurrency, cancelled=self.cancelled)


@dataclass(frozen=True, slots=True)
class Knee:
    """Where a capacity curve turns: past concurrency `at`, p95 grows faster than throughput.

    `next_level` is the first level past it; the growth factors are from `at` to `next_level`.
    """

    at: int
    next_level: int
    p95_growth: float
    throughput_growth: float
    p95_before_ms: float
    p95_after_ms: float

    def describe(self) -> str:
        """The knee in a sentence, as the sweep table's footer says it."""
        return (f"knee at concurrency {self.at}: going to {self.next_level}, p95 latency turns up "
                f"{self.p95_before_ms:.0f} -> {self.p95_after_ms:.0f} ms (x{self.p95_growth:.2f}) while "
                f"throughput grows x{self.throughput_growth:.2f}")  # fmt: skip


def find_knee(points: Sequence[LoadSummary], tolerance: float = KNEE_TOLERANCE) -> Knee | None:
    """The knee of a capacity curve (summaries in increasing concurrency), or None if it never turns.

    Between two neighbouring levels, p95 latency growing by more than
    `tolerance` times throughput's growth means the extra requests mostly
    wait: the first level where that starts is the knee. Levels without an
    answered request are skipped.
    """
    usable = [p for p in points if p.latency_p95_ms and p.requests_per_s > 0]
    for before, after in itertools.pairwise(usable):
        p95_growth = after.latency_p95_ms / before.latency_p95_ms  # type: ignore[operator]
        throughput_growth = after.requests_per_s / before.requests_per_s
        if p95_growth > tolerance * throughput_growth:
            return Knee(before.concurrency, after.concurrency, p95_growth, throughput_growth,
                        before.latency_p95_ms, after.latency_p95_ms)  # type: ignore[arg-type]
    return None


@dataclass(frozen=True, slots=True)
class SweepResult:
    """A sweep: one LoadResult per concurrency level, in increasing order; `stopped` if cut short."""

    runs: tuple[LoadResult, ...]
    stopped: bool = False

    @property
    def summaries(self) -> list[LoadSummary]:
        """Each level's summary, in increasing concurrency: the capacity curve's points."""
        return [run.summary for run in self.runs]

    @property
    def knee(self) -> Knee | None:
        """Where p95 turns up (`find_knee`), or None."""
        return find_knee(self.summaries)
