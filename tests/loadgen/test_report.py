"""The load run as text: summary, sweep table with its knee, progress lines."""

from __future__ import annotations

import io

from obs.loadgen.report import SWEEP_COLUMNS, ProgressPrinter, summary_text, sweep_rows, sweep_text
from obs.loadgen.results import LoadResult, LoadSummary, Progress, RequestResult, SweepResult, summarize


def _summary(**changes: object) -> LoadSummary:
    values = dict(concurrency=8, elapsed_s=41.25, requests=200, ok=197, errors=3, cancelled=0,
                  input_tokens=4000, output_tokens=12803, requests_per_s=4.7758, output_tokens_per_s=310.37,
                  latency_p50_ms=1602.4, latency_p95_ms=2410.6, latency_p99_ms=2602.0, ttft_p50_ms=120.2,
                  ttft_p95_ms=380.9, errors_by_type={"500": 2, "ServerTimeout": 1})
    values.update(changes)
    return LoadSummary(**values)  # type: ignore[arg-type]


def test_the_summary_has_every_figure_on_its_own_line() -> None:
    assert summary_text(_summary()).splitlines() == [
        "200 requests in 41.2 s at concurrency 8: 197 answered, 3 failed",
        "  requests/s            4.78",
        "  output tokens/s       310.4  (12803 output tokens, 4000 input)",
        "  latency p50/p95/p99   1602 / 2411 / 2602 ms",
        "  TTFT p50/p95          120 / 381 ms",
        "  errors                3 (500 2, ServerTimeout 1)",
    ]


def test_the_summary_says_why_there_is_no_ttft_and_what_was_cancelled() -> None:
    text = summary_text(_summary(ttft_p50_ms=None, ttft_p95_ms=None, errors=0, errors_by_type={},
                                 cancelled=4), streamed=False)
    assert "3 failed" not in text
    assert "0 failed, 4 cancelled in flight" in text
    assert "TTFT p50/p95          n/a (only streamed answers have one: --stream)" in text
    assert text.endswith("errors                none")


def test_a_summary_without_an_answer_says_so() -> None:
    text = summary_text(summarize([RequestResult(0, 3.0, 0.1, "ServerUnavailable")], 0.1, concurrency=1))
    assert "latency p50/p95/p99   n/a (no answer)" in text
    assert "errors                1 (ServerUnavailable 1)" in text


def _run(concurrency: int, latencies: list[float], elapsed: float, errors: int = 0) -> LoadResult:
    results = [RequestResult(i, lat, 0.0, None, lat / 4, output_tokens=20) for i, lat in enumerate(latencies)]
    results += [RequestResult(100 + i, 1.0, 0.0, "500") for i in range(errors)]
    return LoadResult(concurrency, tuple(results), elapsed)


def test_the_sweep_table_has_a_row_per_level_and_names_the_knee() -> None:
    sweep = SweepResult((_run(1, [400.0, 420.0], 2.0), _run(2, [450.0, 470.0], 1.1),
                         _run(4, [900.0, 950.0], 1.0, errors=1)))
    lines = sweep_text(sweep).splitlines()
    assert [cell.strip() for cell in lines[0].split("  ") if cell.strip()] == list(SWEEP_COLUMNS)
    assert set(lines[1]) == {"-", " "}
    assert [line.split() for line in lines[2:5]] == [
        ["1", "1.00", "20.0", "400", "420", "420", "105", "0"],
        ["2", "1.82", "36.4", "450", "470", "470", "118", "0"],
        ["4", "2.00", "40.0", "900", "950", "950", "238", "1"],
    ]
    assert lines[5].startswith("knee at concurrency 2: going to 4, p95 latency turns up 470 -> 950 ms")
    assert lines[5].endswith("beyond concurrency 2 the extra requests mostly wait in the server's queue")


def test_sweep_rows_follow_the_columns() -> None:
    (row,) = sweep_rows([_run(3, [100.0], 1.0).summary])
    assert len(row) == len(SWEEP_COLUMNS) and row[0] == "3"


def test_a_sweep_without_a_knee_says_to_go_higher_and_a_stopped_one_says_so() -> None:
    sweep = SweepResult((_run(1, [400.0], 1.0), _run(2, [410.0], 0.5)), stopped=True)
    lines = sweep_text(sweep).splitlines()
    assert lines[-2] == "(stopped early: the last level ran only part of its requests)"
    assert lines[-1] == ("no knee up to concurrency 2: p95 latency grew no faster than throughput; "
                         "try higher levels")
    assert sweep_text(SweepResult((_run(1, [400.0], 1.0),))).splitlines()[-1].startswith(
        "no knee: a capacity curve needs two levels or more")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_off_a_terminal_is_a_plain_line_every_interval() -> None:
    out, clock = io.StringIO(), _Clock()
    printer = ProgressPrinter(out, tty=False, interval_s=5.0, clock=clock)
    for second in range(12):
        clock.now = float(second)
        printer(Progress(8, second * 10, 0, 8, float(second), total=200))
    printer.finish()
    lines = out.getvalue().splitlines()
    counts = [line.split("] ")[1].split(" done")[0] for line in lines]
    assert counts == ["0/200", "50/200", "100/200", "110/200"]
    assert lines[1] == "[######..................] 50/200 done, 8 in flight, 0 errors, 10.0 req/s, 5s (c=8)"
    assert "\r" not in out.getvalue()


def test_progress_on_a_terminal_redraws_one_line_and_ends_it() -> None:
    out, clock = io.StringIO(), _Clock()
    printer = ProgressPrinter(out, tty=True, clock=clock)
    printer(Progress(2, 0, 0, 2, 0.0, duration_s=60.0))
    clock.now = 30.0
    printer(Progress(2, 12, 1, 2, 30.0, duration_s=60.0))
    printer.finish()
    text = out.getvalue()
    assert text.count("\r\x1b[2K") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert text.rstrip("\n").split("\r\x1b[2K")[-1] == (
        "[############............] 12 done, 2 in flight, 1 errors, 0.4 req/s, 30 of 60s (c=2)")


def test_finish_draws_the_last_progress_not_yet_drawn_once() -> None:
    out, clock = io.StringIO(), _Clock()
    printer = ProgressPrinter(out, tty=False, interval_s=5.0, clock=clock)
    printer(Progress(1, 0, 0, 1, 0.0, total=4))
    clock.now = 1.0
    printer(Progress(1, 4, 0, 0, 1.0, total=4))  # too soon to draw
    printer.finish()
    printer.finish()  # nothing more to draw
    assert [line.split("] ")[1].split(" done")[0] for line in out.getvalue().splitlines()] == ["0/4", "4/4"]
