"""Building AsyncInstrumentedClients for tests, recording into the same kind of rig as the sync ones."""

from __future__ import annotations

from typing import Any

from obs.clock import FakeClock
from obs.llm.async_client import AsyncInstrumentedClient
from obs.logs import LLMLogger
from obs.metrics.collector import MetricsCollector
from obs.storage.memory import TraceStore
from obs.trace.ids import SequentialIdGenerator
from obs.trace.tracer import Tracer
from tests.llm.client_support import Rig


def make_async_rig(base_url: str, **kwargs: Any) -> Rig:
    """An AsyncInstrumentedClient on `base_url`, set up exactly as `client_support.make_rig` sets up
    a sync one: a FakeClock (durations are exactly 0), ids counting from 1, fresh sinks, message
    content captured unless the test says otherwise."""
    kwargs.setdefault("capture_content", True)
    clock = FakeClock()
    store = TraceStore()
    collector = MetricsCollector(clock=clock)
    logger = LLMLogger(min_level="debug", clock=clock)
    tracer = Tracer(
        store=store, collector=collector, logger=logger, clock=clock, id_generator=SequentialIdGenerator()
    )
    client = AsyncInstrumentedClient(base_url, tracer=tracer, **kwargs)
    return Rig(client, clock, tracer, store, collector, logger)
