"""The rollup tables and the triggers that keep them in step with the request spans.

For every request span (a span with `gen_ai.operation.name`) inserted or
deleted, triggers add it to, or take it from:

- `rollup` (per minute) and `rollup_hour` (per hour), per service and model:
  request, error, token, cost, latency, cache-hit and TTFT sums, and the
  latency histogram counts between `LATENCY_BOUNDS_MS` (the dashboard's);
- `hour_bins` (per hour, service and model) and `hour_bins_all` (per hour):
  latency and TTFT histograms in log-spaced bins of `HOUR_BINS` (each value
  read back within 4%), for the percentiles of hourly buckets.

So a tile over a week reads one row per hour, service and model, not one per
request; and removing a span (replaced, or by retention) takes it out again.
Empty service and model are stored as '' in these tables.
"""

from __future__ import annotations

from itertools import pairwise

from obs.metrics.quantiles import LogMapping

__all__ = ["HOUR_BINS", "LATENCY_BOUNDS_MS", "ROLLUP_SCHEMA", "SPAN_SUMS", "SUM_COLUMNS"]

# The dashboard's latency histogram (obs.dashboard.LATENCY_BUCKETS): its counts are kept in the rollups.
LATENCY_BOUNDS_MS = (100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0)
# Hourly percentiles: 1% bins joined by fours (each value read back within 4%), few rows per hour.
HOUR_BINS = LogMapping(0.01).coarsened(4)


def _histogram() -> list[tuple[str, str]]:
    bounds = LATENCY_BOUNDS_MS
    conditions = [f"{{r}}.latency_ms < {bounds[0]!r}"]
    conditions += [f"{{r}}.latency_ms >= {lo!r} AND {{r}}.latency_ms < {hi!r}" for lo, hi in pairwise(bounds)]
    conditions.append(f"{{r}}.latency_ms >= {bounds[-1]!r}")
    return [(f"lat{i}", f"COALESCE(({c}), 0)") for i, c in enumerate(conditions)]


# (column, what one request span adds to it) in the order `Agg.add_sums` reads them.
_SUMS: list[tuple[str, str]] = [
    ("requests", "1"),
    ("errors", "{r}.error"),
    ("input_tokens", "COALESCE({r}.input_tokens, 0)"),
    ("output_tokens", "COALESCE({r}.output_tokens, 0)"),
    ("cost_units", "COALESCE({r}.cost_units, 0)"),
    ("latency_count", "({r}.latency_ms IS NOT NULL)"),
    ("latency_sum", "COALESCE({r}.latency_ms, 0)"),
    ("cache_hits", "{r}.cache_hit"),
    ("ttft_count", "({r}.ttft_ms IS NOT NULL)"),
    ("ttft_sum", "COALESCE({r}.ttft_ms, 0)"),
    *_histogram(),
]
SUM_COLUMNS = tuple(name for name, _ in _SUMS)
# The same sums computed over `spans` rows directly (for the parts of a range no rollup row covers).
SPAN_SUMS = ", ".join(f"SUM({expr.format(r='spans')})" for _, expr in _SUMS)
_REAL = {"latency_sum", "ttft_sum"}


def _table(name: str, key: str) -> str:
    columns = ",\n    ".join(f"{c} {'REAL' if c in _REAL else 'INTEGER'} NOT NULL" for c in SUM_COLUMNS)
    return f"""CREATE TABLE IF NOT EXISTS {name} (
    {key} INTEGER NOT NULL,
    service TEXT NOT NULL,
    model TEXT NOT NULL,
    {columns},
    PRIMARY KEY ({key}, service, model)
) WITHOUT ROWID;"""


def _dims(r: str) -> str:
    return f"COALESCE({r}.service, ''), COALESCE({r}.model, '')"


def _match(key: str, r: str) -> str:
    return f"{key} = {r}.{key} AND service = COALESCE({r}.service, '') AND model = COALESCE({r}.model, '')"


def _add(name: str, key: str) -> str:
    values = ", ".join(expr.format(r="NEW") for _, expr in _SUMS)
    updates = ",\n        ".join(f"{c} = {c} + excluded.{c}" for c in SUM_COLUMNS)
    return f"""
    INSERT INTO {name} ({key}, service, model, {', '.join(SUM_COLUMNS)})
    VALUES (NEW.{key}, {_dims('NEW')}, {values})
    ON CONFLICT ({key}, service, model) DO UPDATE SET
        {updates};"""


def _take(name: str, key: str) -> str:
    updates = ",\n        ".join(f"{c} = {c} - ({expr.format(r='OLD')})" for c, expr in _SUMS)
    return f"""
    UPDATE {name} SET
        {updates}
    WHERE {_match(key, 'OLD')};
    DELETE FROM {name} WHERE {_match(key, 'OLD')} AND requests <= 0;"""


def _bins_add(metric: int, column: str) -> str:
    return f"""
    INSERT INTO hour_bins (hour, service, model, metric, bin, n)
    SELECT NEW.hour, {_dims('NEW')}, {metric}, NEW.{column}, 1 WHERE NEW.{column} IS NOT NULL
    ON CONFLICT (hour, service, model, metric, bin) DO UPDATE SET n = n + 1;
    INSERT INTO hour_bins_all (hour, metric, bin, n)
    SELECT NEW.hour, {metric}, NEW.{column}, 1 WHERE NEW.{column} IS NOT NULL
    ON CONFLICT (hour, metric, bin) DO UPDATE SET n = n + 1;"""


def _bins_take(metric: int, column: str) -> str:
    match = f"{_match('hour', 'OLD')} AND metric = {metric} AND bin = OLD.{column}"
    everything = f"hour = OLD.hour AND metric = {metric} AND bin = OLD.{column}"
    return f"""
    UPDATE hour_bins SET n = n - 1 WHERE {match};
    DELETE FROM hour_bins WHERE {match} AND n <= 0;
    UPDATE hour_bins_all SET n = n - 1 WHERE {everything};
    DELETE FROM hour_bins_all WHERE {everything} AND n <= 0;"""


ROLLUP_SCHEMA = f"""
{_table("rollup", "minute")}
{_table("rollup_hour", "hour")}
CREATE TABLE IF NOT EXISTS hour_bins (
    hour INTEGER NOT NULL,
    service TEXT NOT NULL,
    model TEXT NOT NULL,
    metric INTEGER NOT NULL,
    bin INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (hour, service, model, metric, bin)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hour_bins_all (
    hour INTEGER NOT NULL,
    metric INTEGER NOT NULL,
    bin INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (hour, metric, bin)
) WITHOUT ROWID;

CREATE TRIGGER IF NOT EXISTS request_added AFTER INSERT ON spans WHEN NEW.request = 1 BEGIN
    UPDATE counters SET n = n + 1 WHERE name = 'requests';
    {_add("rollup", "minute")}
    {_add("rollup_hour", "hour")}
    {_bins_add(0, "latency_bin")}
    {_bins_add(1, "ttft_bin")}
END;
CREATE TRIGGER IF NOT EXISTS request_removed AFTER DELETE ON spans WHEN OLD.request = 1 BEGIN
    UPDATE counters SET n = n - 1 WHERE name = 'requests';
    {_take("rollup", "minute")}
    {_take("rollup_hour", "hour")}
    {_bins_take(0, "latency_bin")}
    {_bins_take(1, "ttft_bin")}
END;
"""
