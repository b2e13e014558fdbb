"""Starting the recording proxy in one call: `start_proxy(upstream, port, db=...) -> ProxyHandle`.

The proxy is served by its own HTTP/1.1 server (`obs.proxy._serve`) on a
thread of its own (its own event loop), so any program, the dashboard
included, can start and stop it:

    handle = start_proxy("http://127.0.0.1:8080", port=8033)   # records into .obs/obs.db
    ...                                                         # point programs at handle.url
    handle.stop()

With no `tracer`, it writes into the SQLite file `db` (default `OBS_DB_PATH`,
else `.obs/obs.db`): spans through a `BatchProcessor` and `SqliteExporter`
(one transaction per batch, off the event loop), log entries through a
`SqliteLogSink`, both tagged with `service_name`; `stop()` flushes them and
closes the file. With a `tracer`, spans go wherever its processors send them
and nothing is opened here.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from obs.config import db_path_from_env
from obs.logs import LLMLogger
from obs.metrics.collector import MetricsCollector
from obs.proxy._serve import ProxyServer
from obs.proxy.app import ProxyApp, ProxyStats
from obs.storage.exporter import SqliteExporter, SqliteLogSink
from obs.storage.schema import MEMORY
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.processors import BatchProcessor, TraceProcessor
from obs.trace.tracer import Tracer

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_SERVICE_NAME",
    "ProxyHandle",
    "ProxyStartError",
    "bind_socket",
    "open_recording",
    "record_into",
    "start_proxy",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_SERVICE_NAME = "obs-proxy"


class ProxyStartError(RuntimeError):
    """The proxy could not start: its port is taken, or its server stopped while starting."""


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready socket bound to `host:port` (0: a free port); ProxyStartError if it is taken."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in [0, 65535] (0 = any free port), got {port!r}")
    if not isinstance(host, str) or not host.strip():
        raise ValueError(f"host must be an address such as {DEFAULT_HOST}, got {host!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so (a 40 ms stall per answer
    # otherwise, from Nagle's algorithm meeting delayed ACKs), and accepted sockets inherit it.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ProxyStartError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another port "
            "(--port, or port=0 for any free one)"
        ) from None
    return sock


class _QueueOnly:
    """A log sink's `write` alone: LLMLogger flushes a stream that has `flush` after every line,
    and SqliteLogSink.flush waits for the disk, which an event loop must never do."""

    __slots__ = ("_sink",)

    def __init__(self, sink: SqliteLogSink) -> None:
        self._sink = sink

    def write(self, text: str, /) -> None:
        self._sink.write(text)

    def flush_soon(self) -> None:
        self._sink.flush_soon()


def record_into(
    store: SqliteTraceStore, service_name: str, *, processors: Sequence[TraceProcessor] = ()
) -> tuple[Tracer, Callable[[float], bool]]:
    """A Tracer writing spans and log entries into the open SQLite `store`, and the function that flushes it.

    Spans go through a BatchProcessor (then through `processors`, in order),
    log entries through a SqliteLogSink's queue, both tagged with
    `service_name`: neither waits for the disk on the recording thread. The
    closer flushes and stops both within its timeout, says whether it did,
    and leaves the store open (its owner closes it).
    """
    if not isinstance(service_name, str) or not service_name:
        raise ValueError(f"service_name must be a non-empty string (e.g. 'my-app'), got {service_name!r}")
    sink = SqliteLogSink(store, service=service_name)
    tracer = Tracer(processors=[BatchProcessor(SqliteExporter(store), schedule_delay_s=1.0), *processors],
                    logger=LLMLogger(stream=_QueueOnly(sink)), collector=MetricsCollector(),
                    service_name=service_name)  # fmt: skip

    def close(timeout_s: float) -> bool:
        ok = tracer.shutdown(timeout_s)
        return sink.close(timeout_s) and ok

    return tracer, close


def open_recording(
    db: str | os.PathLike[str] | None, service_name: str, *, retention_interval_s: float | None = 60.0
) -> tuple[Tracer, Callable[[float], bool]]:
    """A Tracer writing spans and logs into the SQLite file `db`, and the function that closes it all.

    `db` None means `OBS_DB_PATH`, else `.obs/obs.db`; its directory is
    created (private to the owner). Recording is `record_into`'s. The
    file's retention settings are applied every `retention_interval_s`
    seconds (None: not from here). ValueError names a file that cannot be
    used. The closer flushes within its timeout, closes the file and says
    whether it flushed.
    """
    if not isinstance(service_name, str) or not service_name:
        raise ValueError(f"service_name must be a non-empty string (e.g. 'my-app'), got {service_name!r}")
    path = db_path_from_env() if db is None else os.fspath(db)
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"db must be a file path (or ':memory:'), got {db!r}")
    if path != MEMORY:
        directory = Path(path).parent
        try:
            # Traces hold prompts and answers: a directory obs creates is the owner's alone.
            directory.mkdir(parents=True, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot create directory {str(directory)!r} for the database {path!r}: "
                             f"{exc.strerror or exc}; choose another db path") from None  # fmt: skip
    store = SqliteTraceStore(path)
    try:
        tracer, flush = record_into(store, service_name)
        if retention_interval_s is not None:
            store.start_retention(retention_interval_s)  # stops when the store closes
    except BaseException:
        store.close()
        raise

    def close(timeout_s: float) -> bool:
        ok = flush(timeout_s)
        store.close()
        return ok

    return tracer, close


class ProxyHandle:
    """A running proxy: `url` to send requests to, `stop()` to end it; a context manager too.

    `app` is the ProxyApp (its `stats`, `props`), `tracer` and `collector`
    what it records into.
    """

    def __init__(
        self, app: ProxyApp, server: ProxyServer, thread: threading.Thread, url: str,
        close: Callable[[float], bool] | None,
    ) -> None:
        """Internal: made by `start_proxy`."""
        self.app = app
        self.url = url
        self._server = server
        self._thread = thread
        self._close = close
        self._stopped = False

    @property
    def tracer(self) -> Tracer:
        """The tracer the proxy's spans are begun on."""
        return self.app.tracer

    @property
    def collector(self) -> MetricsCollector:
        """The collector counting the recorded calls (requests, tokens, cost, latency)."""
        return self.app.collector

    @property
    def stats(self) -> ProxyStats:
        """What the proxy did so far (`ProxyStats`)."""
        return self.app.stats

    @property
    def running(self) -> bool:
        """True until `stop()` (or the server stopping by itself)."""
        return self._thread.is_alive() and not self._stopped

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop serving (open answers get up to 5 s), then flush and close what `start_proxy` opened.

        True if everything finished within `timeout_s` seconds. Calling it
        again returns True at once.
        """
        if self._stopped:
            return True
        self._stopped = True
        deadline = time.monotonic() + timeout_s
        self._server.stop()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        ok = not self._thread.is_alive()
        if self._close is not None:
            ok = self._close(max(0.001, deadline - time.monotonic())) and ok
        return ok

    def __enter__(self) -> ProxyHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"ProxyHandle({self.url!r} -> {self.app.upstream!r}, {state})"


def start_proxy(
    upstream: str,
    port: int = 0,
    *,
    host: str = DEFAULT_HOST,
    db: str | os.PathLike[str] | None = None,
    tracer: Tracer | None = None,
    service_name: str = DEFAULT_SERVICE_NAME,
    capture_content: bool | None = None,
    connect_timeout_s: float = 10.0,
    timeout_s: float | None = None,
    startup_timeout_s: float = 20.0,
    keep_ready_s: float = 30.0,
) -> ProxyHandle:
    """Serve a recording proxy for `upstream` on `host:port` (0: a free port) and return its handle.

    It records into `tracer` when given, else into the SQLite file `db`
    (see the module docstring) as `service_name`. `capture_content`,
    `connect_timeout_s`, `timeout_s` and `keep_ready_s` are ProxyApp's. Returns once the
    proxy answers requests (its first read of the upstream's `/props` has
    been tried). ValueError names a bad argument; ProxyStartError if the
    port is taken or the server does not start within `startup_timeout_s`.
    """
    if tracer is not None and db is not None:
        raise ValueError("start_proxy: give tracer= (record through it) or db= (a SQLite file), not both")
    close: Callable[[float], bool] | None = None
    if tracer is None:
        tracer, close = open_recording(db, service_name)
    try:
        app = ProxyApp(upstream, tracer=tracer, capture_content=capture_content,
                       connect_timeout_s=connect_timeout_s, timeout_s=timeout_s,
                       keep_ready_s=keep_ready_s)  # fmt: skip
        sock = bind_socket(host, port)
        server = ProxyServer(app, sock)
        thread = threading.Thread(target=server.run, name="obs-proxy", daemon=True)
        thread.start()
        deadline = time.monotonic() + startup_timeout_s
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        if not server.started:
            server.stop()
            thread.join(5.0)
            with contextlib.suppress(OSError):
                sock.close()
            raise ProxyStartError(f"the proxy on {host}:{port} did not start within {startup_timeout_s:g} s")
    except BaseException:
        if close is not None:
            close(5.0)
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return ProxyHandle(app, server, thread, f"http://{shown}:{bound_port}", close)
