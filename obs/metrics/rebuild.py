"""A MetricsCollector rebuilt from the request spans kept in a SQLite file.

After a restart the collector in memory is empty while the file still holds
every request. `rebuild_collector` records each stored request span (in
the range and scope asked for) into a collector, as the client recorded it
when the call ended: latency (`obs.latency_ms`), tokens, cache hit, error,
model, time to first token, llama.cpp's server time, and the span's end as
the timestamp. With the same prices, the totals, percentiles and series
then equal those of the collector before the restart, as long as every
request's trace was kept (traces dropped by sampling never reach the file).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from obs.metrics.collector import MetricsCollector
from obs.storage.queries import check_range, check_scope
from obs.storage.sqlite import SqliteTraceStore

__all__ = ["RebuildReport", "rebuild_collector"]

_log = logging.getLogger(__name__)
_BATCH = 5000


@dataclass(slots=True)
class RebuildReport:
    """How many request spans were recorded, and how many the collector refused (out of its ranges)."""

    recorded: int = 0
    refused: int = 0


def rebuild_collector(
    store: SqliteTraceStore,
    collector: MetricsCollector | None = None,
    *,
    since: float | None = None,
    until: float | None = None,
    service: str | None = None,
    model: str | None = None,
    conversation: str | Sequence[str] | None = None,
) -> tuple[MetricsCollector, RebuildReport]:
    """Record the stored request spans that started in [since, until) (epoch s) into `collector`.

    A fresh `MetricsCollector()` is used when none is given (give one with
    your prices to get the same costs). Spans are recorded oldest end first;
    one the collector refuses (a timestamp before 2000 or a day ahead of its
    clock, say) is counted in the report and logged once, never raised.
    Returns the collector and the report. ValueError names a bad argument.
    """
    if not isinstance(store, SqliteTraceStore):
        kind = type(store).__name__
        raise ValueError(f"rebuild_collector: store must be a SqliteTraceStore, got {kind}")
    if collector is None:
        collector = MetricsCollector()
    elif not callable(getattr(collector, "record_request", None)):
        raise ValueError(f"rebuild_collector: collector must be a MetricsCollector, got {collector!r}")
    lo, hi = check_range(since, until)
    scope = check_scope(service, model, conversation)
    extra, params = scope.spans_sql()
    report = RebuildReport()
    first_error: str | None = None
    with store.database().read() as conn:
        cursor = conn.execute(
            "SELECT COALESCE(end_time, start_time), latency_ms, input_tokens, output_tokens, cache_hit, "
            "error, model, ttft_ms, server_ms FROM spans "
            f"WHERE request = 1 AND start_time >= ? AND start_time < ?{extra} "
            "ORDER BY COALESCE(end_time, start_time), seq",
            [lo, hi, *params],
        )
        while rows := cursor.fetchmany(_BATCH):
            for end, latency, inputs, outputs, hit, error, name, ttft, server_ms in rows:
                try:
                    collector.record_request(
                        latency if latency is not None and math.isfinite(latency) else 0.0,
                        inputs or 0, outputs or 0, cached=bool(hit), error=bool(error), model=name,
                        ttft_ms=ttft, timestamp=end / 1000.0, server_ms=server_ms,
                    )  # fmt: skip
                except ValueError as exc:
                    report.refused += 1
                    first_error = first_error or str(exc)
                else:
                    report.recorded += 1
    if report.refused:
        _log.warning("rebuild_collector: %d stored request(s) refused by the collector, e.g. %s",
                     report.refused, first_error)  # fmt: skip
    return collector, report
