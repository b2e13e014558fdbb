"""How a load run reads as text: the summary, the sweep's table and its knee, the progress line.

`summary_text(summary)` and `sweep_text(sweep)` are pure; `ProgressPrinter`
writes the progress of a run to a stream (stderr): one line redrawn in place
on a terminal, plain lines every few seconds otherwise (a log file, a CI job).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from obs.loadgen.results import Knee, LoadSummary, Progress, SweepResult, find_knee

__all__ = ["SWEEP_COLUMNS", "ProgressPrinter", "knee_text", "summary_text", "sweep_rows", "sweep_text"]

SWEEP_COLUMNS = ("concurrency", "requests/s", "output tok/s", "p50 ms", "p95 ms", "p99 ms",
                 "TTFT p95 ms", "errors")  # fmt: skip
_BAR = 24


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _errors(summary: LoadSummary) -> str:
    if not summary.errors:
        return "none"
    kinds = ", ".join(f"{kind} {count}" for kind, count in summary.errors_by_type.items())
    return f"{summary.errors} ({kinds})"


def summary_text(summary: LoadSummary, *, streamed: bool | None = None) -> str:
    """The end-of-run summary, one figure per line (requests/s, output tokens/s, percentiles, errors).

    `streamed` False explains a missing TTFT (only streamed answers have one).
    """
    cancelled = f", {summary.cancelled} cancelled in flight" if summary.cancelled else ""
    if summary.ttft_p50_ms is None:
        ttft = "n/a (only streamed answers have one: --stream)" if streamed is False else "n/a"
    else:
        ttft = f"{_ms(summary.ttft_p50_ms)} / {_ms(summary.ttft_p95_ms)} ms"
    latency = "n/a (no answer)"
    if summary.latency_p50_ms is not None:
        latency = " / ".join(_ms(v) for v in (summary.latency_p50_ms, summary.latency_p95_ms,
                                               summary.latency_p99_ms)) + " ms"  # fmt: skip
    lines = [
        f"{summary.requests} requests in {summary.elapsed_s:.1f} s at concurrency {summary.concurrency}: "
        f"{summary.ok} answered, {summary.errors} failed{cancelled}",
        f"  requests/s            {summary.requests_per_s:.2f}",
        f"  output tokens/s       {summary.output_tokens_per_s:.1f}  ({summary.output_tokens} output tokens, "
        f"{summary.input_tokens} input)",
        f"  latency p50/p95/p99   {latency}",
        f"  TTFT p50/p95          {ttft}",
        f"  errors                {_errors(summary)}",
    ]  # fmt: skip
    return "\n".join(lines)


def sweep_rows(summaries: Sequence[LoadSummary]) -> list[tuple[str, ...]]:
    """The sweep table's rows as text, one per level, in the order of `SWEEP_COLUMNS`."""
    return [(str(s.concurrency), f"{s.requests_per_s:.2f}", f"{s.output_tokens_per_s:.1f}",
             _ms(s.latency_p50_ms), _ms(s.latency_p95_ms), _ms(s.latency_p99_ms), _ms(s.ttft_p95_ms),
             str(s.errors)) for s in summaries]  # fmt: skip


def knee_text(knee: Knee | None, summaries: Sequence[LoadSummary]) -> str:
    """Where p95 turns up, in a sentence; or that it did not within the levels tried."""
    if knee is not None:
        return (f"{knee.describe()}: beyond concurrency {knee.at} the extra requests mostly wait in the "
                "server's queue")
    if len(summaries) < 2:
        return "no knee: a capacity curve needs two levels or more (--sweep 1,2,4,8)"
    return (f"no knee up to concurrency {summaries[-1].concurrency}: p95 latency grew no faster than "
            "throughput; try higher levels")


def sweep_text(sweep: SweepResult) -> str:
    """The capacity curve as a table (`SWEEP_COLUMNS`, one row per level) and the knee below it."""
    summaries = sweep.summaries
    rows = [SWEEP_COLUMNS, *sweep_rows(summaries)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(SWEEP_COLUMNS))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    if sweep.stopped:
        lines.append("(stopped early: the last level ran only part of its requests)")
    lines.append(knee_text(find_knee(summaries), summaries))
    return "\n".join(lines)


def _progress_line(p: Progress) -> str:
    filled = round(p.fraction * _BAR)
    of = f"/{p.total}" if p.total is not None else ""
    left = f" of {p.duration_s:.0f}s" if p.duration_s is not None else "s"
    rate = p.done / p.elapsed_s if p.elapsed_s > 0 else 0.0
    return (f"[{'#' * filled}{'.' * (_BAR - filled)}] {p.done}{of} done, {p.in_flight} in flight, "
            f"{p.errors} errors, {rate:.1f} req/s, {p.elapsed_s:.0f}{left} (c={p.concurrency})")


class ProgressPrinter:
    """A progress callback for `run_load`: draws the run's progress on `stream`.

    On a terminal (`tty`, default: `stream.isatty()`) one line is redrawn in
    place at most every `tty_interval_s`; otherwise a plain line is written
    every `interval_s` seconds. `finish()` ends the line (terminal) or writes
    the last one. Safe to call from any thread.
    """

    def __init__(self, stream: TextIO, *, tty: bool | None = None, interval_s: float = 5.0,
                 tty_interval_s: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        """Write to `stream`; see the class docstring for the intervals."""
        if tty is None:
            isatty = getattr(stream, "isatty", None)
            tty = bool(isatty()) if callable(isatty) else False
        self.stream = stream
        self.tty = tty
        self._every = tty_interval_s if tty else interval_s
        self._clock = clock
        self._last_at: float | None = None
        self._last: Progress | None = None
        self._drawn = False
        self._lock = threading.Lock()

    def __call__(self, progress: Progress) -> None:
        """Take the latest progress; draw it if enough time passed since the last drawing."""
        with self._lock:
            self._last, self._drawn = progress, False
            now = self._clock()
            if self._last_at is not None and now - self._last_at < self._every:
                return
            self._last_at = now
            self._draw(progress)
            self._drawn = True

    def _draw(self, progress: Progress) -> None:
        line = _progress_line(progress)
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """Draw the last progress taken (if not drawn already) and end the line."""
        with self._lock:
            if self._last is not None:
                if not self._drawn:
                    self._draw(self._last)
                if self.tty:
                    self.stream.write("\n")
                    self.stream.flush()
            self._last, self._last_at, self._drawn = None, None, False
