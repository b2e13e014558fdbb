"""Exporters that send traces out of the process: OTLP over HTTP, and Zipkin.

Both are `TraceExporter`s for the processor seam (put them behind a
`BatchProcessor`, so the network never delays the application): `export`
encodes the batch with the pure encoders of this package, POSTs it with the
OTLP specification's retry rules (`obs.export._http`), and returns SUCCESS
or FAILURE. They never raise: every failure, an encoding error included,
is logged and counted. `stats()` gives the counters a settings panel shows.
Header values, and the user info and query values of the endpoint, never
appear in a log line, an error, `last_error` or a repr.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import random as _random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from obs.export._http import HttpSender, PostOutcome
from obs.export._values import scope_version
from obs.export.otlp import to_otlp, to_otlp_json
from obs.export.otlp_config import check_endpoint, check_headers, otlp_config
from obs.export.zipkin import to_zipkin
from obs.trace.processors import ExportResult
from obs.trace.traces import Trace

__all__ = ["ExporterStats", "OtlpHttpExporter", "ZipkinExporter"]

_log = logging.getLogger(__name__)
DEFAULT_ZIPKIN_ENDPOINT = "http://localhost:9411/api/v2/spans"


@dataclass(frozen=True, slots=True)
class ExporterStats:
    """An exporter's counters, read at one instant.

    `exported` / `exported_spans`: traces and spans the receiver accepted
    (less `rejected_spans`, those it refused in a partial success); `failed`
    / `failed_spans`: those in exports that failed for good; `retries`:
    requests sent again; `last_error`: what went wrong last (secrets masked),
    None until something does; `last_error_at`: its epoch time in seconds.
    """

    exported: int
    exported_spans: int
    failed: int
    failed_spans: int
    retries: int
    rejected_spans: int
    last_error: str | None
    last_error_at: float | None


def _check_retry_arguments(owner: str, max_retries: object) -> int:
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or not 0 <= max_retries <= 100:
        raise ValueError(f"{owner}: max_retries must be an int in [0, 100], got {max_retries!r}")
    return max_retries


class _Sending:
    """What both exporters share: the sender, the counters, logging, and shutdown."""

    _owner = "exporter"

    def _start(self, sender: HttpSender) -> None:
        self._sender = sender
        self._lock = threading.Lock()
        self._counts = {"exported": 0, "exported_spans": 0, "failed": 0, "failed_spans": 0, "retries": 0,
                        "rejected_spans": 0}
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._shut_down = False

    def stats(self) -> ExporterStats:
        """The counters now."""
        with self._lock:
            return ExporterStats(
                **self._counts, last_error=self._last_error, last_error_at=self._last_error_at
            )

    def shutdown(self) -> None:
        """Refuse later exports (they return FAILURE), cut short a retry wait, close connections."""
        self._shut_down = True
        self._sender.close()

    def _fail(self, traces: int, spans: int, retries: int, error: str) -> ExportResult:
        error = self._sender.redact(error)
        with self._lock:
            self._counts["failed"] += traces
            self._counts["failed_spans"] += spans
            self._counts["retries"] += retries
            self._last_error, self._last_error_at = error, time.time()
        _log.warning("obs: %s to %s failed for %d trace(s): %s", self._owner, self._sender.shown_url, traces,
                     error)
        return ExportResult.FAILURE

    def _send(self, traces: Sequence[Trace], encode: Callable[[Sequence[Trace]], tuple[bytes, int]],
              headers: Mapping[str, str]) -> tuple[ExportResult, PostOutcome | None, int]:
        """Encode and post; (result, outcome, spans). Counts a failure; success is counted by the caller."""
        if self._shut_down:
            return self._fail(len(traces), 0, 0, "the exporter was shut down"), None, 0
        try:
            body, spans = encode(traces)
        except Exception as exc:  # a trace that cannot be encoded must not break the host
            error = f"could not encode the traces: {type(exc).__name__}: {exc}"
            return self._fail(len(traces), 0, 0, error), None, 0
        if spans == 0:
            return ExportResult.SUCCESS, None, 0
        outcome = self._sender.post(body, headers)
        if not outcome.ok:
            error = outcome.error or "failed"
            detail = _error_detail(outcome.body)
            if detail:
                error = f"{error}: {detail}"
            return self._fail(len(traces), spans, outcome.retries, error), outcome, spans
        return ExportResult.SUCCESS, outcome, spans

    def _succeed(self, traces: int, spans: int, retries: int, rejected: int) -> None:
        with self._lock:
            self._counts["exported"] += traces
            self._counts["exported_spans"] += spans - rejected
            self._counts["rejected_spans"] += rejected
            self._counts["retries"] += retries


class OtlpHttpExporter(_Sending):
    """Sends traces as OTLP over HTTP (`http/protobuf` or `http/json`) to a collector or backend.

    Arguments left None come from the OpenTelemetry variables, else the
    defaults (see `obs.export.otlp_config`): endpoint
    `http://localhost:4318/v1/traces`, protocol `http/protobuf`, no headers,
    10 s timeout, gzip. `resource` adds resource attributes (its
    `service.name` names the service of every trace, as `OTEL_SERVICE_NAME`
    does; otherwise each trace's own). Retries follow the OTLP
    specification (see `obs.export._http`), all within `timeout_s`; a 200
    with a partial success is logged and counted in `rejected_spans`, not
    retried. `sleep`, `random` and `monotonic` are for exact tests; `env`
    replaces `os.environ`. Thread-safe.
    """

    _owner = "OTLP export"

    def __init__(
        self,
        endpoint: str | None = None,
        protocol: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        compression: str | None = None,
        *,
        resource: Mapping[str, Any] | None = None,
        max_retries: int = 6,
        env: Mapping[str, str] | None = None,
        sleep: Callable[[float], Any] | None = None,
        random: Callable[[], float] = _random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Check the configuration (ValueError names what is wrong, never a header value) and get ready."""
        owner = "OtlpHttpExporter"
        self.config = otlp_config(
            owner, os.environ if env is None else env, endpoint=endpoint, protocol=protocol,
            headers=headers, timeout_s=timeout_s, compression=compression,
        )
        if resource is not None and not isinstance(resource, Mapping):
            raise ValueError(f"{owner}: resource must be a mapping of resource attributes or None, "
                             f"got {type(resource).__name__}")
        merged = dict(resource or {})
        if self.config.service_name and "service.name" not in merged:
            merged["service.name"] = self.config.service_name
        self.resource: dict[str, Any] | None = merged or None
        self.protocol = self.config.protocol
        self._content_type = "application/json" if self.protocol == "http/json" else "application/x-protobuf"
        self._headers = {"content-type": self._content_type}
        if self.config.compression == "gzip":
            self._headers["content-encoding"] = "gzip"
        self._start(HttpSender(
            self.config.endpoint, self.config.headers, self.config.timeout_s,
            max_retries=_check_retry_arguments(owner, max_retries),
            sleep=sleep, random=random, monotonic=monotonic,
            user_agent=f"obs-otlp-exporter/{scope_version()}",
        ))

    @property
    def endpoint(self) -> str:
        """Where traces go, as it may be shown (user info and query values masked)."""
        return self._sender.shown_url

    def _encode(self, traces: Sequence[Trace]) -> tuple[bytes, int]:
        if self.protocol == "http/json":
            data = to_otlp_json(traces, self.resource)
            spans = sum(len(s.get("spans", ())) for r in data.get("resourceSpans", ())
                        for s in r.get("scopeSpans", ()))
            body = json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8")
        else:
            message = to_otlp(traces, self.resource)
            spans = sum(len(s.spans) for r in message.resource_spans for s in r.scope_spans)
            body = message.SerializeToString()
        if self.config.compression == "gzip":
            body = gzip.compress(body, compresslevel=5)
        return body, spans

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        """Send `traces`; SUCCESS when the receiver accepted them (partial success included). Never raises."""
        count = _count(traces)
        try:
            traces = list(traces)
            result, outcome, spans = self._send(traces, self._encode, self._headers)
            if result is ExportResult.SUCCESS:
                rejected, message = 0, ""
                if outcome is not None:
                    rejected, message = _partial_success(outcome, self._content_type)
                if rejected or message:
                    _log.warning(
                        "obs: %s to %s: the receiver rejected %d of %d span(s): %s", self._owner,
                        self.endpoint, rejected, spans, self._sender.redact(message) or "no reason given",
                    )
                self._succeed(len(traces), spans, outcome.retries if outcome else 0, rejected)
            return result
        except Exception as exc:  # the last guard: telemetry never raises into the application
            return self._fail(count, 0, 0, f"{type(exc).__name__}: {exc}")

    def __repr__(self) -> str:
        return (f"OtlpHttpExporter(endpoint={self.endpoint!r}, protocol={self.protocol!r}, "
                f"headers={sorted(self.config.headers)!r}, timeout_s={self.config.timeout_s!r}, "
                f"compression={self.config.compression!r})")


class ZipkinExporter(_Sending):
    """Sends traces as Zipkin v2 JSON spans (`POST /api/v2/spans`) to Zipkin or anything that takes them.

    `endpoint` defaults to `OTEL_EXPORTER_ZIPKIN_ENDPOINT`, else
    `http://localhost:9411/api/v2/spans`. Retries and the deadline are the
    OTLP exporter's (see `obs.export._http`); `max_tag_value_length` is
    `to_zipkin`'s. Thread-safe.
    """

    _owner = "Zipkin export"

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        max_tag_value_length: int | None = None,
        max_retries: int = 6,
        env: Mapping[str, str] | None = None,
        sleep: Callable[[float], Any] | None = None,
        random: Callable[[], float] = _random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Check the configuration (ValueError names what is wrong, never a header value) and get ready."""
        owner = "ZipkinExporter"
        env = os.environ if env is None else env
        if endpoint is None:
            endpoint = env.get("OTEL_EXPORTER_ZIPKIN_ENDPOINT", "").strip() or DEFAULT_ZIPKIN_ENDPOINT
        check_endpoint(owner, "endpoint", endpoint)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not 0 < timeout_s <= 3600:
            raise ValueError(
                f"{owner}: timeout_s must be a number of seconds in (0, 3600], got {timeout_s!r}"
            )
        to_zipkin([], max_tag_value_length=max_tag_value_length)  # checks it
        self.max_tag_value_length = max_tag_value_length
        self.timeout_s = float(timeout_s)
        header_map = check_headers(owner, headers or {})
        self._start(HttpSender(
            endpoint, header_map, self.timeout_s, max_retries=_check_retry_arguments(owner, max_retries),
            sleep=sleep, random=random, monotonic=monotonic,
            user_agent=f"obs-zipkin-exporter/{scope_version()}",
        ))

    @property
    def endpoint(self) -> str:
        """Where spans go, as it may be shown (user info and query values masked)."""
        return self._sender.shown_url

    def _encode(self, traces: Sequence[Trace]) -> tuple[bytes, int]:
        spans = to_zipkin(traces, max_tag_value_length=self.max_tag_value_length)
        return json.dumps(spans, separators=(",", ":"), allow_nan=False).encode("utf-8"), len(spans)

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        """Send `traces`; SUCCESS on a 2xx answer (Zipkin answers 202). Never raises."""
        count = _count(traces)
        try:
            traces = list(traces)
            result, outcome, spans = self._send(traces, self._encode, {"content-type": "application/json"})
            if result is ExportResult.SUCCESS:
                self._succeed(len(traces), spans, outcome.retries if outcome else 0, 0)
            return result
        except Exception as exc:  # the last guard: telemetry never raises into the application
            return self._fail(count, 0, 0, f"{type(exc).__name__}: {exc}")

    def __repr__(self) -> str:
        return f"ZipkinExporter(endpoint={self.endpoint!r}, timeout_s={self.timeout_s!r})"


def _count(traces: object) -> int:
    try:
        return len(traces)  # type: ignore[arg-type]
    except Exception:
        return 0


def _partial_success(outcome: PostOutcome, content_type: str) -> tuple[int, str]:
    """(rejected spans, message) of a 2xx OTLP answer; (0, "") when it says nothing or cannot be read."""
    body = outcome.body
    if not body:
        return 0, ""
    answered = content_type
    if outcome.response is not None:
        answered = outcome.response.headers.get("content-type", content_type)
    try:
        if "json" in answered:
            data = json.loads(body)
            partial = data.get("partialSuccess") or data.get("partial_success") or {}
            rejected = int(partial.get("rejectedSpans", partial.get("rejected_spans", 0)) or 0)
            return rejected, str(partial.get("errorMessage", partial.get("error_message", "")) or "")
        response = ExportTraceServiceResponse.FromString(body)
        return int(response.partial_success.rejected_spans), response.partial_success.error_message
    except Exception:  # an answer we cannot read is still a success
        return 0, ""


def _error_detail(body: bytes) -> str:
    """The message of an error answer (`google.rpc.Status` as JSON or protobuf, or plain text), short."""
    if not body:
        return ""
    text = ""
    try:
        data = json.loads(body)
        if isinstance(data, dict):
            text = str(data.get("message") or data.get("error") or "")
    except ValueError:
        text = _status_message(body)
        if not text:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = ""
    text = " ".join(text.split())
    return text[:200]


def _status_message(body: bytes) -> str:
    """Field 2 (message) of a protobuf `google.rpc.Status`, or "" if `body` is not one."""
    i = 0
    try:
        while i < len(body):
            key, i = _varint(body, i)
            field, wire = key >> 3, key & 7
            if wire == 0:
                _, i = _varint(body, i)
            elif wire == 2:
                size, i = _varint(body, i)
                value, i = body[i:i + size], i + size
                if field == 2:
                    return value.decode("utf-8")
            else:
                return ""
    except (IndexError, UnicodeDecodeError):
        return ""
    return ""


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")
