"""A load run (or sweep) on a thread of its own, watched from another: what a UI needs.

    job = BackgroundLoad(config, levels=(1, 2, 4), client_factory=...).start()
    job.progress      # the latest Progress (with the results so far), or None before the first
    job.levels_done   # a sweep's levels that ended, in order
    job.stop()        # cancel what is in flight; the result keeps what was done
    job.wait(60.0); job.result  # a LoadResult (no levels) or SweepResult; job.error if it failed

The run is `run_load` / `run_sweep` in a new event loop on the job's
thread; every read is thread-safe. The thread is a daemon: a program that
exits does not wait for it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from obs.loadgen.options import LoadConfig
from obs.loadgen.results import LoadResult, Progress, SweepResult
from obs.loadgen.runner import ClientFactory, run_load, run_sweep

__all__ = ["BackgroundLoad"]


class BackgroundLoad:
    """A load run, or a sweep over `levels`, run on a thread of its own once `start()` is called.

    `client_factory` is `run_load`'s (called on the job's thread, in its
    event loop). ValueError for levels that are not whole numbers of 1 or
    more.
    """

    def __init__(
        self,
        config: LoadConfig,
        *,
        levels: Sequence[int] | None = None,
        client_factory: ClientFactory | None = None,
    ) -> None:
        """Prepare the run; nothing is sent before `start()`."""
        if not isinstance(config, LoadConfig):
            raise ValueError(f"config must be a LoadConfig, got {type(config).__name__}")
        if levels is not None:
            levels = tuple(levels)
            if not levels or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in levels):
                raise ValueError(f"levels must be whole numbers of 1 or more, like (1, 2, 4), got {levels!r}")
            levels = tuple(sorted(set(levels)))
        self.config = config
        self.levels: tuple[int, ...] | None = levels
        self._factory = client_factory
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._levels_done: list[LoadResult] = []
        self._result: LoadResult | SweepResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="obs-loadgen", daemon=True)

    def start(self) -> BackgroundLoad:
        """Start the run on its thread; return self. Starting twice raises RuntimeError."""
        self._thread.start()
        return self

    def _on_progress(self, progress: Progress) -> None:
        with self._lock:
            self._progress = progress

    def _on_level(self, result: LoadResult) -> None:
        with self._lock:
            self._levels_done.append(result)

    def _run(self) -> None:
        try:
            if self.levels is None:
                result: LoadResult | SweepResult = run_load(
                    self.config, client_factory=self._factory, on_progress=self._on_progress,
                    stop_event=self._stop)  # fmt: skip
            else:
                result = run_sweep(self.config, self.levels, client_factory=self._factory,
                                   on_progress=self._on_progress, stop_event=self._stop,
                                   on_level=self._on_level)  # fmt: skip
        except BaseException as exc:  # handed to whoever watches: nobody else would see it
            with self._lock:
                self._error = exc
        else:
            with self._lock:
                self._result = result

    @property
    def progress(self) -> Progress | None:
        """The latest progress of the level running now (None before the first report)."""
        with self._lock:
            return self._progress

    @property
    def levels_done(self) -> tuple[LoadResult, ...]:
        """A sweep's levels that have ended, in increasing concurrency (empty for a single run)."""
        with self._lock:
            return tuple(self._levels_done)

    @property
    def result(self) -> LoadResult | SweepResult | None:
        """What the run did once it ended (a SweepResult for a sweep); None while it runs or if it failed."""
        with self._lock:
            return self._result

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the run (a bug, or a client that could not be made), or None."""
        with self._lock:
            return self._error

    @property
    def running(self) -> bool:
        """True from `start()` until the run has ended."""
        return self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called."""
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask the run to stop: requests in flight are cancelled, and the result keeps what was done."""
        self._stop.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait up to `timeout_s` seconds (None: for ever) for the run to end; True if it has."""
        if self._thread.ident is None:
            raise RuntimeError("BackgroundLoad.wait: the run was never started (call start())")
        self._thread.join(timeout_s)
        return not self._thread.is_alive()
