"""`python -m obs.loadgen`: load a llama-server and say what it did, recording every request.

    python -m obs.loadgen --url http://127.0.0.1:8033 --concurrency 8 --requests 200
                          [--duration 60s] [--rate 5/s] [--prompts FILE] [--stream]
                          [--max-tokens 64] [--db .obs/obs.db] [--sweep 1,2,4,8]

The progress goes to stderr (one line redrawn on a terminal, a line every
few seconds otherwise); the summary (or, with `--sweep`, the capacity table
and its knee) to stdout. Every request is a trace in the SQLite file `--db`
(default `OBS_DB_PATH`, else `.obs/obs.db`: the dashboard's), under the
service `obs-loadgen`. Ctrl-C cancels the requests in flight, prints what
was done and stores it. Exit status: 0 when done, 1 when no request was
answered, 2 for bad arguments or a database that cannot be used, 130 after
Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from obs import config as obs_config
from obs.llm._config import BASE_URL_ENV, DEFAULT_BASE_URL, Endpoint
from obs.llm.async_client import AsyncInstrumentedClient
from obs.loadgen.options import LoadConfig, load_prompts, parse_duration, parse_levels, parse_rate
from obs.loadgen.report import ProgressPrinter, summary_text, sweep_text
from obs.loadgen.results import LoadResult, SweepResult
from obs.loadgen.runner import run_load_async, run_sweep_async
from obs.trace.tracer import Tracer

__all__ = ["DEFAULT_REQUESTS", "DEFAULT_SERVICE_NAME", "main", "parser"]

DEFAULT_REQUESTS = 200
DEFAULT_CONCURRENCY = 8
DEFAULT_SERVICE_NAME = "obs-loadgen"
EXIT_INTERRUPTED = 130
_FLUSH_TIMEOUT_S = 10.0


def _typed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a parser raising ValueError: its message becomes argparse's error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def _count(what: str) -> Callable[[str], int]:
    def count(text: str) -> int:
        if not text.strip().isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more ({what}), got {text!r}")
        return int(text)

    return count


def _url(text: str) -> str:
    try:
        Endpoint.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("base_url", "the URL")) from None
    return text.strip().rstrip("/")


def parser() -> argparse.ArgumentParser:
    """The command line's parser (its errors name the argument and what it accepts)."""
    p = argparse.ArgumentParser(
        prog="python -m obs.loadgen",
        description="Send chat requests to a llama-server (or any OpenAI-compatible server) at a set "
        "concurrency; print throughput, latency and TTFT percentiles and errors; record every request "
        "as a trace in the dashboard's SQLite file.",
    )
    p.add_argument("--url", type=_url, default=None,
                   help=f"the server (default ${BASE_URL_ENV}, else {DEFAULT_BASE_URL})")
    p.add_argument("--concurrency", type=_count("requests in flight at once"), default=None,
                   help=f"requests in flight at once (default {DEFAULT_CONCURRENCY})")
    p.add_argument("--requests", type=_count("requests to send"), default=None,
                   help=f"how many requests to send (default {DEFAULT_REQUESTS}, or none with --duration "
                   "alone: then it runs for the duration)")
    p.add_argument("--duration", type=_typed(parse_duration), default=None, metavar="DURATION",
                   help="stop sending after this long, like 60s, 2m or 1h (with --requests: whichever "
                   "comes first)")
    p.add_argument("--rate", type=_typed(parse_rate), default=None, metavar="RATE",
                   help="send at most this many requests per unit of time, like 5/s or 120/m")
    p.add_argument("--prompts", type=_typed(load_prompts), default=None, metavar="FILE",
                   help="prompts to send in turn: a text file with one prompt per line, or a .jsonl file "
                   "with a string, a list of messages or {\"messages\": [...]} per line (default: a "
                   "built-in list of short questions)")
    p.add_argument("--stream", action="store_true", help="stream the answers (gives time to first token)")
    p.add_argument("--max-tokens", type=_count("tokens per answer"), default=64,
                   help="longest answer in tokens (default 64)")
    p.add_argument("--sweep", type=_typed(parse_levels), default=None, metavar="LEVELS",
                   help="run the load at each of these concurrencies, like 1,2,4,8, and print the capacity "
                   "curve (instead of --concurrency)")
    p.add_argument("--db", default=None,
                   help=f"the SQLite file the traces go to (default ${obs_config.DB_PATH_ENV}, else "
                   f"{obs_config.DEFAULT_DB_PATH}: the dashboard's)")
    p.add_argument("--service-name", default=DEFAULT_SERVICE_NAME,
                   help=f"service.name of the recorded traces (default {DEFAULT_SERVICE_NAME})")
    return p  # fmt: skip


def _config(args: argparse.Namespace, p: argparse.ArgumentParser) -> LoadConfig:
    if args.sweep is not None and args.concurrency is not None:
        p.error("argument --sweep: runs every level it names; leave out --concurrency")
    requests = args.requests
    if requests is None and args.duration is None:
        requests = DEFAULT_REQUESTS
    kwargs: dict[str, Any] = {}
    if args.prompts is not None:
        kwargs["prompts"] = args.prompts
    return LoadConfig(url=args.url, concurrency=args.concurrency or DEFAULT_CONCURRENCY, requests=requests,
                      duration_s=args.duration, rate=args.rate, stream=args.stream,
                      max_tokens=args.max_tokens, **kwargs)  # fmt: skip


async def _run(args: argparse.Namespace, config: LoadConfig, tracer: Tracer,
               progress: ProgressPrinter) -> tuple[LoadResult | SweepResult, bool]:
    """Run the load (or sweep) with Ctrl-C setting the stop; (result, whether Ctrl-C stopped it)."""
    stop = threading.Event()
    loop = asyncio.get_running_loop()

    def interrupted() -> None:
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)  # a second Ctrl-C stops at once

    loop.add_signal_handler(signal.SIGINT, interrupted)
    try:
        def factory() -> AsyncInstrumentedClient:
            return AsyncInstrumentedClient(config.url, tracer=tracer)

        if args.sweep is None:
            result: LoadResult | SweepResult = await run_load_async(
                config, client_factory=factory, on_progress=progress, stop_event=stop)
        else:
            def level_done(run: LoadResult) -> None:
                progress.finish()
                s = run.summary
                print(f"concurrency {s.concurrency}: {s.requests_per_s:.2f} requests/s, p95 "
                      f"{s.latency_p95_ms or 0:.0f} ms, {s.errors} errors", file=sys.stderr, flush=True)

            result = await run_sweep_async(config, args.sweep, client_factory=factory, on_progress=progress,
                                           stop_event=stop, on_level=level_done)  # fmt: skip
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    progress.finish()
    return result, stop.is_set()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default sys.argv[1:]); return the exit status (module docstring)."""
    p = parser()
    args = p.parse_args(argv)
    config = _config(args, p)
    db = args.db if args.db is not None else obs_config.db_path_from_env()
    try:
        tracer = obs_config.configure(db, args.service_name)
    except ValueError as exc:
        print(f"obs.loadgen: {exc}", file=sys.stderr)
        return 2
    shown = Endpoint.parse(config.url).shown
    what = f"sweep over concurrency {','.join(map(str, args.sweep))}" if args.sweep else config.describe()
    print(f"obs.loadgen: {what} against {shown}, recording into {db} as {args.service_name!r}",
          file=sys.stderr, flush=True)  # fmt: skip
    progress = ProgressPrinter(sys.stderr)
    try:
        result, interrupted = asyncio.run(_run(args, config, tracer, progress))
    finally:
        stored = obs_config.shutdown(_FLUSH_TIMEOUT_S)
    if interrupted:
        print("obs.loadgen: stopped by Ctrl-C; in-flight requests were cancelled", file=sys.stderr)
    if isinstance(result, SweepResult):
        print(sweep_text(result))
        answered = sum(run.summary.ok for run in result.runs)
    else:
        print(summary_text(result.summary, streamed=config.stream))
        answered = result.summary.ok
    print(f"obs.loadgen: traces {'stored' if stored else 'NOT all stored (flush timed out)'} in {db} "
          f"(service {args.service_name!r})", file=sys.stderr)  # fmt: skip
    sys.stdout.flush()
    if interrupted:
        return EXIT_INTERRUPTED
    if not answered:
        print(f"obs.loadgen: no request was answered: is a server running at {shown}?", file=sys.stderr)
        return 1
    return 0
