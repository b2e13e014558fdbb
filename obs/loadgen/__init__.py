"""Load generation: many chat requests at once through the instrumented async client, and what they did.

`run_load(LoadConfig(url, concurrency=8, requests=200))` returns a
`LoadResult` whose `summary` gives requests/s, output tokens/s, latency
p50/p95/p99, TTFT p50/p95 and errors by type, computed from the spans the
client recorded (so it says what the stored traces say). `run_sweep(config,
(1, 2, 4, 8))` runs it at each concurrency: the server's capacity curve,
whose knee `find_knee` finds. `BackgroundLoad` runs either on a thread of
its own for a UI to watch and stop. `python -m obs.loadgen` is the command
line (`obs.loadgen.cli`).
"""

from obs.loadgen.background import BackgroundLoad
from obs.loadgen.options import (
    DEFAULT_PROMPTS,
    LoadConfig,
    load_prompts,
    parse_duration,
    parse_levels,
    parse_prompt_lines,
    parse_rate,
)
from obs.loadgen.report import ProgressPrinter, summary_text, sweep_text
from obs.loadgen.results import (
    Knee,
    LoadResult,
    LoadSummary,
    Progress,
    RequestResult,
    SweepResult,
    find_knee,
    percentile,
    summarize,
)
from obs.loadgen.runner import run_load, run_load_async, run_sweep, run_sweep_async

__all__ = [
    "DEFAULT_PROMPTS",
    "BackgroundLoad",
    "Knee",
    "LoadConfig",
    "LoadResult",
    "LoadSummary",
    "Progress",
    "ProgressPrinter",
    "RequestResult",
    "SweepResult",
    "find_knee",
    "load_prompts",
    "parse_duration",
    "parse_levels",
    "parse_prompt_lines",
    "parse_rate",
    "percentile",
    "run_load",
    "run_load_async",
    "run_sweep",
    "run_sweep_async",
    "summarize",
    "summary_text",
    "sweep_text",
]
