"""What the tracer needs of samplers, and no more: two one-method protocols.

`obs.trace.sampling.head` and `obs.trace.sampling.tail` have the real
samplers (and the richer `HeadSampler` protocol); any object with the one
method fits, so users can pass their own.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from obs.trace.traces import Trace

__all__ = ["HeadDecider", "TailDecider"]


@runtime_checkable
class HeadDecider(Protocol):
    """Decides when a trace begins whether it is kept."""

    def should_sample(self, trace_id: str, parent_sampled: bool | None = None) -> bool:
        """True to keep the trace `trace_id`; `parent_sampled` comes from an incoming traceparent."""
        ...


@runtime_checkable
class TailDecider(Protocol):
    """Decides when a trace ends whether a trace the head sampler let go is kept after all."""

    def should_keep(self, trace: Trace) -> bool:
        """True to keep the finished `trace`."""
        ...
