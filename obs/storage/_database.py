"""One SQLite file and the connections to it: one writer behind a lock, a small pool of readers.

Writes go through `write()`: one `BEGIN IMMEDIATE` transaction on the
writer connection, committed whole or rolled back, so a batch of traces is
all there or absent, and other processes wait for it (busy timeout) rather
than fail. Reads go through `read()`: a connection from the pool, inside
one read transaction, so a query that runs several statements sees one
snapshot; in WAL mode readers never wait for the writer. An in-memory
database has one connection for both, behind the lock.

Copying the WAL back into the database file (a checkpoint, with its fsyncs)
is done by a thread of its own (`_Checkpointer`), not inside the COMMIT that
happens to take the WAL past SQLite's threshold: a writer never waits for the
disk to sync. The writer still checkpoints itself if the WAL grows far
beyond that (the thread kept from it by readers, or gone).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from obs.storage._migrate import prepare
from obs.storage.schema import MEMORY, connect, open_error, refusal

__all__ = ["Database"]

_log = logging.getLogger(__name__)
_SQLITE_READONLY = 8
_IDLE_READERS = 4
_CHECKPOINT_CHANGES = 1000  # rows written between two checkpoints (SQLite's own: 1000 WAL pages)
_CHECKPOINT_EVERY_S = 0.2  # at most this often
_WRITER_CHECKPOINT_PAGES = 10_000  # the writer checkpoints itself past this (40 MB of WAL)
# The writer's page cache (KiB). Each batch inserts into indexes keyed by random ids (trace and span
# ids, durations): with SQLite's default 2 MB, most of those pages are read from the OS again each time.
_WRITER_CACHE_KIB = 32_000


# sqlite3 binds None (NULL) only after looking for an adapter, and for a value without one it makes
# and throws away an AttributeError each time: about 0.4 µs per NULL, a dozen times per span row.
# An adapter that hands None back (`{}.get`, a C function: None for any key) makes that one dict
# lookup; None still binds as NULL.
if (type(None), sqlite3.PrepareProtocol) not in sqlite3.adapters:
    sqlite3.register_adapter(type(None), {}.get)


class _Checkpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on its own connection and thread each time it is woken.

    PASSIVE never waits for the writer or readers: it copies what it can, and
    the next wake-up copies the rest. The thread starts at the first wake-up
    and ends at `close()`. A failure is logged once and tried again later.
    """

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = False

    def wake(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="obs-sqlite-checkpoint", daemon=True)
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        try:
            while True:
                self._wake.wait()
                if self._closed.is_set():
                    return
                self._wake.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    if not self._failed:
                        _log.warning("obs: %s: copying the WAL into the file failed (tried again later): %s",
                                     self.path, exc)  # fmt: skip
                    self._failed = True
                if self._closed.wait(_CHECKPOINT_EVERY_S):
                    return
        finally:
            conn.close()

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(self.timeout_s, 1.0) + 5.0)


class Database:
    """The connections to one database file (or ":memory:"), opened and brought to the current schema."""

    def __init__(self, path: str | os.PathLike[str], timeout_s: float, owner: str) -> None:
        """Open `path`; ValueError naming the file and the cause if it cannot be used."""
        self.memory = str(path) == MEMORY
        self.path = Path(str(path))
        self.timeout_s = timeout_s
        self.owner = owner
        self.outcome = "opened"
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._readers: set[sqlite3.Connection] = set()
        self._writer: sqlite3.Connection | None = connect(path, timeout_s, owner)
        try:
            self.outcome = prepare(self._writer, self.path, owner)
            # An empty transaction proves the file can be written (a read-only file or one locked
            # by another program says so here, not at the first trace).
            self._writer.execute("BEGIN IMMEDIATE")
            self._writer.execute("COMMIT")
        except sqlite3.Error as exc:
            self._writer.close()
            self._writer = None
            raise open_error(self.path, exc, timeout_s, owner) from exc
        except BaseException:
            self._writer.close()
            self._writer = None
            raise
        if not self.memory and not os.access(self.path, os.W_OK):
            # A database already in WAL mode opens read-only without a word; every add would fail.
            self._writer.close()
            self._writer = None
            raise refusal(self.path, _SQLITE_READONLY, "the file is not writable", timeout_s, owner)
        self._checkpointer: _Checkpointer | None = None
        if not self.memory:
            self._writer.execute(f"PRAGMA wal_autocheckpoint = {_WRITER_CHECKPOINT_PAGES}")
            self._writer.execute(f"PRAGMA cache_size = -{_WRITER_CACHE_KIB}")
            self._checkpointer = _Checkpointer(self.path, timeout_s)
        self._changes = 0  # rows written since the checkpointer was last woken

    @property
    def closed(self) -> bool:
        """True once `close` was called."""
        return self._writer is None

    def _check_open(self) -> sqlite3.Connection:
        writer = self._writer
        if writer is None:
            raise ValueError(f"{self.owner}({str(self.path)!r}) is closed")
        return writer

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """The writer connection inside one `BEGIN IMMEDIATE` transaction: committed, or rolled back on error.

        Raises ValueError if closed; sqlite3.Error when the file cannot be written.
        """
        with self._lock:
            conn = self._check_open()
            before = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            self._changes += conn.total_changes - before
            if self._checkpointer is not None and self._changes >= _CHECKPOINT_CHANGES:
                self._changes = 0
                self._checkpointer.wake()

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection for queries, inside one read transaction (one snapshot); ValueError if closed."""
        if self.memory:
            with self._lock:
                conn = self._check_open()
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("COMMIT")
            return
        conn = self._reader()
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("COMMIT")
        finally:
            self._release(conn)

    def _reader(self) -> sqlite3.Connection:
        with self._lock:
            self._check_open()
            if self._idle:
                return self._idle.pop()
        conn = sqlite3.connect(
            self.path, timeout=self.timeout_s, check_same_thread=False, isolation_level=None
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
        conn.execute("PRAGMA query_only = 1")
        with self._lock:
            self._readers.add(conn)
        return conn

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if self._writer is not None and len(self._idle) < _IDLE_READERS:
                self._idle.append(conn)
                return
            self._readers.discard(conn)
        conn.close()

    def size_bytes(self) -> int:
        """The bytes of the database file and its -wal and -shm files (0 in memory)."""
        if self.memory:
            return 0
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(f"{self.path}{suffix}")
        return total

    def vacuum(self) -> None:
        """Rewrite the file without its free pages and empty the WAL (deleted text leaves the disk).

        Waits for other writers up to the busy timeout; raises sqlite3.Error if they hold on longer.
        """
        with self._lock:
            conn = self._check_open()
            conn.execute("VACUUM")
            if not self.memory:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Close every connection; later calls raise ValueError. Closing twice is fine."""
        with self._lock:
            writer, self._writer = self._writer, None
            readers = list(self._readers)
            self._readers.clear()
            self._idle.clear()
            checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.close()  # before the writer, so the last connection to close removes the WAL
        for conn in readers:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        if writer is not None:
            with contextlib.suppress(sqlite3.Error):
                writer.close()
