"""Sampling: which traces are kept (stored and exported) and which are dropped.

Two moments decide. *Head* sampling decides when a trace begins, from the
trace id alone (and the parent's decision, if the trace continues one that
came in with a `traceparent` header): `AlwaysOn`, `AlwaysOff`,
`TraceIdRatio` and `ParentBased` make the same decisions as OpenTelemetry's
samplers of the same names, so a trace crossing from an OpenTelemetry app into
this one is kept or dropped on both sides alike. *Tail* sampling decides when
the trace has ended and everything about it is known: `TailSampler` keeps
errors, slow traces, traces that match an attribute, and a random share of the
rest.

Sampling decides what is stored and exported, never what is counted: request
metrics are recorded for every request whatever happens to its trace.

`sampler_from_env` builds a head sampler from `OTEL_TRACES_SAMPLER` and
`OTEL_TRACES_SAMPLER_ARG` as OpenTelemetry SDKs do.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from obs.traces import Trace

__all__ = [
    "SAMPLER_ARG_ENV",
    "SAMPLER_ENV",
    "SAMPLER_NAMES",
    "AlwaysOff",
    "AlwaysOn",
    "HeadSampler",
    "KeepErrors",
    "KeepMatching",
    "KeepPredicate",
    "KeepProbability",
    "KeepSlow",
    "ParentBased",
    "TailRule",
    "TailSampler",
    "TraceIdRatio",
    "sampler_from_env",
    "trace_duration_ms",
    "trace_has_error",
]

_log = logging.getLogger(__name__)

# The low 64 bits of a trace id, as OpenTelemetry's TraceIdRatioBased reads them
# (so 64-bit ids from older systems get the same decision as 128-bit ones).
_LOW_64_BITS = (1 << 64) - 1

SAMPLER_ENV = "OTEL_TRACES_SAMPLER"
SAMPLER_ARG_ENV = "OTEL_TRACES_SAMPLER_ARG"
SAMPLER_NAMES = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
_DEFAULT_SAMPLER_NAME = "parentbased_always_on"


def _check_probability(owner: str, argument: str, value: object) -> float:
    """Return `value` as a float in [0, 1] or raise ValueError naming it and the range."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{owner}: {argument} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{owner}: {argument} must be in [0, 1], got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------
# Head samplers


@runtime_checkable
class HeadSampler(Protocol):
    """Decides at the start of a trace whether it will be kept."""

    @property
    def description(self) -> str:
        """A short name with the configuration, in OpenTelemetry's style."""
        ...

    def should_sample(self, trace_id: str, parent_sampled: bool | None = None) -> bool:
        """True to keep the trace `trace_id`.

        `parent_sampled` is the decision carried by an incoming `traceparent`
        (its sampled flag), or None when the trace starts here.
        """
        ...


class AlwaysOn:
    """Keeps every trace."""

    __slots__ = ()

    @property
    def description(self) -> str:
        """`AlwaysOnSampler`, as OpenTelemetry names it."""
        return "AlwaysOnSampler"

    def should_sample(self, trace_id: str, parent_sampled: bool | None = None) -> bool:
        """Always True, whatever the parent decided."""
        return True

    def __repr__(self) -> str:
        return "AlwaysOn()"


class AlwaysOff:
    """Drops every trace (tail rules may still keep some)."""

    __slots__ = ()

    @property
    def description(self) -> str:
        """`AlwaysOffSampler`, as OpenTelemetry names it."""
        return "AlwaysOffSampler"

    def should_sample(self, trace_id: str, parent_sampled: bool | None = None) -> bool:
        """Always False, whatever the parent decided."""
        return False

    def __repr__(self) -> str:
        return "AlwaysOff()"


class TraceIdRatio:
    """Keeps a fraction `rate` of traces, decided by the trace id alone.

    The decision equals OpenTelemetry's `TraceIdRatioBased`: keep when the low
    64 bits of the trace id, as an unsigned integer, are below
    `round(rate * 2**64)`. Being a function of the id, it is the same for
    every span of a trace and on every process that sees the trace.
    """

    __slots__ = ("_bound", "_rate")

    def __init__(self, rate: float) -> None:
        """Keep a `rate` share of traces; `rate` must be in [0, 1] (ValueError otherwise)."""
        self._rate = _check_probability("TraceIdRatio", "rate", rate)
        self._bound = round(self._rate * (_LOW_64_BITS + 1))

    @property
    def rate(self) -> float:
        """The share of traces kept, in [0, 1]."""
        return self._rate

    @property
    def bound(self) -> int:
        """Trace ids whose low 64 bits are below this number are kept."""
        return self._bound

    @property
    def description(self) -> str:
        """`TraceIdRatioBased{<rate>}`, as OpenTelemetry names it."""
        return f"TraceIdRatioBased{{{self._rate}}}"

    def should_sample(self, trace_id: str, parent_sampled: bool | None = None) -> bool:
        """True when the low 64 bits of `trace_id` (hex) fall below the bound.

        The parent's decision is ignored (wrap in `ParentBased` to follow it).
        Raises ValueError if `trace_id` is not hexadecimal.
        """
        try:
            low = int(trace_id[-16:], 16)
        except (TypeError, ValueError):
            raise ValueError(
                f"TraceIdRatio.should_sample: trace_id must be a hex string, got {trace_id!r}"
            ) from None
        return (low & _LOW_64_BITS) < self._bound

    def __repr__(self) -> str:
        return f"TraceIdRatio({self._rate!r})"


class ParentBased:
    """Follows the parent's decision; a trace without a parent is decided by `root`.

    So a trace continued from an upstream service is kept exactly when the
    upstream kept it, and every span of one trace shares one decision.
    """

    __slots__ = ("_root",)

    def __init__(self, root: HeadSampler) -> None:
        """Decide root traces with `root` (any head sampler)."""
        if not callable(getattr(root, "should_sample", None)):
            raise ValueError(
                f"ParentBased: root must be a head sampler with should_sample(), got {root!r}"
            )
        self._root = root

    @property
    def root(self) -> HeadSampler:
        """The sampler that decides traces without a parent."""
        return self._root

    @property
    def description(self) -> str:
        """OpenTelemetry's ParentBased description with the default parent delegates."""
        return (
            f"ParentBased{{root:{self._root.description},"
            "remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,"
            "localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}"
        )

    def should_sample(self, trace_id: str, parent_sampled: bool | None = None) -> bool:
        """The parent's decision when there is one, else the root sampler's."""
        if parent_sampled is None:
            return self._root.should_sample(trace_id, None)
        return bool(parent_sampled)

    def __repr__(self) -> str:
        return f"ParentBased({self._root!r})"


def _ratio_arg(value: str | None, sampler_name: str) -> float:
    """The sampler argument as a rate, or 1.0 with a warning when unset or invalid.

    OpenTelemetry's environment specification says invalid or unrecognized
    input for OTEL_TRACES_SAMPLER_ARG is logged and otherwise ignored (as if
    unset), and the ratio samplers default to 1.0; the Python SDK does the same.
    """
    if value is None or not value.strip():
        return 1.0
    try:
        return _check_probability(SAMPLER_ARG_ENV, "the rate", float(value.strip()))
    except ValueError:
        _log.warning(
            "%s=%r is not a sampling rate in [0, 1] for %s=%s; using 1.0 (keep every trace)",
            SAMPLER_ARG_ENV, value, SAMPLER_ENV, sampler_name,
        )
        return 1.0


def sampler_from_env(
    environ: Mapping[str, str] = os.environ, *, strict: bool = True
) -> HeadSampler:
    """Build the head sampler that `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` name.

    Values (case-insensitive): always_on, always_off, traceidratio,
    parentbased_always_on, parentbased_always_off, parentbased_traceidratio.
    Unset or empty means parentbased_always_on, OpenTelemetry's default.
    For the ratio samplers the argument is the rate in [0, 1]; unset means
    1.0, and an unparsable or out-of-range argument is logged as a warning
    and replaced by 1.0, as OpenTelemetry specifies. An unknown sampler name
    raises ValueError naming the variable, the value and the allowed values;
    with `strict=False` it is logged and replaced by the default instead, as
    OpenTelemetry SDKs do.
    """
    raw = environ.get(SAMPLER_ENV)
    name = (raw or "").strip().lower() or _DEFAULT_SAMPLER_NAME
    if name not in SAMPLER_NAMES:
        message = (
            f"{SAMPLER_ENV}={raw!r} is not a known sampler; allowed values: "
            f"{', '.join(SAMPLER_NAMES)}"
        )
        if strict:
            raise ValueError(message)
        _log.warning("%s; using %s", message, _DEFAULT_SAMPLER_NAME)
        name = _DEFAULT_SAMPLER_NAME
    if name == "always_on":
        return AlwaysOn()
    if name == "always_off":
        return AlwaysOff()
    if name == "parentbased_always_on":
        return ParentBased(AlwaysOn())
    if name == "parentbased_always_off":
        return ParentBased(AlwaysOff())
    rate = _ratio_arg(environ.get(SAMPLER_ARG_ENV), name)
    if name == "traceidratio":
        return TraceIdRatio(rate)
    return ParentBased(TraceIdRatio(rate))


# ---------------------------------------------------------------------------
# Tail sampling


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
        if (
            isinstance(threshold_ms, bool)
            or not isinstance(threshold_ms, int | float)
            or not math.isfinite(threshold_ms)
            or threshold_ms < 0
        ):
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
        self._rate = _check_probability("KeepProbability", "rate", rate)
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
        probability = _check_probability("TailSampler", "probability", probability)
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
