"""The rollup tables, and how they are kept in step with the request spans.

Every request span (a span with `gen_ai.operation.name`) inserted is added
to, and every one deleted is taken from:

- `rollup` (per minute) and `rollup_hour` (per hour), per service and model:
  request, error, token, cost, latency, cache-hit and TTFT sums, and the
  latency histogram counts between `LATENCY_BOUNDS_MS` (the dashboard's);
- `hour_bins` (per hour, service and model) and `hour_bins_all` (per hour):
  latency and TTFT histograms in log-spaced bins of `HOUR_BINS` (each value
  read back within 4%), for the percentiles of hourly buckets.

So a tile over a week reads one row per hour, service and model, not one per
request; and removing a span (replaced, or by retention) takes it out again.
Empty service and model are stored as '' in these tables.

Deletes are taken out by the trigger `request_removed`, one span at a time.
Inserts are added by the trigger `request_added`, unless the writer adds
them itself: obs's own writer (`obs.storage._writes.insert_traces`) sums a
whole batch in Python (`request_sums`, the twin of the triggers' expressions)
and upserts once per minute, hour, service and model (`ROLLUP_UPSERT`, ...),
with the `counters` row `WRITER_SUMS` set to 1 inside its transaction so the
trigger stands aside. Outside such a transaction the row is 0, so any other
writer of the file (an older release still running) is summed by the trigger.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import pairwise

from obs.metrics.quantiles import LogMapping

__all__ = [
    "BINS_ALL_UPSERT", "BINS_UPSERT", "HOUR_BINS", "LATENCY_BOUNDS_MS", "ROLLUP_HOUR_UPSERT", "ROLLUP_SCHEMA",
    "ROLLUP_TOTALS", "ROLLUP_UPSERT", "SPAN_SUMS", "SPAN_TOTALS", "SUM_COLUMNS", "WRITER_SUMS",
    "request_sums",
]  # fmt: skip

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
# The sums as queries read them, over `spans` and over rollup rows: TOTAL (a float sum) for tokens and
# cost units, which reach 2**62 per span and for which SQLite's SUM of integers raises "integer
# overflow" past 2**63 (TOTAL is exact up to 2**53: 9e15 tokens, 9,007 USD); SUM, exact, for the rest.
_WIDE = frozenset({"input_tokens", "output_tokens", "cost_units"})
SPAN_TOTALS = ", ".join(
    f"{'TOTAL' if name in _WIDE else 'SUM'}({expr.format(r='spans')})" for name, expr in _SUMS
)
ROLLUP_TOTALS = ", ".join(f"{'TOTAL' if name in _WIDE else 'SUM'}({name})" for name, _ in _SUMS)
_REAL = {"latency_sum", "ttft_sum"}
# The `counters` row that is 1 while a writer adds the rollups itself (inside its transaction only).
WRITER_SUMS = "writer_sums"


def request_sums(
    error: int, inputs: int | None, outputs: int | None, cost_units: int | None, latency_ms: float | None,
    cache_hit: int, ttft_ms: float | None,
) -> list[int | float]:
    """What one request span adds to each of `SUM_COLUMNS`, in that order, from its `spans` columns.

    The Python twin of the expressions the triggers evaluate (`_SUMS`): a
    missing number adds 0, a missing latency or TTFT is not counted, and the
    latency counts in the one histogram column between `LATENCY_BOUNDS_MS`
    it falls in.
    """
    histogram = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    if latency_ms is not None:
        histogram[bisect_right(LATENCY_BOUNDS_MS, latency_ms)] = 1
    return [
        1, error, inputs or 0, outputs or 0, cost_units or 0, int(latency_ms is not None),
        0.0 if latency_ms is None else latency_ms, cache_hit, int(ttft_ms is not None),
        0.0 if ttft_ms is None else ttft_ms, *histogram,
    ]  # fmt: skip


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


def _upsert(name: str, key: str, values: str) -> str:
    updates = ",\n        ".join(f"{c} = {c} + excluded.{c}" for c in SUM_COLUMNS)
    return f"""
    INSERT INTO {name} ({key}, service, model, {', '.join(SUM_COLUMNS)})
    VALUES ({values})
    ON CONFLICT ({key}, service, model) DO UPDATE SET
        {updates}"""


def _add(name: str, key: str) -> str:
    values = ", ".join(expr.format(r="NEW") for _, expr in _SUMS)
    return _upsert(name, key, f"NEW.{key}, {_dims('NEW')}, {values}") + ";"


_MARKS = ", ".join("?" * (3 + len(_SUMS)))
# What a writer that sums a batch itself runs, once per key: (minute or hour, service, model, *sums).
ROLLUP_UPSERT = _upsert("rollup", "minute", _MARKS).strip()
ROLLUP_HOUR_UPSERT = _upsert("rollup_hour", "hour", _MARKS).strip()
# (hour, service, model, metric, bin, n) and (hour, metric, bin, n).
BINS_UPSERT = (
    "INSERT INTO hour_bins (hour, service, model, metric, bin, n) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (hour, service, model, metric, bin) DO UPDATE SET n = n + excluded.n"
)
BINS_ALL_UPSERT = (
    "INSERT INTO hour_bins_all (hour, metric, bin, n) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (hour, metric, bin) DO UPDATE SET n = n + excluded.n"
)


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

CREATE TRIGGER IF NOT EXISTS request_added AFTER INSERT ON spans
WHEN NEW.request = 1 AND NOT EXISTS (SELECT 1 FROM counters WHERE name = '{WRITER_SUMS}' AND n <> 0) BEGIN
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
