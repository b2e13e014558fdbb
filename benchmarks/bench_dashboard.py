"""The Dashboard page's refresh at 10,000, 100,000 and 1,000,000 stored requests: time, and bytes sent.

Each size is a synthetic history file (`benchmarks/synthetic.py`: 7 days of
chat calls, three services and models, conversations of five turns, errors,
streamed calls, cache hits), written once per run into a temporary folder
(set OBS_BENCH_DASHBOARD_DIR to a folder to keep the files there and reuse
them in later runs). A refresh is what the page does every few seconds:
`app.dashboard_view.dashboard_view` (tiles, time series, latency histogram,
the requests spread over the range, the latest traces' requests, and the
eight figures), then each figure serialised as `st.plotly_chart` does
(`plotly.tools.return_figure_from_figure_or_data`, `plotly.io.to_json`, and
the md5 of the spec that becomes the element's id). Bytes sent are the
figures' JSON specs and config, the tiles and the caption.

The refresh is measured in the views the page offers (time ranges, scopes),
every size and view in interleaved rounds; the figure is the median of the
rounds. Goals at 1,000,000 requests, in every view: under 1 s and under
2 MB, and at most 12 times the time at 100,000.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plotly.io
import plotly.tools

from app.dashboard_view import PLOTLY_CONFIG, DashboardView, dashboard_view
from benchmarks.synthetic import MODELS, SERVICES, TURNS_PER_CONVERSATION, synthetic_requests, write_store
from obs.clock import FakeClock
from obs.storage.queries import DashboardQueries
from obs.storage.sqlite import SqliteTraceStore

SIZES = (10_000, 100_000, 1_000_000)
ROUNDS = 7
SEED = 7
GOAL_S = 1.0
GOAL_BYTES = 2_000_000
GOAL_RATIO = 12.0
_KEEP = "OBS_BENCH_DASHBOARD_DIR"



def _latest_conversations(n: int) -> dict[str, Any]:
    """A scope of 20 conversations spread over the last day's (the calls' conversations are in time order)."""
    conversations = n // TURNS_PER_CONVERSATION
    day = max(20, conversations // 7)
    return {"conversation": [f"conv-{conversations - 1 - k * (day // 20):x}" for k in range(20)]}


# (name, seconds back from now (None: all), the user's bucket choice, the scope for a file of n requests)
VIEWS: list[tuple[str, float | None, int, Callable[[int], dict[str, Any]]]] = [
    ("last 15 min, 1 s buckets", 900.0, 1, lambda n: {}),
    ("last hour, 1 s buckets", 3600.0, 1, lambda n: {}),
    ("last 24 h (1 min buckets)", 86400.0, 1, lambda n: {}),
    ("last 7 days (1 h buckets)", 7 * 86400.0, 60, lambda n: {}),
    ("all (1 h buckets)", None, 60, lambda n: {}),
    ("last 24 h, one model", 86400.0, 60, lambda n: {"model": MODELS[1]}),
    ("last 24 h, one service", 86400.0, 60, lambda n: {"service": SERVICES[0]}),
    ("last 24 h, 20 conversations", 86400.0, 60, _latest_conversations),
]


def sent_bytes(view: DashboardView) -> int:
    """Serialise `view` as the page sends it; return the bytes (figure specs and config, tiles, caption)."""
    config = json.dumps(PLOTLY_CONFIG)
    total = len(view.caption.encode())
    total += sum(len(f"{label}{value}".encode()) for label, value in view.tiles.items())
    for figure in view.figures.values():
        spec = plotly.io.to_json(plotly.tools.return_figure_from_figure_or_data(figure, validate_figure=True),
                                 validate=False)  # fmt: skip
        hashlib.md5(f"plotly_chart-{spec}-{config}".encode()).hexdigest()  # Streamlit's element id
        total += len(spec.encode()) + len(config)
    return total


def _store(folder: Path, n: int, end_ms: float) -> tuple[Path, float]:
    """The file of `n` requests in `folder` (written now unless kept from an earlier run) and its end (ms)."""
    path = folder / f"requests-{n}-seed{SEED}.db"
    about = path.with_suffix(".json")
    if path.exists() and about.exists():
        kept = json.loads(about.read_text())
        size = path.stat().st_size / 2**20
        print(f"  {n:>9,} requests: kept from an earlier run ({size:,.0f} MB)", flush=True)
        return path, float(kept["end_ms"])
    for stale in (path, about, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    started = time.perf_counter()
    write_store(path, synthetic_requests(n, end_ms=end_ms, seed=SEED))
    about.write_text(json.dumps({"end_ms": end_ms, "requests": n}))
    print(f"  {n:>9,} requests: written in {time.perf_counter() - started:,.1f} s "
          f"({path.stat().st_size / 2**20:,.0f} MB)", flush=True)  # fmt: skip
    return path, end_ms


View = tuple[str, float | None, int, Callable[[int], dict[str, Any]]]


def _refresh(queries: DashboardQueries, n: int, now_s: float, view: View) -> Callable[[], int]:
    _, back, bucket, scope_of = view
    since, scope = None if back is None else now_s - back, scope_of(n)

    def run() -> int:
        return sent_bytes(dashboard_view(queries, since, scope, bucket_s=bucket, now=now_s))

    return run


def _measure(files: dict[int, tuple[Path, float]]) -> dict[tuple[int, str], tuple[float, int]]:
    """(size, view) -> (median seconds, bytes) over ROUNDS interleaved rounds."""
    stores = {n: SqliteTraceStore(path) for n, (path, _) in files.items()}
    try:
        runs: dict[tuple[int, str], Callable[[], int]] = {}
        for n, store in stores.items():
            end_ms = files[n][1]
            queries = DashboardQueries(store, clock=FakeClock(start_ms=end_ms))
            for view in VIEWS:
                runs[(n, view[0])] = _refresh(queries, n, end_ms / 1000.0, view)
        sizes = {key: run() for key, run in runs.items()}  # warm: the page cache, connections, imports
        times: dict[tuple[int, str], list[float]] = {key: [] for key in runs}
        for _ in range(ROUNDS):
            for key, run in runs.items():
                gc.collect()
                started = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - started)
        return {key: (statistics.median(times[key]), sizes[key]) for key in runs}
    finally:
        for store in stores.values():
            store.close()


def _report(results: dict[tuple[int, str], tuple[float, int]]) -> None:
    names = [view[0] for view in VIEWS]
    head = "".join(f"{n:>22,}" for n in SIZES)
    print(f"\nrefresh time (median of {ROUNDS} rounds) and bytes sent, by stored requests:")
    print(f"  {'view':32s}{head}   1M / 100k")
    ratios = []
    for name in names:
        cells = "".join(f"{results[(n, name)][0] * 1000:>10.0f} ms {results[(n, name)][1] / 1e6:>6.2f} MB"
                        for n in SIZES)  # fmt: skip
        ratio = results[(SIZES[-1], name)][0] / results[(SIZES[-2], name)][0]
        ratios.append(ratio)
        print(f"  {name:32s}{cells}   {ratio:>8.2f}x")
    big = SIZES[-1]
    slowest = max(names, key=lambda name: results[(big, name)][0])
    heaviest = max(names, key=lambda name: results[(big, name)][1])
    seconds, sent = results[(big, slowest)][0], results[(big, heaviest)][1]
    worst = max(ratios)

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    print(f"\nat {big:,} requests, slowest view ({slowest}): {seconds:.3f} s; goal under {GOAL_S:g} s: "
          f"{verdict(seconds < GOAL_S)}")  # fmt: skip
    print(f"at {big:,} requests, most bytes ({heaviest}): {sent / 1e6:.2f} MB; goal under "
          f"{GOAL_BYTES / 1e6:g} MB: {verdict(sent < GOAL_BYTES)}")  # fmt: skip
    print(f"time at {big:,} / time at {SIZES[-2]:,}: at most {worst:.2f}x (view by view); goal at most "
          f"{GOAL_RATIO:g}x: {verdict(worst <= GOAL_RATIO)}")  # fmt: skip


def main() -> None:
    """Write the three files (or reuse kept ones); print each view's refresh time and bytes, and the goals."""
    kept = os.environ.get(_KEEP)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(kept) if kept else Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        end_ms = time.time() * 1000.0
        print(f"history files ({'kept in ' + _KEEP if kept else 'temporary'}):")
        files = {n: _store(folder, n, end_ms) for n in SIZES}
        _report(_measure(files))


if __name__ == "__main__":
    main()
