"""The recording proxy the dashboard runs: one per app process, switched on from the Export & receive page.

Programs that talk to llama-server (Open WebUI, a LangChain app, curl) are
pointed at the proxy instead of the server; it forwards every request
unchanged and records the model calls (`obs.proxy`). Started here, it sits
in front of the dashboard's own llama-server (the embedded one when the app
started it) and records into the dashboard's history file
(`app.state.history_file()`) as the service `obs-proxy`, so its calls show
on the Traces, Sessions and Dashboard pages next to the chats; they also
reach the forwarder when one is configured.

`dashboard_proxy()` is the process's `DashboardProxy` (`st.cache_resource`):
`start(upstream, port)` serves it on 127.0.0.1 only (whoever reaches it
uses the model through it, with no token of its own), `stop()` ends it,
`status()` says where it listens and what it did. It stops at exit.
`examples(url)` gives the lines a user copies to point a program at it.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import streamlit as st

from app import backend, receiving
from obs.config import db_path_from_env
from obs.proxy.server import DEFAULT_SERVICE_NAME, ProxyHandle, record_into, start_proxy
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.processors import TraceProcessor

__all__ = [
    "DEFAULT_PROXY_PORT",
    "PROXY_HOST",
    "PROXY_SERVICE",
    "DashboardProxy",
    "ProxyStatus",
    "dashboard_proxy",
    "examples",
]

# Next to the embedded server's 8033, and not llama-server's own 8080 (often taken by other tools).
DEFAULT_PROXY_PORT = 8034
PROXY_HOST = "127.0.0.1"
PROXY_SERVICE = DEFAULT_SERVICE_NAME
_STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class ProxyStatus:
    """The running proxy: where programs send requests (`url`), where it forwards them, what it did.

    `requests` relayed (or tried), `recorded` model calls recorded,
    `no_answer` requests it answered itself (502/504: nothing answered
    upstream), `telemetry_errors` failures inside recording (the relay went on).
    """

    url: str
    upstream: str
    capture_content: bool
    requests: int
    recorded: int
    no_answer: int
    telemetry_errors: int


def examples(url: str) -> tuple[str, str]:
    """(a curl command for one chat through the proxy at `url`, the environment lines for OpenAI clients)."""
    curl = (f"curl -s {url}/v1/chat/completions -H 'Content-Type: application/json' \\\n"
            """  -d '{"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 32}'""")
    env = f"OPENAI_BASE_URL={url}/v1\nOPENAI_API_KEY=not-needed"
    return curl, env


class DashboardProxy:
    """Starts and stops one recording proxy that writes into `store` (thread-safe; see the module docstring).

    `processors` receive its traces after the history file (the forwarder).
    """

    def __init__(self, store: SqliteTraceStore, processors: Sequence[TraceProcessor] = ()) -> None:
        """Nothing runs until `start`."""
        self._store = store
        self._processors = tuple(processors)
        self._lock = threading.Lock()
        self._handle: ProxyHandle | None = None
        self._flush: Callable[[float], bool] | None = None
        self._capture = False

    def start(self, upstream: str, port: int, *, capture_content: bool = True) -> ProxyStatus:
        """Serve the proxy on 127.0.0.1:`port` in front of `upstream`; return its status once it answers.

        ValueError says what is wrong with `upstream` or `port`, or that it
        already runs; `obs.proxy.ProxyStartError` says the port is taken.
        """
        upstream = backend.validate_server_url(upstream)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"the proxy's port must be a number from 1 to 65535, got {port!r}")
        with self._lock:
            if self._handle is not None and self._handle.running:
                raise ValueError(f"the proxy already runs at {self._handle.url}: stop it first")
            self._stop_locked(_STOP_TIMEOUT_S)
            tracer, flush = record_into(self._store, PROXY_SERVICE, processors=self._processors)
            try:
                handle = start_proxy(upstream, port, host=PROXY_HOST, tracer=tracer,
                                     capture_content=capture_content)  # fmt: skip
            except BaseException:
                flush(_STOP_TIMEOUT_S)
                raise
            self._handle, self._flush, self._capture = handle, flush, bool(capture_content)
            return self._status_locked()  # type: ignore[return-value]

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> bool:
        """Stop serving (open answers get a few seconds), then store what is queued; True if all in time."""
        with self._lock:
            return self._stop_locked(timeout_s)

    def status(self) -> ProxyStatus | None:
        """The running proxy's address and counters; None when it is off."""
        with self._lock:
            if self._handle is not None and not self._handle.running:  # its server ended by itself
                self._stop_locked(_STOP_TIMEOUT_S)
            return self._status_locked()

    def _status_locked(self) -> ProxyStatus | None:
        handle = self._handle
        if handle is None:
            return None
        stats = handle.stats
        return ProxyStatus(handle.url, handle.app.upstream, self._capture, stats.requests, stats.recorded,
                           stats.no_answer, stats.telemetry_errors)

    def _stop_locked(self, timeout_s: float) -> bool:
        handle, flush = self._handle, self._flush
        self._handle = self._flush = None
        ok = handle.stop(timeout_s) if handle is not None else True
        if flush is not None:
            ok = flush(timeout_s) and ok
        return ok


@st.cache_resource(show_spinner=False)
def _proxy_for(history_path: str) -> DashboardProxy:
    from app import state  # the history file: the store every page reads

    history = state.history_file()  # opened (and its close registered) before our stop: stop runs first
    proxy = DashboardProxy(history.store, [receiving.ForwardingProcessor(receiving.forwarder())])
    atexit.register(proxy.stop, 5.0)
    return proxy


def dashboard_proxy() -> DashboardProxy:
    """The process's proxy control for its history file (off until started); a running proxy stops at exit."""
    return _proxy_for(db_path_from_env())
