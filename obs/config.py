"""Process-wide setup in one line: traces and logs of this program go to the dashboard's SQLite file.

`configure(db=".obs/obs.db", service_name="my-app")` opens the file
(creating its directory, private to the owner), and builds the default
Tracer: a `BatchProcessor` writes finished traces into the file from a
background thread (a batch per second at most, one transaction each), and
its `LLMLogger` stores log entries there too, tagged with the service. Every
program that writes the same file shows up on the dashboard that reads it,
filterable by `service.name`. The file's retention settings are applied in
the background.

All process-wide state lives here (as structlog keeps its own in one module):
`default_tracer()` is what code that was given no tracer may use, None until
`configure` runs; `shutdown()` flushes and closes, and runs at interpreter
exit. `OBS_DB_PATH` names the file when `db` is not given (default
`.obs/obs.db`; `:memory:` for no file).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from obs.logs import LLMLogger
from obs.storage.exporter import SqliteExporter, SqliteLogSink
from obs.storage.retention import RetentionThread
from obs.storage.schema import MEMORY
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.processors import BatchProcessor, check_timeout
from obs.trace.tracer import Tracer

__all__ = [
    "DB_PATH_ENV",
    "DEFAULT_DB_PATH",
    "Configuration",
    "configure",
    "current",
    "db_path_from_env",
    "default_tracer",
    "shutdown",
]

DB_PATH_ENV = "OBS_DB_PATH"
DEFAULT_DB_PATH = ".obs/obs.db"

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_current: Configuration | None = None


@dataclass(frozen=True, slots=True)
class Configuration:
    """What `configure` set up: the tracer, the file's store, and what writes into it."""

    path: str
    service_name: str
    tracer: Tracer
    store: SqliteTraceStore
    processor: BatchProcessor
    logger: LLMLogger
    log_sink: SqliteLogSink
    retention: RetentionThread | None


def db_path_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The database path `OBS_DB_PATH` names (stripped), else `.obs/obs.db`; ":memory:" means no file."""
    env = os.environ if environ is None else environ
    return env.get(DB_PATH_ENV, "").strip() or DEFAULT_DB_PATH


def _make_directory(path: str) -> None:
    if path == MEMORY:
        return
    directory = Path(path).parent
    if directory.is_dir():
        return
    try:
        # Traces hold prompts and answers: a directory obs creates is the owner's alone.
        directory.mkdir(parents=True, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"configure: cannot create directory {str(directory)!r} for the database {path!r}: "
            f"{exc.strerror or exc}; choose another path (db=... or {DB_PATH_ENV})"
        ) from exc


def configure(
    db: str | os.PathLike[str] | None = None,
    service_name: str = "obs",
    *,
    schedule_delay_s: float = 1.0,
    retention_interval_s: float | None = 60.0,
    log_level: str = "info",
) -> Tracer:
    """Send this process's traces and logs to the SQLite file `db`; return the default Tracer.

    `db` defaults to `OBS_DB_PATH`, else `.obs/obs.db` (its directory is
    created); `service_name` is recorded on every trace (`service.name`) and
    log entry. Traces are written in batches at most `schedule_delay_s`
    seconds after they end; retention runs every `retention_interval_s`
    seconds (None: not from this process); log entries at `log_level` or above
    are kept. Calling it again replaces the earlier setup (which is flushed
    and closed). Raises ValueError naming a bad argument, or the file and
    what is wrong with it (see `SqliteTraceStore`).
    """
    global _current
    if not isinstance(service_name, str) or not service_name:
        raise ValueError(
            f"configure: service_name must be a non-empty string (e.g. 'my-app'), got {service_name!r}"
        )
    check_timeout("configure", "schedule_delay_s", schedule_delay_s)
    if retention_interval_s is not None:
        check_timeout("configure", "retention_interval_s", retention_interval_s)
    path = db_path_from_env() if db is None else os.fspath(db)
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"configure: db must be a file path (or ':memory:'), got {db!r}")
    logger = LLMLogger(min_level=log_level)  # checks log_level before anything is opened
    _make_directory(path)
    store = SqliteTraceStore(path)
    try:
        processor = BatchProcessor(SqliteExporter(store), schedule_delay_s=schedule_delay_s)
        sink = SqliteLogSink(store, service=service_name)
        logger = LLMLogger(min_level=log_level, stream=sink)
        tracer = Tracer(processors=[processor], logger=logger, service_name=service_name)
        retention = None if retention_interval_s is None else store.start_retention(retention_interval_s)
    except BaseException:
        store.close()
        raise
    setup = Configuration(path, service_name, tracer, store, processor, logger, sink, retention)
    with _lock:
        previous, _current = _current, setup
    if previous is not None:
        _close(previous, 10.0)
    return tracer


def default_tracer() -> Tracer | None:
    """The Tracer `configure` made, or None when this process was not configured.

    For code given no tracer: `tracer = tracer or default_tracer() or Tracer(...)`.
    """
    setup = _current
    return None if setup is None else setup.tracer


def current() -> Configuration | None:
    """Everything `configure` set up, or None."""
    return _current


def shutdown(timeout_s: float = 10.0) -> bool:
    """Flush the traces and logs waiting, stop the threads and close the file; True if done in time.

    Afterwards `default_tracer()` is None. Runs at interpreter exit too;
    calling it when nothing is configured returns True.
    """
    global _current
    timeout = check_timeout("shutdown", "timeout_s", timeout_s)
    with _lock:
        setup, _current = _current, None
    return True if setup is None else _close(setup, timeout)


def _close(setup: Configuration, timeout_s: float) -> bool:
    ok = setup.tracer.shutdown(timeout_s)
    ok = setup.log_sink.close(timeout_s) and ok
    setup.store.close()
    if not ok:
        _log.warning("obs: shutting down %s did not finish within %g s", setup.path, timeout_s)
    return ok


atexit.register(shutdown)
