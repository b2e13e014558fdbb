"""The threads that relay streams are kept between streams (obs.proxy._pump._Workers).

Starting a thread per stream cost CPU while the model computed the first
token; a kept thread only wakes up. These tests watch real threads: a stream
after a stream runs on the same thread, streams side by side each get one,
no more than `keep` wait afterwards, waiting ends after `idle_s`, and a job
that fails leaves its thread usable.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from obs.proxy import _pump
from obs.proxy._pump import ThreadPump, _Workers
from tests.llm.servers import good, serve, stream_lines
from tests.proxy.support import STREAM, recording_proxy, wait_until


def _alive(ident: int) -> bool:
    return any(t.ident == ident and t.is_alive() for t in threading.enumerate())


def _ran(workers: _Workers, job: Callable[[], None] | None = None) -> int:
    """Run `job` on `workers`, wait for it, and return the ident of the thread that ran it."""
    done = threading.Event()
    idents: list[int] = []

    def recorded() -> None:
        idents.append(threading.get_ident())
        try:
            if job is not None:
                job()
        finally:
            done.set()

    workers.run(recorded)
    assert done.wait(10.0)
    return idents[0]


def test_one_job_after_another_runs_on_the_same_kept_thread() -> None:
    workers = _Workers(keep=2, idle_s=30.0)
    first = _ran(workers)
    assert wait_until(lambda: _alive(first))
    assert [_ran(workers) for _ in range(3)] == [first] * 3
    assert [t.name for t in threading.enumerate() if t.ident == first] == ["obs-proxy-stream"]


def test_jobs_side_by_side_get_a_thread_each_and_at_most_keep_wait_afterwards() -> None:
    workers = _Workers(keep=2, idle_s=30.0)
    go = threading.Event()
    started = threading.Barrier(4)
    idents: list[int] = []
    finished = threading.Semaphore(0)

    def job() -> None:
        idents.append(threading.get_ident())
        started.wait(10.0)  # all three run at once
        go.wait(10.0)
        finished.release()

    for _ in range(3):
        workers.run(job)
    started.wait(10.0)
    assert len(set(idents)) == 3
    go.set()
    for _ in range(3):
        assert finished.acquire(timeout=10.0)
    # Two are kept; the third ends once its job is done.
    assert wait_until(lambda: sum(_alive(i) for i in idents) == 2)
    assert _ran(workers) in idents and _ran(workers) in idents


def test_a_kept_thread_ends_after_waiting_idle_s_and_a_new_one_takes_the_next_job() -> None:
    workers = _Workers(keep=2, idle_s=0.2)
    first = _ran(workers)
    assert wait_until(lambda: not _alive(first), 10.0)
    second = _ran(workers)  # the next job still runs, on a new thread, which ends in turn
    assert wait_until(lambda: not _alive(second), 10.0)


def test_a_job_that_fails_is_logged_and_leaves_its_thread_usable(caplog: pytest.LogCaptureFixture) -> None:
    workers = _Workers(keep=1, idle_s=30.0)

    def broken() -> None:
        raise RuntimeError("job broke")

    first = _ran(workers, broken)
    assert wait_until(lambda: "a stream's relay thread failed" in caplog.text)
    assert _ran(workers) == first


def test_streams_through_the_proxy_one_after_another_are_relayed_by_one_thread(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pump, "_WORKERS", _Workers(keep=2, idle_s=30.0))
    relayed_by: list[int] = []
    relay = ThreadPump._relay

    def noted(self: ThreadPump) -> None:
        relayed_by.append(threading.get_ident())
        relay(self)

    monkeypatch.setattr(ThreadPump, "_relay", noted)
    expected = [line for line in stream_lines() if line]
    with serve(good) as upstream, recording_proxy(upstream.url, db) as proxy, \
            httpx.Client(timeout=30) as client:  # fmt: skip
        for _ in range(4):
            answer = client.post(proxy.url + "/v1/chat/completions", content=json.dumps(STREAM).encode())
            assert [line for line in answer.text.split("\n") if line] == expected
    assert len(relayed_by) == 4 and len(set(relayed_by)) == 1

