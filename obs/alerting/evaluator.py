"""Alert rules evaluated in the background: one thread that evaluates every watched AlertManager.

An `AlertManager` moves its rules only when `evaluate()` is called. An
application that evaluates only when someone looks (a dashboard page that
draws) never fires, and never calls its webhook, while nobody looks. An
`AlertEvaluator` runs one daemon thread that evaluates every manager it
watches each `interval_s` seconds, so rules fire and notifiers hear of it
whether anyone looks or not; readers take states and history from the
managers (`states()`, `history`).

Managers are held weakly: one that nothing else references any more (its
owner is gone) is no longer evaluated and is forgotten, so a long-running
process never has to unwatch by hand. Thread-safe. Evaluation never raises
into the application: a manager that raises is logged and counted in
`errors`, and the others are evaluated as usual.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any, Protocol

from obs._validate import check_real
from obs.clock import SYSTEM_CLOCK, Clock

__all__ = ["MAX_INTERVAL_S", "MIN_INTERVAL_S", "AlertEvaluator", "Evaluable"]

_log = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.05
MAX_INTERVAL_S = 86_400.0


class Evaluable(Protocol):
    """What an evaluator evaluates: an `AlertManager`, or anything with `evaluate(now)`."""

    def evaluate(self, now: float | None = None) -> Any:
        """Evaluate the rules at `now` (epoch s; None: the manager's own clock)."""
        ...


def _check_interval(value: Any) -> float:
    return check_real(
        "interval_s", value, MIN_INTERVAL_S, MAX_INTERVAL_S,
        f"a number of seconds in [{MIN_INTERVAL_S:g}, {MAX_INTERVAL_S:g}] (5 evaluates every 5 s)",
    )


class AlertEvaluator:
    """Evaluates every watched alert manager each `interval_s` seconds on one background thread.

    `start()` starts the thread (idempotent), `stop()` ends it. `evaluate_all()`
    does one pass in the calling thread, the same as the thread does. The
    counters say what happened: `passes` (completed passes), `evaluations`
    (manager evaluations, all passes together), `errors` (evaluations that
    raised), `last_pass_at` (epoch s when the last pass began, by `clock`).
    """

    def __init__(self, interval_s: float = 5.0, *, clock: Clock = SYSTEM_CLOCK) -> None:
        """Evaluate every `interval_s` seconds (0.05 to 86,400); ValueError names a bad interval or clock."""
        if not callable(getattr(clock, "time_ms", None)):
            raise ValueError(f"AlertEvaluator: clock must have time_ms(), got {clock!r}")
        self._interval_s = _check_interval(interval_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._managers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.passes = 0
        self.evaluations = 0
        self.errors = 0
        self.last_pass_at: float | None = None

    # -- configuration ---------------------------------------------------------------------------

    @property
    def interval_s(self) -> float:
        """Seconds between the start of one pass and the start of the next."""
        return self._interval_s

    @interval_s.setter
    def interval_s(self, value: float) -> None:
        """Change the interval; a waiting thread starts its next pass by the new one."""
        checked = _check_interval(value)
        with self._changed:
            self._interval_s = checked
            self._changed.notify_all()

    def watch(self, manager: Evaluable) -> None:
        """Evaluate `manager` on every pass from now on (held weakly; watching twice is watching once).

        ValueError for an object without `evaluate()`, or one that cannot be
        referenced weakly.
        """
        if not callable(getattr(manager, "evaluate", None)):
            raise ValueError(f"AlertEvaluator.watch: manager must have evaluate(now), got {manager!r}")
        try:
            with self._lock:
                self._managers.add(manager)
        except TypeError as exc:
            raise ValueError(
                f"AlertEvaluator.watch: manager must support weak references, got {manager!r}"
            ) from exc

    def unwatch(self, manager: Evaluable) -> None:
        """Stop evaluating `manager` (nothing happens if it was not watched)."""
        with self._lock:
            self._managers.discard(manager)

    def watched(self) -> list[Evaluable]:
        """The managers evaluated on each pass, as they stand now."""
        with self._lock:
            return list(self._managers)

    # -- evaluating --------------------------------------------------------------------------------

    def evaluate_all(self, now: float | None = None) -> int:
        """Evaluate every watched manager once, at `now` (epoch s; None: each manager's own clock).

        Returns how many evaluations raised (each logged and counted in
        `errors`); never raises itself.
        """
        managers = self.watched()
        started = self._clock.time_ms() / 1000.0
        failed = 0
        for manager in managers:
            try:
                manager.evaluate(now)
            except Exception as exc:
                failed += 1
                _log.warning("alert evaluation of %r failed: %s: %s", manager, type(exc).__name__, exc)
        with self._lock:
            self.passes += 1
            self.evaluations += len(managers)
            self.errors += failed
            self.last_pass_at = started
        return failed

    # -- the thread --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the background thread runs."""
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the background thread; its first pass comes one interval from now. Idempotent."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="obs-alert-evaluator", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop the thread after the pass it may be in; True once it has ended within `timeout_s`."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout_s)
        return not thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._changed:
                began = time.monotonic()
                while not self._stopping:
                    left = began + self._interval_s - time.monotonic()
                    if left <= 0:
                        break
                    self._changed.wait(left)
                if self._stopping:
                    return
            try:
                self.evaluate_all()
            except Exception:  # the thread must outlive anything a pass does
                _log.exception("an alert evaluation pass failed")

    def __repr__(self) -> str:
        with self._lock:
            watched = len(self._managers)
        return (f"AlertEvaluator(interval_s={self._interval_s:g}, watched={watched}, passes={self.passes}, "
                f"errors={self.errors})")
