"""The SQLite file's layout, its version, and how a file is opened (or refused) safely.

Version 2 (`PRAGMA user_version = 2`) keeps:

- `traces`: one row per trace (indexed columns, the trace's own fields and
  metadata as JSON in `data`, and what the dashboard lists: service,
  conversation, model, span and request counts, tokens, cost, previews);
- `spans`: one row per span (ids, name, kind, times, status, service, model,
  conversation, tokens, cost, time to first token, latency, cache hit, the
  attributes and events as JSON);
- `logs` (`obs.logs.LogEntry`) and `alert_transitions`
  (`obs.alerting.AlertTransition`);
- what is kept up to date as rows come and go, so the dashboard's queries
  never read every row: the rollups of `obs.storage._rollup_sql` (request
  sums per minute and per hour, hourly latency and TTFT histograms),
  `sessions` (one row per conversation) and `counters` (row counts). Triggers
  take removed rows out; inserted rows are added by triggers too, except the
  request sums, which obs's writer adds once per batch (see
  `obs.storage._rollup_sql`);
- `meta`: settings kept in the file (retention).

Times are epoch milliseconds, except `alert_transitions.at` (epoch seconds,
as `AlertTransition.at`). Version 1 had the same tables, with a trigger that
added each request span to the rollups on its own; version 0 is the
one-table layout of earlier releases (`traces` with the whole trace as JSON
in `data`). `obs.storage._migrate` brings either to version 2 in one
transaction. A file of a newer version, a damaged file or one that is no
database is refused and never written to.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sqlite3
from pathlib import Path

from obs.storage._rollup_sql import ROLLUP_SCHEMA, WRITER_SUMS

__all__ = ["MEMORY", "REDEFINED", "SCHEMA_VERSION", "check_ours", "connect", "open_error", "refusal"]

SCHEMA_VERSION = 2
# The triggers each version defines anew: a file of an older version has them dropped, then created.
REDEFINED = {2: ("request_added",)}
MEMORY = ":memory:"

# Primary SQLite result codes (the low byte of an extended code) and what to tell the user.
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 10, 11, 13, 14, 26
_SQLITE_READONLY_DIRECTORY = 1544

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (name, n)
VALUES ('traces', 0), ('requests', 0), ('logs', 0), ('{WRITER_SUMS}', 0);

CREATE TABLE IF NOT EXISTS traces (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    start_time REAL NOT NULL,
    end_time REAL,
    duration REAL,
    status TEXT NOT NULL,
    data TEXT NOT NULL,
    service TEXT,
    conversation_id TEXT,
    model TEXT,
    span_count INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_units INTEGER NOT NULL DEFAULT 0,
    input_preview TEXT,
    output_preview TEXT
);
CREATE INDEX IF NOT EXISTS traces_start_time ON traces (start_time);
CREATE INDEX IF NOT EXISTS traces_duration ON traces (duration);
CREATE INDEX IF NOT EXISTS traces_status ON traces (status, start_time);
CREATE INDEX IF NOT EXISTS traces_name ON traces (name);
CREATE INDEX IF NOT EXISTS traces_service ON traces (service, start_time);
CREATE INDEX IF NOT EXISTS traces_model ON traces (model, start_time);
CREATE INDEX IF NOT EXISTS traces_conversation ON traces (conversation_id, start_time);

CREATE TABLE IF NOT EXISTS spans (
    seq INTEGER PRIMARY KEY,
    trace_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    span_id TEXT NOT NULL,
    parent_id TEXT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_time REAL NOT NULL,
    end_time REAL,
    duration REAL,
    status TEXT NOT NULL,
    service TEXT,
    model TEXT,
    conversation_id TEXT,
    request INTEGER NOT NULL DEFAULT 0,
    error INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cost REAL,
    cost_units INTEGER,
    ttft_ms REAL,
    latency_ms REAL,
    server_ms REAL,
    cache_hit INTEGER NOT NULL DEFAULT 0,
    minute INTEGER NOT NULL,
    hour INTEGER NOT NULL,
    latency_bin INTEGER,
    ttft_bin INTEGER,
    attributes TEXT NOT NULL,
    events TEXT NOT NULL,
    exact TEXT,
    UNIQUE (trace_id, position)
);
CREATE INDEX IF NOT EXISTS spans_conversation ON spans (conversation_id, start_time);
CREATE INDEX IF NOT EXISTS spans_request_start ON spans (request, start_time, minute, latency_ms, ttft_ms);
CREATE INDEX IF NOT EXISTS spans_request_latency ON spans (request, latency_ms, start_time, service, model);

CREATE TABLE IF NOT EXISTS sessions (
    conversation_id TEXT PRIMARY KEY,
    turns INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_units INTEGER NOT NULL,
    latency_sum REAL NOT NULL,
    first_start REAL NOT NULL,
    last_activity REAL NOT NULL,
    first_message TEXT,
    first_message_at REAL,
    service TEXT,
    model TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_last_activity ON sessions (last_activity);

CREATE TABLE IF NOT EXISTS logs (
    seq INTEGER PRIMARY KEY,
    timestamp REAL NOT NULL,
    level TEXT NOT NULL,
    rank INTEGER NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL,
    trace_id TEXT,
    span_id TEXT,
    service TEXT
);
CREATE INDEX IF NOT EXISTS logs_timestamp ON logs (timestamp);
CREATE INDEX IF NOT EXISTS logs_trace ON logs (trace_id);

CREATE TABLE IF NOT EXISTS alert_transitions (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    rule TEXT NOT NULL,
    from_status TEXT NOT NULL,
    to_status TEXT NOT NULL,
    value REAL,
    threshold REAL NOT NULL,
    metric TEXT NOT NULL,
    op TEXT NOT NULL,
    request_count INTEGER NOT NULL,
    service TEXT
);
CREATE INDEX IF NOT EXISTS alert_transitions_at ON alert_transitions (at);

CREATE TRIGGER IF NOT EXISTS traces_added AFTER INSERT ON traces BEGIN
    UPDATE counters SET n = n + 1 WHERE name = 'traces';
END;
CREATE TRIGGER IF NOT EXISTS traces_removed AFTER DELETE ON traces BEGIN
    UPDATE counters SET n = n - 1 WHERE name = 'traces';
END;
CREATE TRIGGER IF NOT EXISTS logs_added AFTER INSERT ON logs BEGIN
    UPDATE counters SET n = n + 1 WHERE name = 'logs';
END;
CREATE TRIGGER IF NOT EXISTS logs_removed AFTER DELETE ON logs BEGIN
    UPDATE counters SET n = n - 1 WHERE name = 'logs';
END;

CREATE TRIGGER IF NOT EXISTS session_turn_added AFTER INSERT ON traces
WHEN NEW.conversation_id IS NOT NULL BEGIN
    INSERT INTO sessions (conversation_id, turns, requests, errors, input_tokens, output_tokens, cost_units,
                          latency_sum, first_start, last_activity, first_message, first_message_at, service,
                          model)
    VALUES (NEW.conversation_id, 1, NEW.requests, NEW.status = 'error', NEW.input_tokens, NEW.output_tokens,
            NEW.cost_units, COALESCE(NEW.duration, 0), NEW.start_time, COALESCE(NEW.end_time, NEW.start_time),
            NEW.input_preview, CASE WHEN NEW.input_preview IS NULL THEN NULL ELSE NEW.start_time END,
            NEW.service, NEW.model)
    ON CONFLICT (conversation_id) DO UPDATE SET
        turns = turns + 1,
        requests = requests + excluded.requests,
        errors = errors + excluded.errors,
        input_tokens = input_tokens + excluded.input_tokens,
        output_tokens = output_tokens + excluded.output_tokens,
        cost_units = cost_units + excluded.cost_units,
        latency_sum = latency_sum + excluded.latency_sum,
        first_message = CASE
            WHEN excluded.first_message IS NOT NULL
                 AND (first_message IS NULL OR excluded.first_message_at < first_message_at)
            THEN excluded.first_message ELSE first_message END,
        first_message_at = CASE
            WHEN excluded.first_message IS NOT NULL
                 AND (first_message IS NULL OR excluded.first_message_at < first_message_at)
            THEN excluded.first_message_at ELSE first_message_at END,
        first_start = MIN(first_start, excluded.first_start),
        last_activity = MAX(last_activity, excluded.last_activity),
        service = COALESCE(excluded.service, service),
        model = COALESCE(excluded.model, model);
END;
CREATE TRIGGER IF NOT EXISTS session_turn_removed AFTER DELETE ON traces
WHEN OLD.conversation_id IS NOT NULL BEGIN
    UPDATE sessions SET
        turns = turns - 1,
        requests = requests - OLD.requests,
        errors = errors - (OLD.status = 'error'),
        input_tokens = input_tokens - OLD.input_tokens,
        output_tokens = output_tokens - OLD.output_tokens,
        cost_units = cost_units - OLD.cost_units,
        latency_sum = latency_sum - COALESCE(OLD.duration, 0)
    WHERE conversation_id = OLD.conversation_id;
    DELETE FROM sessions WHERE conversation_id = OLD.conversation_id AND turns <= 0;
END;

{ROLLUP_SCHEMA}
"""


_OURS = frozenset(
    {"meta", "counters", "traces", "spans", "rollup", "rollup_hour", "hour_bins", "hour_bins_all", "sessions",
     "logs", "alert_transitions", "sqlite_sequence", "sqlite_stat1", "sqlite_stat4"}
)  # fmt: skip


def check_ours(conn: sqlite3.Connection, path: Path, owner: str) -> set[str]:
    """The tables of the database; ValueError (naming the file) if any is not obs's. Reads only."""
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    foreign = sorted(tables - _OURS)
    if foreign:
        raise ValueError(
            f"{owner}: {str(path)!r} is a SQLite database of another program (tables: {', '.join(foreign)}); "
            "it is left untouched: choose another path"
        )
    return tables


def _quoted(path: Path) -> str:
    return shlex.quote(str(path))


def refusal(
    path: Path, extended: int, detail: str, timeout_s: float, owner: str = "SqliteTraceStore"
) -> ValueError:
    """A ValueError naming the file, the cause behind SQLite code `extended`, and what to do about it."""
    code = extended & 0xFF
    directory = path.parent
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        advice = (f"is locked by another connection or program (still locked after waiting "
                  f"timeout_s={timeout_s:g} s): close what holds it, or pass a larger timeout_s")  # fmt: skip
    elif extended == _SQLITE_READONLY_DIRECTORY or (
        code in (_SQLITE_READONLY, _SQLITE_CANTOPEN) and not os.access(directory, os.W_OK)
    ):
        advice = (f"is in directory {str(directory)!r}, which is read-only: SQLite creates its "
                  "journal files (-wal, -shm) beside the database; choose a writable directory "
                  "or make this one writable")  # fmt: skip
    elif code == _SQLITE_READONLY:
        advice = "is read-only: make it writable (chmod u+w) or choose another path"
    elif code == _SQLITE_PERM or (
        code == _SQLITE_CANTOPEN and path.exists() and not os.access(path, os.R_OK)
    ):
        advice = "cannot be read (permission denied): fix its permissions or choose another path"
    elif code == _SQLITE_NOTADB:
        aside = _quoted(path.with_name(path.name + ".bad"))
        advice = ("is not a SQLite database: choose another path or delete it; it is left untouched "
                  f"(to keep it, move it aside: mv {_quoted(path)} {aside})")  # fmt: skip
    elif code == _SQLITE_CORRUPT:
        advice = ("is damaged (a corrupt SQLite database): move it aside to keep it for inspection "
                  f"(mv {_quoted(path)} {_quoted(path.with_name(path.name + '.corrupt'))}; its -wal and "
                  "-shm files too, if any), or choose another path; it is left untouched")  # fmt: skip
    elif code == _SQLITE_FULL:
        advice = "cannot grow: the disk is full; free some space or choose another path"
    elif code == _SQLITE_IOERR:
        advice = "cannot be read or written (an I/O error): check the disk, or choose another path"
    else:
        advice = "cannot be opened: check the path and its permissions, or choose another path"
    return ValueError(f"{owner}: {str(path)!r} {advice} ({detail})")


def open_error(
    path: Path, exc: sqlite3.Error, timeout_s: float, owner: str = "SqliteTraceStore"
) -> ValueError:
    """A ValueError that names the cause of `exc` for the file at `path`, with what to do about it."""
    return refusal(path, getattr(exc, "sqlite_errorcode", None) or 0, str(exc), timeout_s, owner)


def _check_path(path: Path, owner: str) -> None:
    directory = path.parent
    if not directory.is_dir():
        raise ValueError(
            f"{owner}: path {str(path)!r} is in directory {str(directory)!r}, "
            "which does not exist: create the directory or choose another path"
        )
    if path.is_dir():
        raise ValueError(f"{owner}: path {str(path)!r} is a directory: give a file path")


def _create_private(path: Path) -> None:
    """Create `path` empty with permissions 0600 unless it exists (an empty file is an empty database).

    Traces hold prompts and answers: only the owner may read them. SQLite gives
    its -wal and -shm files the database file's permissions.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # let SQLite meet the same problem and say what it is
    os.close(fd)


def connect(
    path: str | os.PathLike[str], timeout_s: float, owner: str = "SqliteTraceStore"
) -> sqlite3.Connection:
    """Open one connection to the database at `path` (":memory:" for a private in-memory one).

    Checks that the directory exists and the path is no directory, creates a
    missing file with permissions 0600, and sets the busy timeout, WAL journal
    and `synchronous=NORMAL` (a committed transaction survives the process
    being killed; a power cut may lose the last ones, never the file).
    Raises ValueError naming the file and the cause when it cannot be opened.
    The schema is not touched here (see `obs.storage._migrate.prepare`).
    """
    memory = str(path) == MEMORY
    where = Path(str(path))
    if not memory:
        _check_path(where, owner)
        _create_private(where)
    try:
        # isolation_level=None: transactions are begun and ended explicitly.
        conn = sqlite3.connect(
            MEMORY if memory else where, timeout=float(timeout_s), check_same_thread=False,
            isolation_level=None,
        )
    except sqlite3.Error as exc:
        raise open_error(where, exc, timeout_s, owner) from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        # Read before anything is written: the header (no database: NOTADB), the schema (damaged:
        # CORRUPT) and the version, so a file that cannot be used is refused untouched.
        check_ours(conn, where, owner)
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"{owner}: {str(where)!r} was written by a newer version of obs (schema version "
                f"{version}; this version reads up to {SCHEMA_VERSION}): upgrade obs to open it, or "
                "choose another path; the file is left untouched"
            )
        if not memory:
            # WAL (set in the header: the first write to the file): readers never wait for the
            # writer, and a crash leaves the file consistent.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
        raise open_error(where, exc, timeout_s, owner) from exc
    except ValueError:
        conn.close()
        raise
    return conn
