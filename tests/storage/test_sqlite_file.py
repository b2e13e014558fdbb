"""The file itself: its version, the migrations from older layouts, and files that are refused.

A file written by the one-table store of earlier releases (built here with
that store's exact schema and rows) opens, is migrated in place and keeps
every trace in its order. A file of version 1 (whose trigger added each
request span to the rollups on its own) keeps its rows and sums, gets the
trigger of version 2, and its sums stay exact as both kinds of writer go on.
A file of a newer schema version, a damaged file, a file that is no database
and another program's database are refused with a message that names the
file and what to do, and are left byte for byte as they were. A new file is
private to its owner (0600).
"""

from __future__ import annotations

import json
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from obs.storage._rollup_sql import WRITER_SUMS
from obs.storage._rows import storable
from obs.storage.queries import DashboardQueries
from obs.storage.schema import SCHEMA_VERSION
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.traces import Trace
from tests.storage._rollups import assert_sums_exact, write_as_the_previous_release
from tests.storage._traces import random_traces

# The schema of the one-table store (version 0), as it created its file.
_V0_SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    start_time REAL NOT NULL,
    end_time REAL,
    duration REAL,
    status TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS traces_start_time ON traces (start_time);
CREATE INDEX IF NOT EXISTS traces_duration ON traces (duration);
CREATE INDEX IF NOT EXISTS traces_status ON traces (status);
CREATE INDEX IF NOT EXISTS traces_name ON traces (name);
"""


def _write_v0(path: Path, traces: list[Trace], extra_rows: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
    """A file as the one-table store wrote it: WAL, one JSON row per trace, user_version 0."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(_V0_SCHEMA)
    conn.execute("PRAGMA journal_mode=WAL")
    for trace in traces:
        data, _ = storable(trace)
        conn.execute(
            "INSERT INTO traces (id, name, start_time, end_time, duration, status, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (trace.id, trace.name, trace.start_time, trace.end_time, trace.duration, trace.status,
             json.dumps(data, separators=(",", ":"))),
        )  # fmt: skip
    for trace_id, data in extra_rows:
        conn.execute(
            "INSERT INTO traces (id, name, start_time, status, data) VALUES (?, 'x', 1.0, 'error', ?)",
            (trace_id, data),
        )
    conn.close()


# What version 2 added to the trigger that sums inserted request spans: standing aside for a writer
# that sums a batch itself.
_V2_GUARD = f" AND NOT EXISTS (SELECT 1 FROM counters WHERE name = '{WRITER_SUMS}' AND n <> 0)"


def _write_v1(path: Path, traces: list[Trace]) -> None:
    """A file as version 1 left it: version 2's layout without the guard on `request_added` and without
    the `counters` row it reads, `user_version` 1, rows written one INSERT at a time as that release did.
    """
    SqliteTraceStore(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    (trigger,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'request_added'").fetchone()
    assert _V2_GUARD in trigger
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("DROP TRIGGER request_added")
    conn.execute(trigger.replace(_V2_GUARD, ""))
    conn.execute("DELETE FROM counters WHERE name = ?", (WRITER_SUMS,))
    conn.execute("PRAGMA user_version = 1")
    conn.execute("COMMIT")
    conn.close()
    write_as_the_previous_release(path, traces)


def _sums(path: Path) -> list[list[tuple[object, ...]]]:
    """The rows of every table that sums other rows."""
    conn = sqlite3.connect(path)
    try:
        return [sorted(conn.execute(f"SELECT * FROM {table}").fetchall())
                for table in ("rollup", "rollup_hour", "hour_bins", "hour_bins_all", "sessions")]  # fmt: skip
    finally:
        conn.close()


def _version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_a_new_file_is_private_and_of_the_current_version(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    with SqliteTraceStore(path) as store:
        assert store.opened_as == "created"
        store.add(random_traces(1)[0])
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes["obs.db"] == 0o600
    assert all(mode == 0o600 for mode in modes.values()), modes  # -wal and -shm too
    assert _version(path) == SCHEMA_VERSION == 2
    with SqliteTraceStore(path) as again:
        assert again.opened_as == "opened"


def test_a_file_of_the_one_table_layout_is_migrated_and_keeps_its_traces(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    traces = random_traces(60)
    _write_v0(path, traces, [("b" * 32, "{not json")])
    assert _version(path) == 0
    with SqliteTraceStore(path) as store:
        assert store.opened_as == "migrated"
        assert store.all() == traces  # every trace, whole, in its old insertion order
        assert len(store) == 61 and store.unreadable == 1  # the bad row is carried over, still skipped
        tiles = DashboardQueries(store).tiles()
        assert tiles.request_count == sum(
            1 for t in traces for s in t.spans if "gen_ai.operation.name" in s.attributes
        )
        newest = DashboardQueries(store).traces(limit=1).items[0]
        assert newest.trace_id == max(traces, key=lambda t: t.start_time).id
        store.add(random_traces(61)[60])
        assert store.all()[-1].id == random_traces(61)[60].id
    assert _version(path) == SCHEMA_VERSION
    with SqliteTraceStore(path) as reopened:
        assert reopened.opened_as == "opened" and len(reopened) == 62


def test_a_file_of_version_1_is_migrated_in_place_and_its_sums_stay_exact(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    traces = random_traces(200)
    _write_v1(path, traces[:150])
    assert _version(path) == 1
    before = _sums(path)
    with SqliteTraceStore(path) as store:
        assert store.opened_as == "migrated"
        assert store.all() == traces[:150]
        with store.database().read() as conn:
            (trigger,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'request_added'").fetchone()
            assert _V2_GUARD.strip() in trigger
            assert_sums_exact(conn)  # the writer_sums row is there, at 0
        assert _sums(path) == before  # the rows and the sums were left as they were
        store.add_many(traces[150:])  # summed by this writer, per batch
        write_as_the_previous_release(path, traces[:20])  # a version-1 process still running: the trigger
        assert len(store) == 200 and DashboardQueries(store).tiles().request_count == sum(
            1 for t in traces for s in t.spans if "gen_ai.operation.name" in s.attributes
        )
    assert _version(path) == SCHEMA_VERSION
    with SqliteTraceStore(path) as reopened:
        assert reopened.opened_as == "opened" and len(reopened) == 200
        with reopened.database().read() as conn:
            assert_sums_exact(conn)


def test_the_wal_is_copied_into_the_file_by_a_thread_of_its_own(tmp_path: Path) -> None:
    """The writer leaves checkpoints (and their fsyncs) to a thread; what it writes still reaches the file."""
    path = tmp_path / "obs.db"

    def checkpointers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "obs-sqlite-checkpoint"]

    before = len(checkpointers())
    traces = random_traces(1200)
    with SqliteTraceStore(path) as store:
        empty = path.stat().st_size
        for at in range(0, 1200, 300):
            store.add_many(traces[at : at + 300])
        assert len(checkpointers()) == before + 1
        deadline = time.monotonic() + 30
        while path.stat().st_size <= empty:  # pages copied from the WAL while the store is open
            assert time.monotonic() < deadline, "the WAL was never copied into the file"
            time.sleep(0.01)
        assert len(store) == 1200
    assert len(checkpointers()) == before  # ended with the store
    assert not Path(f"{path}-wal").exists()  # the last connection to close copied the rest and removed it
    with SqliteTraceStore(path) as reopened:
        assert reopened.all() == traces


def test_a_file_of_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with SqliteTraceStore(path) as store:
        store.add(random_traces(1)[0])
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA user_version = 7")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(ValueError) as caught:
        SqliteTraceStore(path)
    message = str(caught.value)
    assert str(path) in message and "newer version of obs" in message and "schema version 7" in message
    assert "upgrade obs" in message and "left untouched" in message
    assert path.read_bytes() == before


def test_a_damaged_file_is_refused_untouched_with_how_to_move_it_aside(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    with SqliteTraceStore(path) as store:
        store.add_many(random_traces(20))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    raw = bytearray(path.read_bytes())
    raw[100:4096] = b"\xff" * (4096 - 100)  # page 1 after the header: the schema table
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError) as caught:
        SqliteTraceStore(path)
    message = str(caught.value)
    assert str(path) in message and "is damaged" in message
    assert f"mv {path} {path}.corrupt" in message
    assert path.read_bytes() == bytes(raw)


def test_a_file_that_is_no_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    text = "plain text, not a database\n" * 100
    path.write_text(text)
    with pytest.raises(ValueError) as caught:
        SqliteTraceStore(path)
    message = str(caught.value)
    assert "is not a SQLite database" in message and f"mv {path} {path}.bad" in message
    assert path.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]  # no -wal or -shm left behind


def test_another_programs_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('ann')")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"is a SQLite database of another program \(tables: users\)"):
        SqliteTraceStore(path)
    assert path.read_bytes() == before


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is a directory: give a file path"):
        SqliteTraceStore(tmp_path)


def test_in_memory_stores_keep_nothing_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with SqliteTraceStore(":memory:") as store:
        store.add_many(random_traces(30))
        assert len(store) == 30 and store.file_info().size_bytes == 0
        assert DashboardQueries(store).tiles().request_count > 0
    assert list(tmp_path.iterdir()) == []


def test_two_stores_opening_an_old_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    traces = random_traces(30)
    _write_v0(path, traces)
    with SqliteTraceStore(path) as first, SqliteTraceStore(path) as second:
        assert sorted([first.opened_as, second.opened_as]) == ["migrated", "opened"]
        assert second.all() == traces and len(first) == 30
        assert second.file_info().oldest_trace_at == min(t.start_time for t in traces) / 1000.0
