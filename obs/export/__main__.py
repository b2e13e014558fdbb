"""`python -m obs.export`: the traces kept in the SQLite file, written to one file another tool opens.

    python -m obs.export --format otlp-json|jaeger|zipkin --since 1h --out FILE [--db .obs/obs.db]

`--since` takes a number and a unit (`30s`, `15m`, `1h`, `24h`, `7d`) or
`all`; traces that started in that window, up to the moment the command
starts, are exported in start order. `--db` defaults to `OBS_DB_PATH`, else
`.obs/obs.db` (the dashboard's file); a file that does not exist is an
error, never created. The output is written atomically (`write_traces`):
a reader never sees half a file, and a failure leaves an earlier file as
it was. Exit status 0 on success (a summary line on stderr), 2 for bad
arguments or a file that cannot be read or written.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence

from obs.config import db_path_from_env
from obs.export.files import FORMATS, write_traces
from obs.storage.queries import DashboardQueries
from obs.storage.schema import MEMORY
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.traces import Trace

__all__ = ["main", "parse_since", "traces_since"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$", re.IGNORECASE)
_PAGE = 1000


def parse_since(text: str) -> float | None:
    """Seconds back from now that `--since` asks for (`15m` -> 900.0), or None for `all`.

    ValueError, naming the accepted forms, for anything else (zero and
    negative windows included).
    """
    if not isinstance(text, str):
        raise ValueError(f"--since must be text such as 15m, 1h, 24h, 7d or all, got {text!r}")
    if text.strip().lower() == "all":
        return None
    match = _SINCE.match(text)
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()] if match else 0.0
    if seconds <= 0:
        raise ValueError(
            f"--since must be a positive number with a unit s, m, h or d (15m, 1h, 24h, 7d) or 'all', "
            f"got {text!r}"
        )
    return seconds


def traces_since(store: SqliteTraceStore, since: float | None, until: float) -> list[Trace]:
    """The whole traces in `store` that started in [since, until) (epoch seconds, None: any), oldest first."""
    queries = DashboardQueries(store)
    ids: list[str] = []
    seen: set[str] = set()
    offset = 0
    while True:
        page = queries.traces(limit=_PAGE, offset=offset, since=since, until=until)
        for item in page.items:
            if item.trace_id not in seen:
                seen.add(item.trace_id)
                ids.append(item.trace_id)
        if not page.has_more:
            break
        offset += _PAGE
    ids.reverse()
    traces: list[Trace] = []
    for start in range(0, len(ids), _PAGE):
        traces.extend(store.get_many(ids[start:start + _PAGE]))
    return traces


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m obs.export",
        description="Write the traces kept in the SQLite file to a file (OTLP/JSON, Jaeger or Zipkin JSON).",
    )
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="otlp-json (OpenTelemetry), jaeger (Jaeger UI's file), zipkin (Zipkin v2 spans)")
    parser.add_argument("--since", default="1h",
                        help="how far back: 30s, 15m, 1h, 24h, 7d ... or all (default 1h)")
    parser.add_argument("--out", required=True, help="the file to write (replaced whole)")
    parser.add_argument("--db", default=None,
                        help="the SQLite file to read (default: OBS_DB_PATH, else .obs/obs.db)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the export; return the exit status (0 written, 2 refused: the reason is printed on stderr)."""
    args = _parser().parse_args(argv)
    db = args.db if args.db is not None else db_path_from_env()

    def fail(message: str) -> int:
        print(f"obs.export: {message}", file=sys.stderr)
        return 2

    try:
        window = parse_since(args.since)
    except ValueError as exc:
        return fail(str(exc))
    if db == MEMORY or not os.path.isfile(db):
        return fail(f"--db {db!r} is not an existing SQLite file; give the file the dashboard or "
                    "obs.configure writes (default .obs/obs.db, or OBS_DB_PATH)")
    if os.path.isdir(args.out):
        return fail(f"--out {args.out!r} is a directory; give a file name, e.g. traces.json")
    until = time.time()
    try:
        store = SqliteTraceStore(db)
    except ValueError as exc:
        return fail(str(exc))
    try:
        traces = traces_since(store, None if window is None else until - window, until)
    finally:
        store.close()
    try:
        spans = write_traces(traces, args.out, args.format)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return fail(f"cannot write --out {args.out!r}: {reason}")
    print(f"obs.export: wrote {len(traces)} trace(s), {spans} span(s) as {args.format} to {args.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
