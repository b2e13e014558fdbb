"""Request metrics: counts, tokens, cost, latency percentiles and time series in bounded memory.

`MetricsCollector` records one call per LLM request (`record_request`) and
one per finished trace (`record_sampling`), and answers three questions:

- `get_metrics()`: totals since the start (or the last `reset`), with
  latency and time-to-first-token percentiles from a `QuantileSketch`
  (relative error at most `relative_accuracy`, 1% by default);
- `time_series(bucket_s)`: per-second or per-minute buckets for charts;
- `window(window_s, now)`: a sliding window over those buckets, for alert rules.

Memory does not grow with the number of requests. Totals are a few numbers
and two sketches. Time buckets live in two fixed rings of columns
(`obs.metrics.timeseries`): one slot per second for `per_second_retention_s` (1 h)
and one per minute for `per_minute_retention_s` (24 h). Each slot keeps
counts and sums, plus two compact bin arrays (latency, TTFT) whose bins each
join `series_coarsening` (2) bins of the totals' sketch, so series
percentiles are within `series_relative_accuracy` (0.019998 by default), with
at most `series_max_bins` (256) counters per array. A per-second slot is
folded into its minute when its ring position is reused, so a request is
written to one slot only. With the defaults a collector holds about 3 MB
after a million requests spread over a day (see benchmarks/bench_metrics.py),
and about 7 MB at worst whatever the data (every array at its bound; 12 MB if
more than 65,535 requests of one minute land in a single 4%-wide latency bin).
Retention counts back from the newest timestamp recorded: older requests
still count in the totals, just not in the series.

Prices are dollars per 1,000 tokens, or dollars per hour of server time (a
compute price, for local models: see `obs.metrics._pricing`). By tokens a request costs
`(prompt_tokens * prompt_price + completion_tokens * completion_price) / 1000`,
rounded to 12 decimals (1e-12 dollars), so 1000 prompt and 500 completion tokens at
0.001/0.002 cost exactly 0.002. `cost_by_model()` tells each model's cost and how it was priced.
"""

from __future__ import annotations

import copy
import math
import numbers
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from obs.clock import SYSTEM_CLOCK, Clock
from obs.metrics._checks import (
    MAX_AHEAD_S,
    MAX_MS,
    MAX_RETENTION_S,
    MAX_TOKENS,
    MIN_TIMESTAMP,
    check_accuracy,
    check_flag,
    check_int,
    check_model,
    check_ms,
    check_recorded_timestamp,
    check_timestamp,
    check_tokens,
)
from obs.metrics._pricing import UNITS_PER_DOLLAR, CostTally, PriceBook, PricingMethods
from obs.metrics.histograms import GenAIHistograms, Histogram
from obs.metrics.quantiles import QuantileSketch
from obs.metrics.timeseries import TimeBucket, WindowStats, _Series

__all__ = ["MetricsCollector", "MetricsSnapshot", "SamplingDecision", "TimeBucket", "WindowStats"]

SamplingDecision = Literal["head", "tail", "dropped"]
_DECISIONS = ("head", "tail", "dropped")
_INF = math.inf
_log = math.log
_ceil = math.ceil
@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Totals since the collector started or was reset; every number is 0 when empty.

    Latencies and TTFT are milliseconds. Percentiles come from a quantile
    sketch: each is within the collector's `relative_accuracy` (1% by default)
    relative error of the exact value of nearest rank ceil(q*n); min and max are
    exact. Rates are fractions in [0, 1]. `requests_per_second` and
    `tokens_per_second` divide by the seconds from the first to the last
    request timestamp, floored at 1 s. `first_request_at` and
    `last_request_at` are epoch seconds, or None before any request.
    """

    request_count: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    total_cost: float
    avg_latency_ms: float
    min_latency_ms: float
    max_latency_ms: float
    p50_latency_ms: float
    p90_latency_ms: float
    p95_latency_ms: float
    p99_latency_ms: float
    error_count: int
    error_rate: float
    cache_hits: int
    cache_misses: int
    cache_hit_rate: float
    requests_per_second: float
    tokens_per_second: float
    avg_ttft_ms: float
    p50_ttft_ms: float
    p95_ttft_ms: float
    traces_seen: int
    traces_kept_head: int
    traces_kept_tail: int
    traces_dropped: int
    first_request_at: float | None
    last_request_at: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


class MetricsCollector(PricingMethods):
    """Counts, tokens, cost, latency percentiles and time series of LLM requests; thread-safe.

    Prices are dollars per 1K tokens; `model_prices[model] = (prompt, completion)`
    overrides them for requests of that exact model name. A compute price,
    dollars per hour of the server time llama.cpp reports, replaces them by
    default (`compute_price_per_hour`) or per model (`model_compute_prices`). Percentiles of
    `get_metrics()` are within `relative_accuracy` (default 0.01 = 1%) of the
    exact value of nearest rank ceil(q*n), as long as the latencies span less than
    `max_bins` bins (a ratio of 10**17 at the defaults); those of `time_series()`
    and `window()` within `series_relative_accuracy` (0.019998 by default, bins
    `series_coarsening` times wider), as long as one bucket's values span less
    than `series_max_bins` bins (a ratio of 28,000 at the defaults; beyond it
    the lowest bins merge, which spares high percentiles). Memory is bounded by
    the configuration, not by the number of requests (see the module
    docstring). Every argument is validated here: ValueError names the
    argument, the value and the allowed range.
    """

    def __init__(
        self,
        prompt_token_cost: float = 0.001,
        completion_token_cost: float = 0.002,
        model_prices: Mapping[str, tuple[float, float]] | None = None,
        *,
        compute_price_per_hour: float | None = None,
        model_compute_prices: Mapping[str, float] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        relative_accuracy: float = 0.01,
        max_bins: int = 2048,
        series_coarsening: int = 2,
        series_max_bins: int = 256,
        per_second_retention_s: int = 3600,
        per_minute_retention_s: int = 86400,
    ) -> None:
        """Build a collector; see the class docstring for what each argument means.

        Ranges: prices in [0, 1e6] (a model in both `model_prices` and
        `model_compute_prices` is refused); `relative_accuracy` in [0.0001, 0.5];
        `series_coarsening` an int in [1, 16]; `max_bins` and
        `series_max_bins` ints in [16, 65536]; `per_second_retention_s` an int in
        [60, 86400]; `per_minute_retention_s` a multiple of 60 from
        `per_second_retention_s` to 31 days.
        """
        self._book = PriceBook(
            prompt_token_cost, completion_token_cost, model_prices, compute_price_per_hour,
            model_compute_prices,
        )
        if not isinstance(clock, Clock):
            raise ValueError(f"clock must have time_ms() and monotonic_ms(), got {clock!r}")
        self._clock = clock
        self._accuracy = check_accuracy("relative_accuracy", relative_accuracy)
        self._max_bins = check_int("max_bins", max_bins, 16, 65536)
        self._coarsening = check_int("series_coarsening", series_coarsening, 1, 16)
        self._series_max_bins = check_int("series_max_bins", series_max_bins, 16, 65536)
        self._sec_retention = check_int("per_second_retention_s", per_second_retention_s, 60, 86400)
        self._min_retention = check_int(
            "per_minute_retention_s", per_minute_retention_s, self._sec_retention, MAX_RETENTION_S, 60
        )
        self._lat_template = QuantileSketch(self._accuracy, self._max_bins)
        self._mult = self._lat_template.mapping.multiplier
        self._series_template = QuantileSketch(
            max_bins=self._series_max_bins,
            mapping=self._lat_template.mapping.coarsened(self._coarsening),
        )
        self._lock = threading.Lock()
        self._latest_allowed = -_INF  # set by the first timestamp checked (see _check_recorded)
        self._clear()

    def _clear(self) -> None:
        """Set every recorded number back to empty (prices and configuration stay)."""
        self._count = 0
        self._errors = 0
        self._cache_hits = 0
        self._prompt = 0
        self._completion = 0
        self._cost = 0
        self._costs = CostTally()
        self._lat = self._lat_template.copy()
        self._ttft = self._lat_template.copy()
        self._hist = GenAIHistograms()
        self._first = _INF
        self._last = -_INF
        self._traces = {"head": 0, "tail": 0, "dropped": 0}
        self._series = _Series(
            self._sec_retention, self._min_retention, self._series_max_bins, self._series_template
        )

    @property
    def relative_accuracy(self) -> float:
        """The relative error bound of the percentiles of `get_metrics()`."""
        return self._lat_template.relative_accuracy

    @property
    def series_relative_accuracy(self) -> float:
        """The relative error bound of the percentiles of `time_series()` and `window()`."""
        return self._series_template.relative_accuracy

    # -- prices: set_prices, set_compute_price, prices_for, price_for, cost_for and cost_by_model
    # come from PricingMethods (obs.metrics._pricing).

    # -- recording ------------------------------------------------------------------------------

    def _check_recorded(self, value: Any) -> float:
        """`value` checked by `check_recorded_timestamp` against the clock read now.

        Also refreshes `_latest_allowed`, the bound the fast path of
        `record_request` compares with: it only grows with the clock, so a
        stale one refuses too much, never too little, and a refusal reads the
        clock again before it is final.
        """
        now_s = self._clock.time_ms() / 1000.0
        self._latest_allowed = now_s + MAX_AHEAD_S
        return check_recorded_timestamp(value, now_s)

    def record_request(
        self,
        latency_ms: float,
        prompt_tokens: int,
        completion_tokens: int,
        cached: bool = False,
        error: bool = False,
        model: str | None = None,
        ttft_ms: float | None = None,
        timestamp: float | None = None,
        server_ms: float | None = None,
    ) -> float:
        """Record one finished request and return its cost in dollars.

        `server_ms` is the time the server spent on it, what compute prices
        apply to (llama.cpp's `prompt_ms + predicted_ms`; None when unknown),
        in the same range as `latency_ms`.

        `latency_ms` and `ttft_ms` (time to first token, None when unknown) are
        finite milliseconds in [0, 86,400,000] (one day); token counts are ints
        in [0, 10**12]; `cached` and `error` are True or False (1 and 0 are
        accepted); `model` is None or a str; `timestamp` is epoch seconds from
        2000-01-01 to the clock's now + 1 day, the clock's time when None (a
        timestamp in milliseconds is refused with a message that says so).
        Raises ValueError naming the argument and its allowed range, and
        records nothing, when any argument is invalid.
        """
        # Cheap exact-type checks first; the full checks run only when they fail. Every check
        # comes before the first change of state, so a refused call records nothing.
        if type(latency_ms) is not float or not 0.0 <= latency_ms <= MAX_MS:
            latency_ms = check_ms("latency_ms", latency_ms)
        if type(prompt_tokens) is not int or not 0 <= prompt_tokens <= MAX_TOKENS:
            prompt_tokens = check_tokens("prompt_tokens", prompt_tokens)
        if type(completion_tokens) is not int or not 0 <= completion_tokens <= MAX_TOKENS:
            completion_tokens = check_tokens("completion_tokens", completion_tokens)
        if ttft_ms is not None and (type(ttft_ms) is not float or not 0.0 <= ttft_ms <= MAX_MS):
            ttft_ms = check_ms("ttft_ms", ttft_ms)
        if cached is not False and cached is not True:
            cached = check_flag("cached", cached)
        if error is not False and error is not True:
            error = check_flag("error", error)
        if model is not None and type(model) is not str:
            model = check_model(model)
        if timestamp is None:
            timestamp = self._clock.time_ms() / 1000.0
        elif type(timestamp) is not float or not MIN_TIMESTAMP <= timestamp <= self._latest_allowed:
            timestamp = self._check_recorded(timestamp)
        if server_ms is not None and (type(server_ms) is not float or not 0.0 <= server_ms <= MAX_MS):
            server_ms = check_ms("server_ms", server_ms)
        price = self._book.price_for(model)
        units, pricing = price.charge(prompt_tokens, completion_tokens, server_ms, cached)
        # One logarithm per value serves the totals' sketch and, divided down, the series bins.
        mult = self._mult
        k = self._coarsening
        lat_index = _ceil(_log(latency_ms) * mult) if latency_ms > 0.0 else None
        ttft_index = _ceil(_log(ttft_ms) * mult) if ttft_ms else None
        b = int(timestamp)
        with self._lock:
            self._count += 1
            if error:
                self._errors += 1
            if cached:
                self._cache_hits += 1
            self._prompt += prompt_tokens
            self._completion += completion_tokens
            self._cost += units
            self._costs.add(model, units, pricing, server_ms)
            self._hist.add(latency_ms, ttft_ms, prompt_tokens, completion_tokens)
            if timestamp < self._first:
                self._first = timestamp
            if timestamp > self._last:
                self._last = timestamp
            series = self._series
            ring = series.seconds
            s = b % ring.size
            if ring.key[s] != b:
                ring, s = series.slot(b)
            if lat_index is None:
                self._lat.add(0.0)
            else:
                self._lat.add_indexed(latency_ms, lat_index)
            if ttft_ms is not None:
                if ttft_index is None:
                    self._ttft.add(0.0)
                else:
                    self._ttft.add_indexed(ttft_ms, ttft_index)
            if ring is None:
                return units / UNITS_PER_DOLLAR
            ring.requests[s] += 1
            if error:
                ring.errors[s] += 1
            if cached:
                ring.cache_hits[s] += 1
            ring.prompt_tokens[s] += prompt_tokens
            ring.completion_tokens[s] += completion_tokens
            ring.cost[s] += units
            ring.lat_sum[s] += latency_ms
            if latency_ms < ring.lat_min[s]:
                ring.lat_min[s] = latency_ms
            if latency_ms > ring.lat_max[s]:
                ring.lat_max[s] = latency_ms
            if lat_index is None:
                ring.lat_zero[s] += 1
            else:
                series.add_bin(ring.lat_off, ring.lat_bins, s, -(-lat_index // k))
            if ttft_ms is not None:
                ring.ttft_count[s] += 1
                ring.ttft_sum[s] += ttft_ms
                if ttft_ms < ring.ttft_min[s]:
                    ring.ttft_min[s] = ttft_ms
                if ttft_ms > ring.ttft_max[s]:
                    ring.ttft_max[s] = ttft_ms
                if ttft_index is None:
                    ring.ttft_zero[s] += 1
                else:
                    series.add_bin(ring.ttft_off, ring.ttft_bins, s, -(-ttft_index // k))
        return units / UNITS_PER_DOLLAR

    def record_sampling(self, decision: SamplingDecision, timestamp: float | None = None) -> None:
        """Count one finished trace: kept by head sampling ("head"), by tail rules ("tail"), or "dropped".

        `timestamp` is epoch seconds from 2000-01-01 to the clock's now + 1 day
        (as for `record_request`), the clock's time when None. Raises
        ValueError for another decision or a bad timestamp, and counts nothing.
        """
        if decision not in _DECISIONS:
            raise ValueError(f"decision must be one of {_DECISIONS}, got {decision!r}")
        timestamp = self._clock.time_ms() / 1000.0 if timestamp is None else self._check_recorded(timestamp)
        b = int(timestamp)
        with self._lock:
            self._traces[decision] += 1
            ring = self._series.seconds
            s = b % ring.size
            if ring.key[s] != b:
                ring, s = self._series.slot(b)
                if ring is None:
                    return
            getattr(ring, decision)[s] += 1

    # -- reading --------------------------------------------------------------------------------

    def get_metrics(self) -> MetricsSnapshot:
        """A consistent snapshot of the totals (see MetricsSnapshot); all zeros when empty."""
        with self._lock:
            n = self._count
            lat = self._lat.quantiles((0.5, 0.9, 0.95, 0.99))
            ttft = self._ttft.quantiles((0.5, 0.95))
            tokens = self._prompt + self._completion
            elapsed = max(1.0, self._last - self._first) if n else 1.0
            traces = dict(self._traces)
            return MetricsSnapshot(
                request_count=n,
                prompt_tokens=self._prompt,
                completion_tokens=self._completion,
                total_tokens=tokens,
                total_cost=self._cost / UNITS_PER_DOLLAR,
                avg_latency_ms=self._lat.sum / n if n else 0.0,
                min_latency_ms=self._lat.min,
                max_latency_ms=self._lat.max,
                p50_latency_ms=lat[0],
                p90_latency_ms=lat[1],
                p95_latency_ms=lat[2],
                p99_latency_ms=lat[3],
                error_count=self._errors,
                error_rate=self._errors / n if n else 0.0,
                cache_hits=self._cache_hits,
                cache_misses=n - self._cache_hits,
                cache_hit_rate=self._cache_hits / n if n else 0.0,
                requests_per_second=n / elapsed if n else 0.0,
                tokens_per_second=tokens / elapsed if n else 0.0,
                avg_ttft_ms=self._ttft.sum / self._ttft.count if self._ttft.count else 0.0,
                p50_ttft_ms=ttft[0],
                p95_ttft_ms=ttft[1],
                traces_seen=sum(traces.values()),
                traces_kept_head=traces["head"],
                traces_kept_tail=traces["tail"],
                traces_dropped=traces["dropped"],
                first_request_at=self._first if n else None,
                last_request_at=self._last if n else None,
            )

    def genai_histograms(self) -> dict[str, Histogram]:
        """Exact counts at the GenAI bucket boundaries, read at one instant (see obs.metrics.histograms).

        Keys: `duration` and `ttft` (seconds), `input_tokens`, `output_tokens`;
        every request counts in all but `ttft`, which counts those with a time to first token.
        """
        with self._lock:
            return self._hist.snapshot()

    def time_series(
        self, bucket_s: int = 1, since: float | None = None, until: float | None = None
    ) -> list[TimeBucket]:
        """Buckets holding requests or traces, oldest first, of `bucket_s` = 1 or 60 seconds.

        A bucket is returned when it overlaps [since, until] (epoch seconds;
        None = unbounded) and lies within that resolution's retention counted
        back from the newest timestamp recorded. Raises ValueError for another
        `bucket_s` or a bad bound.
        """
        if type(bucket_s) is not int or bucket_s not in (1, 60):
            raise ValueError(f"bucket_s must be 1 or 60, got {bucket_s!r}")
        lo = -_INF if since is None else check_timestamp("since", since)
        hi = _INF if until is None else check_timestamp("until", until)
        with self._lock:
            return self._series.buckets(bucket_s, lo, hi)

    def window(self, window_s: float, now: float | None = None) -> WindowStats:
        """Metrics of the requests in the last `window_s` seconds up to `now` (clock time when None).

        When the window fits in the per-second retention it covers the
        `ceil(window_s)` one-second buckets ending with the one holding `now`;
        otherwise the `ceil(window_s / 60)` minute buckets ending with the
        minute of `now`. Rates divide by `window_s`. Raises ValueError unless
        0 < window_s <= per_minute_retention_s.
        """
        if (
            isinstance(window_s, bool)
            or not isinstance(window_s, numbers.Real)
            or not 0.0 < window_s <= self._min_retention
        ):
            raise ValueError(
                f"window_s must be a number in (0, {self._min_retention}] seconds, got {window_s!r}"
            )
        window_s = float(window_s)
        now = self._clock.time_ms() / 1000.0 if now is None else check_timestamp("now", now)
        end = int(now)
        with self._lock:
            return self._series.window(window_s, end)

    def reset(self) -> None:
        """Forget every recorded request and trace count (prices and configuration stay)."""
        with self._lock:
            self._clear()

    def __deepcopy__(self, memo: dict[int, Any]) -> MetricsCollector:
        """An independent collector with the same configuration, prices and data; the clock is shared."""
        with self._lock:
            twin = object.__new__(MetricsCollector)
            memo[id(self)] = twin
            for name, value in vars(self).items():
                if name == "_lock":
                    value = threading.Lock()
                elif name != "_clock":
                    value = copy.deepcopy(value, memo)
                setattr(twin, name, value)
            return twin

    def __repr__(self) -> str:
        return f"MetricsCollector(requests={self._count}, prices={self._book!r})"
