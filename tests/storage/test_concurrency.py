"""Many writers on one file, and a writer killed mid-write: real processes, real threads, one SQLite file.

- A process writing traces in a loop (single adds and batches of five) is
  killed with SIGKILL: on reopen every trace whose write had returned is
  there, whole; no trace is there in part; `PRAGMA integrity_check` is ok;
  and the rollup still agrees with the spans.
- Four threads and two processes add 5,000 traces in total: the file holds
  exactly 5,000, each once and whole.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from obs.storage.queries import DashboardQueries
from obs.storage.sqlite import SqliteTraceStore
from tests.storage._writer import numbered_trace

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _writer(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.storage._writer", *args], cwd=ROOT, env=ENV, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def _consistent(store: SqliteTraceStore) -> None:
    """The rollup, the counters and the sessions agree with the rows they summarize."""
    conn = sqlite3.connect(store.path)
    try:
        requests = conn.execute("SELECT COUNT(*) FROM spans WHERE request = 1").fetchone()[0]
        traces = conn.execute("SELECT COUNT(*) FROM traces").fetchone()[0]
        turns = conn.execute("SELECT COUNT(*) FROM traces WHERE conversation_id IS NOT NULL").fetchone()[0]
        session_turns = conn.execute("SELECT COALESCE(SUM(turns), 0) FROM sessions").fetchone()[0]
    finally:
        conn.close()
    assert len(store) == traces
    assert DashboardQueries(store).tiles().request_count == requests
    assert sum(bucket.requests for bucket in DashboardQueries(store).series(3600)) == requests
    assert session_turns == turns


def test_a_writer_killed_mid_loop_loses_no_returned_write_and_leaves_no_half_trace(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    SqliteTraceStore(path).close()
    child = _writer("loop", str(path))
    assert child.stdout is not None
    written: list[int] = []
    try:
        while len(written) < 400:
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else "the writer died"
            written.append(int(line))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    written += [int(line) for line in child.stdout.read().split()]  # printed before the kill landed
    assert child.returncode == -signal.SIGKILL
    child.stdout.close()
    if child.stderr is not None:
        child.stderr.close()
    assert _integrity(path) == "ok"
    with SqliteTraceStore(path) as store:
        stored = {trace.id: trace for trace in store.all()}
        assert store.unreadable == 0
        for i in written:
            assert stored.get(numbered_trace(i).id) == numbered_trace(i), i
        for trace in stored.values():  # whatever else made it in (a batch under way) is whole too
            assert trace == numbered_trace(int(trace.id, 16) - 1)
        _consistent(store)
    assert _integrity(path) == "ok"


def test_four_threads_and_two_processes_add_exactly_5000_traces(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    shared = SqliteTraceStore(path, timeout_s=30.0)  # two threads share one store, two have their own
    children = [_writer("count", str(path), str(first), "1000") for first in (0, 1000)]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        go = threading.Barrier(4 + 1)
        errors: list[BaseException] = []

        def thread_writer(first: int, own: bool) -> None:
            store = SqliteTraceStore(path, timeout_s=30.0) if own else shared
            try:
                go.wait()
                for start in range(first, first + 750, 10):
                    if start % 20:
                        for i in range(start, start + 10):
                            store.add(numbered_trace(i))
                    else:
                        assert store.add_many([numbered_trace(i) for i in range(start, start + 10)]) == 10
                assert store.write_errors == 0
            except BaseException as exc:
                errors.append(exc)
            finally:
                if own:
                    store.close()

        threads = [threading.Thread(target=thread_writer, args=(2000 + k * 750, k >= 2)) for k in range(4)]
        for thread in threads:
            thread.start()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        go.wait()
        for thread in threads:
            thread.join(timeout=300)
        for child in children:
            out, err = child.communicate(timeout=300)
            assert child.returncode == 0 and out.strip() == "done", err
        assert errors == []
        assert len(shared) == 5000
        stored = shared.all()
        assert sorted(int(t.id, 16) - 1 for t in stored) == list(range(5000))
        assert all(trace == numbered_trace(int(trace.id, 16) - 1) for trace in stored)
        _consistent(shared)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        shared.close()
    assert _integrity(path) == "ok"
