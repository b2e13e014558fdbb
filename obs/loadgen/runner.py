"""Running load: `run_load(config) -> LoadResult` and `run_sweep(config, levels) -> SweepResult`.

A run keeps `config.concurrency` requests in flight through one
`AsyncInstrumentedClient` (so every request is a span, a metrics record and
a log entry wherever that client's tracer sends them), in one event loop:
one worker task per slot takes the next request number, waits for its turn
when a rate is set, sends it and reads its answer (to the end, when
streamed). Each ended request becomes a `RequestResult` read off its span;
a failure the client raises (an `obs.llm.errors` exception) becomes a
result with its `error.type`. Any other exception is a bug: it stops the run
and is raised.

Stopping: the run ends by itself after `config.requests` requests or
`config.duration_s` seconds (requests in flight then are let finish). A
`stop_event` (anything with `is_set()`, e.g. a `threading.Event` set by a
signal handler or another thread) ends it early: requests in flight are
cancelled and counted in `LoadResult.cancelled`, and the result holds what
was done. `on_progress(Progress)` is called from the run's event loop (the
caller's thread with `run_load`) a few times a second and once at the end;
an exception it raises stops the run and is raised once the client is closed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from obs.llm.async_client import AsyncInstrumentedClient
from obs.llm.errors import LLMServerError
from obs.loadgen.options import LoadConfig
from obs.loadgen.results import LoadResult, Progress, RequestResult, SweepResult

__all__ = [
    "AsyncChatClient",
    "ClientFactory",
    "ProgressCallback",
    "StopSignal",
    "run_load",
    "run_load_async",
    "run_sweep",
    "run_sweep_async",
]

_TICK_S = 0.05
_PROGRESS_EVERY_S = 0.2


class AsyncChatClient(Protocol):
    """What a run needs of its client: AsyncInstrumentedClient's `chat`, `chat_stream` and `aclose`."""

    async def chat(self, messages: Any, *, conversation_id: str | None = None, **params: Any) -> Any:
        """Send one request; the result has the recorded `span`."""

    async def chat_stream(self, messages: Any, *, conversation_id: str | None = None, **params: Any) -> Any:
        """Open one streamed request: an async iterator of deltas (and context manager) with `span`."""

    async def aclose(self) -> None:
        """Close the client's connections."""


class StopSignal(Protocol):
    """Anything that says whether to stop, such as a `threading.Event`."""

    def is_set(self) -> bool:
        """True once the run should stop."""


ClientFactory = Callable[[], AsyncChatClient]
ProgressCallback = Callable[[Progress], object]


def _default_factory(config: LoadConfig) -> ClientFactory:
    def make() -> AsyncChatClient:
        return AsyncInstrumentedClient(config.url)

    return make


async def _send(client: AsyncChatClient, config: LoadConfig, index: int) -> Any:
    """Send request `index` and read its whole answer; return its recorded span."""
    messages, params = config.messages(index), config.body_params()
    if not config.stream:
        return (await client.chat(messages, conversation_id=config.conversation_id, **params)).span
    stream = await client.chat_stream(messages, conversation_id=config.conversation_id, **params)
    async with stream:
        async for _ in stream:
            pass
    return stream.span


class _Run:
    """The state of one run: the request counter, the results so far, the tasks; one event loop only."""

    def __init__(self, config: LoadConfig, client: AsyncChatClient) -> None:
        self.config = config
        self.client = client
        self.results: list[RequestResult] = []
        self.errors = 0
        self.output_tokens = 0
        self.next_index = 0
        self.in_flight = 0
        self.cancelled = 0
        self.stopped = False
        self.failure: BaseException | None = None
        self.started = time.perf_counter()
        self.ended: float | None = None
        self.deadline = None if config.duration_s is None else self.started + config.duration_s

    def elapsed(self) -> float:
        return (self.ended if self.ended is not None else time.perf_counter()) - self.started

    def progress(self) -> Progress:
        config = self.config
        return Progress(config.concurrency, len(self.results), self.errors, self.in_flight, self.elapsed(),
                        self.output_tokens, config.requests, config.duration_s,
                        tuple(self.results))  # fmt: skip

    def _take(self) -> int | None:
        if self.stopped or (self.config.requests is not None and self.next_index >= self.config.requests):
            return None
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            return None
        index, self.next_index = self.next_index, self.next_index + 1
        return index

    async def _wait_turn(self, index: int) -> bool:
        """Sleep until request `index` may go at the configured rate; False if the duration ends first."""
        assert self.config.rate is not None
        due = self.started + index / self.config.rate
        if self.deadline is not None and due >= self.deadline:
            return False
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        return True

    async def worker(self) -> None:
        while (index := self._take()) is not None:
            if self.config.rate is not None and not await self._wait_turn(index):
                return
            self.in_flight += 1
            sent = time.perf_counter()
            try:
                span = await _send(self.client, self.config, index)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            except LLMServerError as exc:
                now = time.perf_counter()
                result = RequestResult(index, (now - sent) * 1000.0, now - self.started, exc.error_type)
            else:
                result = RequestResult.from_span(index, span, time.perf_counter() - self.started)
            finally:
                self.in_flight -= 1
            self.results.append(result)
            self.errors += not result.ok
            self.output_tokens += result.output_tokens if result.ok else 0


async def _watch(run: _Run, workers: Sequence[asyncio.Task[None]], stop_event: StopSignal | None,
                 on_progress: ProgressCallback | None) -> None:
    """Until the workers end: report progress every so often; on a stop, cancel the requests in flight.

    An exception from `on_progress` stops the run the same way and is kept in `run.failure`.
    """
    last_at = -_PROGRESS_EVERY_S
    while not all(task.done() for task in workers):
        stop = stop_event is not None and not run.stopped and stop_event.is_set()
        now = time.perf_counter()
        if on_progress is not None and now - last_at >= _PROGRESS_EVERY_S:
            last_at = now
            try:
                on_progress(run.progress())
            except BaseException as exc:  # raised by run_load_async once the client is closed
                run.failure, stop = exc, True
        if stop:
            run.stopped = True
            for task in workers:
                task.cancel()
        await asyncio.sleep(_TICK_S)


async def run_load_async(
    config: LoadConfig,
    *,
    client_factory: ClientFactory | None = None,
    on_progress: ProgressCallback | None = None,
    stop_event: StopSignal | None = None,
) -> LoadResult:
    """Run the load `config` describes in the running event loop and return what it did (module docstring).

    `client_factory()` makes the client the run sends through and closes at
    the end (default: `AsyncInstrumentedClient(config.url)`, recording into
    its own memory). Raises what `client_factory` or `on_progress` raise,
    and any exception a request raises that is not an obs.llm.errors one.
    """
    if not isinstance(config, LoadConfig):
        raise ValueError(f"config must be a LoadConfig, got {type(config).__name__}")
    client = (client_factory or _default_factory(config))()
    run = _Run(config, client)
    workers = [asyncio.create_task(run.worker(), name=f"obs-loadgen-{i}") for i in range(config.concurrency)]
    watcher = asyncio.create_task(_watch(run, workers, stop_event, on_progress), name="obs-loadgen-watch")
    try:
        # A worker's bug ends the run at once (the others are cancelled below).
        done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
        run.ended = time.perf_counter()
        bug = next((t.exception() for t in done if not t.cancelled() and t.exception()), None)
    finally:
        if run.ended is None:
            run.ended = time.perf_counter()
        for task in [*workers, watcher]:
            task.cancel()
        await asyncio.gather(*workers, watcher, return_exceptions=True)
        await client.aclose()
    failure = run.failure or bug
    if failure is not None:
        raise failure
    if on_progress is not None:
        on_progress(run.progress())
    return LoadResult(config.concurrency, tuple(run.results), run.ended - run.started, run.cancelled,
                      run.stopped)  # fmt: skip


def run_load(
    config: LoadConfig,
    *,
    client_factory: ClientFactory | None = None,
    on_progress: ProgressCallback | None = None,
    stop_event: StopSignal | None = None,
) -> LoadResult:
    """`run_load_async` in a new event loop on this thread (not from inside a running loop)."""
    return asyncio.run(run_load_async(config, client_factory=client_factory, on_progress=on_progress,
                                      stop_event=stop_event))  # fmt: skip


async def run_sweep_async(
    config: LoadConfig,
    levels: Sequence[int],
    *,
    client_factory: ClientFactory | None = None,
    on_progress: ProgressCallback | None = None,
    stop_event: StopSignal | None = None,
    on_level: Callable[[LoadResult], object] | None = None,
) -> SweepResult:
    """Run `config` at each concurrency of `levels` (increasing), one after the other; a fresh client each.

    Every level sends the same requests (or runs as long) as `config` says.
    `on_level` gets each level's result as it ends. A stop ends the sweep
    after the level it cut short (kept, with what it did).
    """
    ordered = sorted(set(levels))
    if not ordered or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in ordered):
        raise ValueError(f"levels must be whole numbers of 1 or more, like (1, 2, 4, 8), got {levels!r}")
    runs: list[LoadResult] = []
    for level in ordered:
        level_config = replace(config, concurrency=level)
        result = await run_load_async(level_config, client_factory=client_factory or
                                      _default_factory(level_config), on_progress=on_progress,
                                      stop_event=stop_event)  # fmt: skip
        runs.append(result)
        if on_level is not None:
            on_level(result)
        if result.stopped:
            return SweepResult(tuple(runs), stopped=True)
    return SweepResult(tuple(runs))


def run_sweep(
    config: LoadConfig,
    levels: Sequence[int],
    *,
    client_factory: ClientFactory | None = None,
    on_progress: ProgressCallback | None = None,
    stop_event: StopSignal | None = None,
    on_level: Callable[[LoadResult], object] | None = None,
) -> SweepResult:
    """`run_sweep_async` in a new event loop on this thread (not from inside a running loop)."""
    return asyncio.run(run_sweep_async(config, levels, client_factory=client_factory, on_progress=on_progress,
                                       stop_event=stop_event, on_level=on_level))  # fmt: skip
