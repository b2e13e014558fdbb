"""Building InstrumentedClients for tests: fake clock, sequential ids, fresh sinks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from obs.clock import FakeClock
from obs.llm.client import InstrumentedClient
from obs.logs import LLMLogger
from obs.metrics.collector import MetricsCollector
from obs.storage.memory import TraceStore
from obs.trace.ids import SequentialIdGenerator
from obs.trace.spans import Span
from obs.trace.tracer import Tracer
from obs.trace.traces import Trace

MESSAGES = [{"role": "user", "content": "Say hello"}]


@dataclass
class Rig:
    """A client and everything it records into."""

    client: InstrumentedClient
    clock: FakeClock
    tracer: Tracer
    store: TraceStore
    collector: MetricsCollector
    logger: LLMLogger

    def only_trace(self) -> Trace:
        """The single trace recorded so far."""
        traces = self.store.all()
        assert len(traces) == 1, f"expected one trace, got {len(traces)}"
        return traces[0]

    def only_span(self) -> Span:
        """The single span of the single trace recorded so far."""
        trace = self.only_trace()
        assert len(trace.spans) == 1
        return trace.spans[0]

    def everything_recorded(self) -> str:
        """Every trace and log entry as one JSON text (to search for secrets)."""
        return json.dumps(
            {
                "traces": [t.to_dict() for t in self.store.all()],
                "logs": [e.to_dict() for e in self.logger.get_logs()],
            },
            default=str,
        )


def make_rig(base_url: str, **kwargs: Any) -> Rig:
    """A client on `base_url` with a FakeClock (durations are exactly 0) and ids counting from 1.

    Message content is captured unless the test says otherwise, whatever the environment says.
    """
    kwargs.setdefault("capture_content", True)
    clock = FakeClock()
    store = TraceStore()
    collector = MetricsCollector(clock=clock)
    logger = LLMLogger(min_level="debug", clock=clock)
    tracer = Tracer(
        store=store, collector=collector, logger=logger, clock=clock, id_generator=SequentialIdGenerator()
    )
    client = InstrumentedClient(base_url, tracer=tracer, **kwargs)
    return Rig(client, clock, tracer, store, collector, logger)
