"""Tail sampling: which finished traces are kept after all, now that everything about them is known.

The head sampler (`obs.trace.sampling.head`) decides when a trace begins; a trace it
let go reaches the `TailSampler` when it ends. Its rules keep errors, slow
traces, traces with a matching attribute, traces a predicate likes, and a
random share of the rest, like the OpenTelemetry Collector's tail sampling
policies of the same purpose. A rule that fails keeps the trace (logged)
rather than lose it. The names are importable from `obs.trace.sampling.head` too.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from obs._validate import check_probability, is_finite_number
from obs.trace.traces import Trace

__all__ = [
    "KeepErrors",
    "KeepMatching",
    "KeepPredicate",
    "KeepProbability",
    "KeepSlow",
    "TailRule",
    "TailSampler",
    "trace_duration_ms",
    "trace_has_error",
]

_log = logging.getLogger(__name__)


def trace_duration_ms(trace: Trace) -> float:
    """The trace's duration as the tail sampler sees it: earliest span start to latest span end.

    A span still running counts as ending where it started. A trace with no
    spans falls back to its own duration (0 while it runs).
    """
    if not trace.spans:
        return float(trace.duration or 0.0)
    start = min(span.start_time for span in trace.spans)
    end = max(span.end_time if span.end_time is not None else span.start_time for span in trace.spans)
    return max(0.0, end - start)


def trace_has_error(trace: Trace) -> bool:
    """True if the trace or any of its spans has status "error"."""
    return trace.status == "error" or any(span.status == "error" for span in trace.spans)


@runtime_checkable
class TailRule(Protocol):
    """One reason to keep a finished trace."""

    @property
    def name(self) -> str:
        """A short name saying why a trace was kept (e.g. "errors", "slow")."""
        ...

    def keeps(self, trace: Trace) -> bool:
        """True if this rule wants `trace` kept."""
        ...


class KeepErrors:
    """Keeps traces with an error (the Collector's `status_code` policy for ERROR)."""

    __slots__ = ()

    @property
    def name(self) -> str:
        """Always "errors"."""
        return "errors"

    def keeps(self, trace: Trace) -> bool:
        """True if the trace or any span has status "error"."""
        return trace_has_error(trace)

    def __repr__(self) -> str:
        return "KeepErrors()"


class KeepSlow:
    """Keeps traces that took at least `threshold_ms` (the Collector's `latency` policy)."""

    __slots__ = ("_threshold_ms",)

    def __init__(self, threshold_ms: float) -> None:
        """Keep traces lasting `threshold_ms` or more; it must be finite and >= 0."""
        if not is_finite_number(threshold_ms) or threshold_ms < 0:
            raise ValueError(
                f"KeepSlow: threshold_ms must be a finite number >= 0, got {threshold_ms!r}"
            )
        self._threshold_ms = float(threshold_ms)

    @property
    def threshold_ms(self) -> float:
        """The duration in ms from which a trace is kept."""
        return self._threshold_ms

    @property
    def name(self) -> str:
        """Always "slow"."""
        return "slow"

    def keeps(self, trace: Trace) -> bool:
        """True if earliest span start to latest span end is >= the threshold."""
        return trace_duration_ms(trace) >= self._threshold_ms

    def __repr__(self) -> str:
        return f"KeepSlow({self._threshold_ms!r})"


class KeepMatching:
    """Keeps traces whose metadata or any span attribute `key` matches `expected`.

    `expected` is a callable (called with the value, true means match), a set
    or frozenset (the value is one of them), or a single value (equality).
    """

    __slots__ = ("_expected", "_key")

    def __init__(self, key: str, expected: Any) -> None:
        """Match `key` in trace metadata and span attributes against `expected`."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"KeepMatching: key must be a non-empty string, got {key!r}")
        self._key = key
        self._expected = expected

    @property
    def key(self) -> str:
        """The metadata or attribute key looked at."""
        return self._key

    @property
    def name(self) -> str:
        """`match <key>`."""
        return f"match {self._key}"

    def _matches(self, value: Any) -> bool:
        expected = self._expected
        if callable(expected):
            return bool(expected(value))
        if isinstance(expected, set | frozenset):
            try:
                return value in expected
            except TypeError:  # an unhashable value (a list attribute) is in no set
                return False
        return bool(value == expected)

    def keeps(self, trace: Trace) -> bool:
        """True if the trace's metadata or any span's attributes hold a matching value."""
        key = self._key
        if key in trace.metadata and self._matches(trace.metadata[key]):
            return True
        return any(key in span.attributes and self._matches(span.attributes[key]) for span in trace.spans)

    def __repr__(self) -> str:
        return f"KeepMatching({self._key!r}, {self._expected!r})"


class KeepPredicate:
    """Keeps traces for which a function of the whole trace returns true."""

    __slots__ = ("_name", "_predicate")

    def __init__(self, predicate: Callable[[Trace], bool], name: str = "predicate") -> None:
        """Keep a trace when `predicate(trace)` is true; `name` says why in decisions."""
        if not callable(predicate):
            raise ValueError(f"KeepPredicate: predicate must be callable, got {predicate!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"KeepPredicate: name must be a non-empty string, got {name!r}")
        self._predicate = predicate
        self._name = name

    @property
    def name(self) -> str:
        """The name given at construction."""
        return self._name

    def keeps(self, trace: Trace) -> bool:
        """`predicate(trace)`, as a bool."""
        return bool(self._predicate(trace))

    def __repr__(self) -> str:
        return f"KeepPredicate({self._predicate!r}, name={self._name!r})"


class KeepProbability:
    """Keeps a random share `rate` of traces (the Collector's `probabilistic` policy).

    `rng` returns floats in [0, 1) (default `random.random`); inject a seeded
    `random.Random(seed).random` or a fixed sequence to make tests exact.
    """

    __slots__ = ("_rate", "_rng")

    def __init__(self, rate: float, rng: Callable[[], float] | None = None) -> None:
        """Keep each trace with probability `rate` in [0, 1] (ValueError otherwise)."""
        self._rate = check_probability("KeepProbability", "rate", rate)
        if rng is not None and not callable(rng):
            raise ValueError(f"KeepProbability: rng must be a callable returning floats, got {rng!r}")
        self._rng = rng or random.random

    @property
    def rate(self) -> float:
        """The share of traces kept."""
        return self._rate

    @property
    def name(self) -> str:
        """Always "probability"."""
        return "probability"

    def keeps(self, trace: Trace) -> bool:
        """True with probability `rate`; never draws when the rate is 0 or 1."""
        if self._rate <= 0.0:
            return False
        if self._rate >= 1.0:
            return True
        return self._rng() < self._rate

    def __repr__(self) -> str:
        return f"KeepProbability({self._rate!r})"


class TailSampler:
    """Decides, once a trace has ended, whether to keep it: kept if any rule keeps it.

    Built from keywords for the common rules, in this order: errors
    (`keep_errors`, on by default), slow traces (`slow_threshold_ms`),
    metadata/attribute matches (`match`: key -> expected, see `KeepMatching`),
    a trace predicate (`predicate`), any extra `rules`, and last a random
    share of the rest (`probability`, drawn from `rng`). Rules run in that
    order and stop at the first that keeps, so the random source is drawn
    only for traces no other rule kept.

    A rule that raises is logged and counted in `rule_errors` and keeps the
    trace (losing a trace to a broken rule is worse than keeping one too
    many, as the Tracer does for a broken sampler); the exception never
    reaches the caller.
    """

    def __init__(
        self,
        rules: Iterable[TailRule] = (),
        *,
        keep_errors: bool = True,
        slow_threshold_ms: float | None = None,
        match: Mapping[str, Any] | None = None,
        predicate: Callable[[Trace], bool] | None = None,
        probability: float = 0.0,
        rng: Callable[[], float] | None = None,
    ) -> None:
        """Assemble the rules; invalid thresholds or rates raise ValueError naming them."""
        if not isinstance(keep_errors, bool):
            raise ValueError(f"TailSampler: keep_errors must be True or False, got {keep_errors!r}")
        built: list[TailRule] = []
        if keep_errors:
            built.append(KeepErrors())
        if slow_threshold_ms is not None:
            built.append(KeepSlow(slow_threshold_ms))
        if match is not None:
            if not isinstance(match, Mapping):
                raise ValueError(f"TailSampler: match must be a mapping of key -> expected, got {match!r}")
            built.extend(KeepMatching(key, expected) for key, expected in match.items())
        if predicate is not None:
            built.append(KeepPredicate(predicate))
        for rule in rules:
            if not isinstance(rule, TailRule):
                raise ValueError(
                    f"TailSampler: each rule needs a name and keeps(trace), got {rule!r}"
                )
            built.append(rule)
        probability = check_probability("TailSampler", "probability", probability)
        if probability > 0.0:
            built.append(KeepProbability(probability, rng))
        self._rules = tuple(built)
        self._lock = threading.Lock()
        self._rule_errors = 0

    @property
    def rules(self) -> tuple[TailRule, ...]:
        """The rules in the order they are tried."""
        return self._rules

    @property
    def rule_errors(self) -> int:
        """How many times a rule raised while deciding."""
        with self._lock:
            return self._rule_errors

    @property
    def description(self) -> str:
        """`TailSampler{<rule names>}`."""
        return "TailSampler{" + ",".join(rule.name for rule in self._rules) + "}"

    def decide(self, trace: Trace) -> str | None:
        """The name of the first rule that keeps `trace`, or None to drop it."""
        for rule in self._rules:
            try:
                if rule.keeps(trace):
                    return rule.name
            except Exception:
                with self._lock:
                    self._rule_errors += 1
                name = getattr(rule, "name", None) or repr(rule)
                _log.warning(
                    "tail sampling rule %r raised on trace %s; keeping the trace",
                    name, trace.id, exc_info=True,
                )
                return str(name)
        return None

    def should_keep(self, trace: Trace) -> bool:
        """True if any rule keeps `trace`."""
        return self.decide(trace) is not None

    def __repr__(self) -> str:
        return f"TailSampler({list(self._rules)!r})"
