"""A trace processor that is a list, for tests that read what the tracer finished."""

from __future__ import annotations

from obs.trace.traces import Trace


class Collected(list[Trace]):
    """A TraceProcessor that appends every trace it is given to itself, in order."""

    def on_end(self, trace: Trace) -> None:
        """Keep `trace`."""
        self.append(trace)

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Nothing is pending: True."""
        return True

    def shutdown(self, timeout_s: float = 30.0) -> bool:
        """Nothing to stop: True."""
        return True
