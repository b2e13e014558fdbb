"""Traces in and out of the dashboard: the OTLP/HTTP receiver it runs, and the forwarder to another backend.

The receiver: any OpenTelemetry program sends its traces to the dashboard by
setting `OTEL_EXPORTER_OTLP_ENDPOINT` to the address `receiver()` reports.
It is `obs.receive.make_receiver_app` served by uvicorn on a background
thread, started at most once per app process (`st.cache_resource`), on port
4318 unless `OBS_RECEIVER_PORT` says otherwise (`0` turns it off), on the
dashboard's own bind address. Received traces go to the dashboard's history
file (`app.state.history_file()`), merged with parts already there, so they
show on the Traces page and, with GenAI attributes, count as requests. When
the dashboard asks for an access token (served beyond 127.0.0.1, or
`OBS_ACCESS_TOKEN` set), `POST /v1/traces` and `GET /metrics` require the
same token as a bearer header. At exit the server stops and what is queued
is stored.

Streamlit 1.67 has `st.App` (extra Starlette routes on its own port), but
it is experimental and changes how the app is started (an ASGI entry point
instead of `streamlit run streamlit_app.py`); the receiver keeps its own
port, the one OTLP/HTTP clients use by default.

The forwarder (`forwarder()`): one per process, sending every trace the
dashboard keeps (its chats, and the traces it receives) to an OTLP endpoint
through an `OtlpHttpExporter` behind a `BatchProcessor`. It is off until
configured on the Export & receive page; its counters and last error are
shown there, its header values never.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from app import access
from obs.export.exporters import OtlpHttpExporter
from obs.metrics.collector import MetricsCollector
from obs.receive.app import make_receiver_app
from obs.receive.merge import MergingStoreExporter
from obs.storage.exporter import SqliteExporter
from obs.trace.processors import BatchProcessor, ExportResult, ProcessorStats
from obs.trace.traces import Trace

__all__ = [
    "DEFAULT_RECEIVER_PORT",
    "RECEIVER_PORT_ENV",
    "Forwarder",
    "ForwarderStatus",
    "ForwardingProcessor",
    "ReceiverInfo",
    "attach_forwarder",
    "bind_address",
    "forwarder",
    "parse_headers",
    "receiver",
    "receiver_port_from_env",
    "sdk_settings",
    "start_receiver",
]

RECEIVER_PORT_ENV = "OBS_RECEIVER_PORT"
DEFAULT_RECEIVER_PORT = 4318
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0

_log = logging.getLogger(__name__)


def receiver_port_from_env(environ: Mapping[str, str] | None = None) -> int:
    """The port `OBS_RECEIVER_PORT` names (default 4318; 0 means no receiver).

    ValueError, naming the variable and the range, for anything but an
    integer in [0, 65535].
    """
    env = os.environ if environ is None else environ
    text = env.get(RECEIVER_PORT_ENV, "").strip()
    if not text:
        return DEFAULT_RECEIVER_PORT
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ValueError(f"{RECEIVER_PORT_ENV} must be a port in [0, 65535] (0 turns the receiver off), "
                         f"got {text!r}")
    return port


def bind_address() -> str:
    """The address the dashboard listens on (`server.address`), shared by the receiver; 127.0.0.1 if unset."""
    try:
        address = st.get_option("server.address")
    except Exception:  # no Streamlit config to read
        address = None
    return str(address).strip() if address and str(address).strip() else "127.0.0.1"


@dataclass(frozen=True, slots=True)
class ReceiverInfo:
    """Where the dashboard receives traces, or why it does not.

    `endpoint` is the base URL for `OTEL_EXPORTER_OTLP_ENDPOINT` (traces go
    to `endpoint + "/v1/traces"`), "" when there is no receiver; `problem`
    says why not ("" when it runs, or was turned off on purpose: then
    `enabled` is False); `token_required` says whether clients must send the
    access token as `Authorization: Bearer ...`.
    """

    enabled: bool
    endpoint: str = ""
    port: int = 0
    token_required: bool = False
    problem: str = ""
    app: Any = field(default=None, repr=False)
    stop: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        """True when traces sent to `endpoint` are taken in."""
        return bool(self.endpoint) and not self.problem


def sdk_settings(info: ReceiverInfo) -> list[str]:
    """The environment lines that point an OpenTelemetry SDK at the receiver (the token shown as <token>)."""
    if not info.running:
        return []
    lines = [f"OTEL_EXPORTER_OTLP_ENDPOINT={info.endpoint}", "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"]
    if info.token_required:
        lines.append("OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<token>")
    return lines


def _shown_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):  # every interface: name the machine
        host = socket.gethostname() or "localhost"
    return f"[{host}]" if ":" in host else host


class _Tee:
    """Stores received traces and hands each to the forwarder too (if one is configured)."""

    def __init__(self, target: Any, forward: Forwarder) -> None:
        self._target = target
        self._forward = forward

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        result = self._target.export(traces)
        if result is ExportResult.SUCCESS:
            for trace in traces:
                self._forward.on_end(trace)
        return result

    def shutdown(self) -> None:
        self._target.shutdown()


def start_receiver(host: str, port: int, token: str | None, store: Any) -> ReceiverInfo:
    """Serve the receiver on `host:port` (0: any free port), storing into `store`; wait until it listens.

    With `token`, both routes require it as a bearer header. The returned
    info's `stop()` (also run at exit) stops the server and stores what is
    queued. A port that cannot be bound gives an info whose `problem` says
    so; nothing is raised for it.
    """
    import uvicorn  # only a dashboard with a receiver needs a server

    exporter = _Tee(MergingStoreExporter(SqliteExporter(store)), forwarder())
    app = make_receiver_app(exporter, MetricsCollector(), token)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           lifespan="on"))
    failed: list[BaseException] = []

    def serve() -> None:
        try:
            server.run()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=serve, name="obs-otlp-receiver", daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        server.should_exit = True
        thread.join(_STOP_TIMEOUT_S)
        app.state.ingest.shutdown(1.0)
        return ReceiverInfo(True, port=port, problem=f"the OTLP receiver could not listen on {host}:{port} "
                            f"(is the port in use?); set {RECEIVER_PORT_ENV} to a free port, or 0 for none")

    def stop() -> None:
        server.should_exit = True
        thread.join(_STOP_TIMEOUT_S)
        app.state.ingest.shutdown(_STOP_TIMEOUT_S)  # stores what is queued, if the lifespan did not

    atexit.register(stop)
    if port == 0:
        port = next(s.getsockname()[1] for server_ in server.servers for s in server_.sockets)
    endpoint = f"http://{_shown_host(host)}:{port}"
    _log.info("receiving OTLP/HTTP traces at %s/v1/traces", endpoint)
    return ReceiverInfo(True, endpoint, port, token is not None, "", app, stop)


@st.cache_resource(show_spinner=False)
def _receiver(host: str, port: int) -> ReceiverInfo:
    from app import state  # the history file: the store every page reads

    try:
        token = access.required_token(host)
    except ValueError as exc:  # served wide without a token: the app refuses anyway, and so does this
        return ReceiverInfo(True, port=port, problem=str(exc))
    history = state.history_file()  # opened (and its close registered) before our stop: stop runs first
    try:
        return start_receiver(host, port, token, history.store)
    except Exception as exc:  # the dashboard works without a receiver
        _log.exception("starting the OTLP receiver failed")
        return ReceiverInfo(True, port=port, problem=f"the OTLP receiver did not start: {exc}")


def _served() -> bool:
    """True in an app `streamlit run` serves; False under AppTest (its runtime is a stand-in)."""
    try:
        from streamlit.runtime import Runtime

        return type(Runtime.instance()) is Runtime
    except Exception:
        return False


def receiver() -> ReceiverInfo:
    """The process's OTLP/HTTP receiver, started on first call (see the module docstring); never raises.

    Only a served app starts one: a script run by AppTest gets a ReceiverInfo
    saying so, and no port is taken.
    """
    try:
        port = receiver_port_from_env()
    except ValueError as exc:
        return ReceiverInfo(True, problem=str(exc))
    if port == 0:
        return ReceiverInfo(False)
    if not _served():
        return ReceiverInfo(True, port=port, problem="the receiver runs only in a served dashboard")
    return _receiver(bind_address(), port)


@dataclass(frozen=True, slots=True)
class ForwarderStatus:
    """What the forwarder does now: where to (masked), how, the header names (never values), its counters."""

    endpoint: str
    protocol: str
    header_names: tuple[str, ...]
    exported: int
    exported_spans: int
    retries: int
    failed: int
    dropped: int
    pending: int
    last_error: str | None
    last_error_at: float | None


class Forwarder:
    """Sends kept traces to one OTLP endpoint at a time (`configure`) or nowhere; `on_end` never raises."""

    def __init__(self, schedule_delay_s: float = 1.0) -> None:
        """No endpoint yet: traces handed over are ignored until `configure`."""
        self._lock = threading.Lock()
        self._delay = schedule_delay_s
        self._exporter: OtlpHttpExporter | None = None
        self._processor: BatchProcessor | None = None
        self._header_names: tuple[str, ...] = ()

    def configure(self, endpoint: str, protocol: str = "http/protobuf",
                  headers: Mapping[str, str] | None = None) -> None:
        """Forward from now on to `endpoint` (a URL with no path gets `/v1/traces`), `protocol`, `headers`.

        ValueError (from `OtlpHttpExporter`, naming the bad argument, never a
        header value) leaves the current configuration as it was. The
        previous exporter is flushed and shut down.
        """
        if not isinstance(endpoint, str) or not endpoint.strip():
            raise ValueError("endpoint must be the URL of an OTLP/HTTP receiver, e.g. http://collector:4318; "
                             "got nothing")
        exporter = OtlpHttpExporter(endpoint=endpoint.strip(), protocol=protocol, headers=dict(headers or {}),
                                    env={})
        processor = BatchProcessor(exporter, schedule_delay_s=self._delay)
        with self._lock:
            old = self._processor
            self._exporter, self._processor = exporter, processor
            self._header_names = tuple(sorted(headers or {}))
        if old is not None:
            old.shutdown(2.0)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop forwarding: send what is queued (within `timeout_s`), then forget the endpoint."""
        with self._lock:
            old = self._processor
            self._exporter = self._processor = None
            self._header_names = ()
        if old is not None:
            old.shutdown(timeout_s)

    def on_end(self, trace: Trace) -> None:
        """Queue `trace` for the endpoint, if one is configured."""
        processor = self._processor
        if processor is not None:
            try:
                processor.on_end(trace)
            except Exception:  # telemetry never raises into the app
                _log.exception("forwarding a trace failed")

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Send what is queued now; True if done within `timeout_s`."""
        processor = self._processor
        return True if processor is None else processor.force_flush(timeout_s)

    def status(self) -> ForwarderStatus | None:
        """The current endpoint and counters, or None when not forwarding."""
        with self._lock:
            exporter, processor, names = self._exporter, self._processor, self._header_names
        if exporter is None or processor is None:
            return None
        stats = exporter.stats()
        queue: ProcessorStats = processor.stats()
        return ForwarderStatus(
            exporter.endpoint, exporter.protocol, names, stats.exported, stats.exported_spans, stats.retries,
            stats.failed, queue.dropped, queue.pending, stats.last_error, stats.last_error_at,
        )


def parse_headers(text: str) -> dict[str, str]:
    """`name=value` (or `name: value`) lines as a mapping; ValueError names the line, never its value."""
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        separators = [i for i in (line.find("="), line.find(":")) if i > 0]
        if not separators:
            raise ValueError(f"headers line {number} must be name=value (or name: value)")
        cut = min(separators)
        name, value = line[:cut].strip(), line[cut + 1:].strip()
        if not name or not value:
            raise ValueError(f"headers line {number} needs both a name and a value")
        headers[name] = value
    return headers


class ForwardingProcessor:
    """A tracer's processor that hands every kept trace to the process's forwarder.

    With `target` (the forwarder, taken once on a script thread) it needs no
    Streamlit call when a trace ends, so tracers whose traces end on other
    threads (the proxy's event loop) use one; without, it asks `forwarder()`.
    """

    def __init__(self, target: Forwarder | None = None) -> None:
        """Hand traces to `target`, else to `forwarder()` each time."""
        self._target = target

    def _forwarder(self) -> Forwarder:
        return self._target if self._target is not None else forwarder()

    def on_end(self, trace: Trace) -> None:
        """Hand `trace` to the forwarder."""
        self._forwarder().on_end(trace)

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Flush the forwarder."""
        return self._forwarder().force_flush(timeout_s)

    def shutdown(self, timeout_s: float = 30.0) -> bool:
        """Nothing to do: the forwarder outlives any one tracer."""
        return True


@st.cache_resource(show_spinner=False)
def forwarder() -> Forwarder:
    """The process's forwarder (off until configured); what it holds is sent at exit."""
    instance = Forwarder()
    atexit.register(instance.stop, 5.0)
    return instance


def attach_forwarder(tracer: Any) -> None:
    """Give `tracer` a ForwardingProcessor once, so its kept traces reach the forwarder; never raises."""
    try:
        if not any(isinstance(p, ForwardingProcessor) for p in tracer.processors):
            tracer.add_processor(ForwardingProcessor())
    except Exception:
        _log.exception("could not attach the forwarder")
