"""Head sampling: which traces are kept, decided when a trace begins.

`AlwaysOn`, `AlwaysOff`, `TraceIdRatio` and `ParentBased` decide from the
trace id alone (and the parent's decision, if the trace continues one that
came in with a `traceparent` header), as OpenTelemetry's samplers of the same
names do, so a trace crossing from an OpenTelemetry app into this one is kept
or dropped on both sides alike. `sampler_from_env` builds a head sampler from
`OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` as OpenTelemetry SDKs do.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from obs._validate import check_probability

__all__ = [
    "SAMPLER_ARG_ENV",
    "SAMPLER_ENV",
    "SAMPLER_NAMES",
    "AlwaysOff",
    "AlwaysOn",
    "HeadSampler",
    "ParentBased",
    "TraceIdRatio",
    "sampler_from_env",
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
        self._rate = check_probability("TraceIdRatio", "rate", rate)
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
        return check_probability(SAMPLER_ARG_ENV, "the rate", float(value.strip()))
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
