"""The kept threads that relay streams (`obs.proxy._pump`), and how a thread is handed a job.

A thread that finished a relay waits for the next one rather than end:
starting a thread costs the event loop about 0.2 ms of CPU and the new
thread as much again. Handing a job to a waiting thread costs, at most, a
byte on its pipe; a relay that is to wait for an answer's head costs no
wake-up at all where epoll exists (`_Worker`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import threading
from collections.abc import Callable

__all__ = ["Watch", "Workers", "unwatch_sockets"]

Watch = tuple[tuple[int, int], ...]  # (fd, poll events): a kept thread starts its job when one stirs
_POLLIN = getattr(select, "POLLIN", 1)
_log = logging.getLogger("obs.proxy")
_current = threading.local()  # .worker: the _Worker of a kept thread


def unwatch_sockets() -> None:
    """Take the running job's watched sockets out of its thread's set: a job given `watch` calls this
    before it closes them (a socket closed while in an epoll set may stay there, and wake it, for as long
    as a duplicate of it is open elsewhere). Does nothing outside a kept thread."""
    worker = getattr(_current, "worker", None)
    if worker is not None:
        worker.unwatch()


class _Worker:
    """A kept relay thread's way of being handed a job: a slot, and what it waits on between jobs.

    Where `select.epoll` exists the thread waits on its own epoll set, to
    which `give` adds the job's sockets (`watch`): the thread then wakes only
    when one of them stirs (the answer's head arrives, the caller leaves, the
    relay is stopped), with no wake-up of its own in between. Elsewhere, and
    for a job without `watch`, a byte on the thread's pipe wakes it at once.
    """

    __slots__ = ("_closed", "_epoll", "_lock", "_poll", "_wake_r", "_wake_w", "job", "watched")

    def __init__(self) -> None:
        """A slot with no job; the pipe and the set the thread waits on."""
        self.job: tuple[Callable[..., None], tuple[object, ...]] | None = None
        self.watched: list[int] = []
        self._lock = threading.Lock()
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._poll = select.poll() if self._epoll is None else None
        if self._epoll is not None:
            self._epoll.register(self._wake_r, _POLLIN)
        else:
            self._poll.register(self._wake_r, _POLLIN)  # type: ignore[union-attr]

    def give(self, job: Callable[..., None], args: tuple[object, ...], watch: Watch) -> Callable[[], None]:
        """Hand the thread `job(*args)`: run once one of `watch` (fd, events) stirs, at once without;
        returns what starts it now if it has not started (`nudge`)."""
        given = self.job = (job, args)  # set before anything can wake the thread
        if watch and self._epoll is not None:
            try:
                for fd, events in watch:
                    self._epoll.register(fd, events)
                    self.watched.append(fd)
                return functools.partial(self.nudge, given)
            except OSError:  # a socket that cannot be watched: the thread is woken now instead
                pass
        os.write(self._wake_w, b"x")
        return functools.partial(self.nudge, given)

    def nudge(self, given: tuple[Callable[..., None], tuple[object, ...]]) -> None:
        """Wake the thread if job `given` is still waiting to start (else nothing)."""
        with self._lock:
            if self.job is given and not self._closed:
                os.write(self._wake_w, b"x")

    def wait(self, timeout_s: float | None) -> bool:
        """Wait until a job may be run or `timeout_s` passed (None: no limit); False when nothing stirred."""
        if self._epoll is not None:
            events = self._epoll.poll(-1 if timeout_s is None else timeout_s)
        else:
            events = self._poll.poll(None if timeout_s is None else timeout_s * 1000.0)  # type: ignore[union-attr]
        if any(fd == self._wake_r for fd, _ in events):
            os.read(self._wake_r, 64)
        return bool(events)

    def unwatch(self) -> None:
        """Take the job's sockets out of the set (`unwatch_sockets`; again once the job returned)."""
        watched, self.watched = self.watched, []
        for fd in watched:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)  # type: ignore[union-attr]

    def close(self) -> None:
        """The thread ends: its pipe and set are closed."""
        self.unwatch()
        with self._lock:
            self._closed = True
        if self._epoll is not None:
            self._epoll.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class Workers:
    """Threads that relay streams, one at a time each, kept waiting between streams.

    `run(job, *args, watch=...)` hands the job to a waiting thread, else to
    a new one; with `watch` the thread starts it only once one of those
    sockets stirs (`_Worker`). A thread that finished a job waits for the
    next one unless `keep` are waiting already; one that waited `idle_s` for
    nothing ends.
    """

    def __init__(self, keep: int, idle_s: float) -> None:
        self._keep = keep
        self._idle_s = idle_s
        self._lock = threading.Lock()
        self._waiting: list[_Worker] = []

    def run(self, job: Callable[..., None], *args: object, watch: Watch = ()) -> Callable[[], None]:
        """Run `job(*args)` in a relay thread, once one of `watch` (fd, events) stirs if given (the job
        must then wait for its sockets itself too: it may start sooner). Returns what starts the job now,
        if it has not started yet. Raises only what starting a thread raises."""
        with self._lock:
            worker = self._waiting.pop() if self._waiting else None
        if worker is None:
            worker = _Worker()
            try:
                threading.Thread(target=self._serve, args=(worker,), name="obs-proxy-stream",
                                 daemon=True).start()  # fmt: skip
            except BaseException:
                worker.close()
                raise
        return worker.give(job, args, watch)

    def _serve(self, worker: _Worker) -> None:
        _current.worker = worker
        while True:
            pending = worker.job
            if pending is None or worker.watched:
                stirred = worker.wait(self._idle_s if pending is None else None)
                if worker.job is None:
                    if not stirred:
                        with self._lock:
                            if worker in self._waiting:  # else a job is on its way: take it
                                self._waiting.remove(worker)
                                worker.close()
                                return
                    continue
                if pending is None and not stirred:
                    continue  # handed over as the wait ran out: wait on its sockets
            (job, args), worker.job = worker.job, None
            try:
                job(*args)  # ThreadPump._main: reports its outcome to the loop itself
            except Exception:
                _log.exception("obs.proxy: a stream's relay thread failed")
            worker.unwatch()  # watched while the job ran (taken out then, not on the first token's path)
            with self._lock:
                if len(self._waiting) >= self._keep:
                    worker.close()
                    return
                self._waiting.append(worker)
