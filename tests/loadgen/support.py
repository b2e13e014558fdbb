"""Helpers of the load generator tests: a tracer recording into a SQLite file, and what the file says."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from obs import semconv
from obs.loadgen.results import percentile
from obs.storage.exporter import SqliteExporter
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.processors import BatchProcessor
from obs.trace.spans import Span
from obs.trace.tracer import Tracer


@contextmanager
def recording(path: Path, service: str = "loadgen-test") -> Iterator[Tracer]:
    """A Tracer writing every trace into the SQLite file `path`, as the command line's does; flushed after."""
    store = SqliteTraceStore(str(path))
    tracer = Tracer(processors=[BatchProcessor(SqliteExporter(store), schedule_delay_s=0.2)],
                    service_name=service)
    try:
        yield tracer
    finally:
        assert tracer.shutdown(30.0)
        store.close()


@dataclass(frozen=True)
class Stored:
    """The request spans a SQLite file holds, read back through obs.storage, in figures."""

    spans: list[Span]

    @classmethod
    def read(cls, path: Path) -> Stored:
        """Every request span (one with gen_ai.operation.name) of every trace in the file."""
        with SqliteTraceStore(str(path)) as store:
            traces = store.all()
        return cls([s for t in traces for s in t.spans if semconv.GEN_AI_OPERATION_NAME in s.attributes])

    @property
    def answered(self) -> list[Span]:
        """The spans of answered requests."""
        return [s for s in self.spans if s.status == "success"]

    @property
    def errors_by_type(self) -> dict[str, int]:
        """Failed spans counted by error.type."""
        return dict(Counter(str(s.attributes[semconv.ERROR_TYPE]) for s in self.spans if s.status == "error"))

    @property
    def output_tokens(self) -> int:
        """Output tokens of the answered requests."""
        return sum(int(s.attributes.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, 0)) for s in self.answered)

    def answered_percentile(self, key: str, q: float) -> float | None:
        """The nearest-rank q-quantile of attribute `key` over the answered spans that have it."""
        return percentile([float(s.attributes[key]) for s in self.answered if key in s.attributes], q)
