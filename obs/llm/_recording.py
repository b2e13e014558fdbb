"""How one chat request is recorded: its span, its metrics record and its log entries.

A `Call` (`obs.llm._call_state`) holds one request's telemetry from start
to end (span handle, times, stream state). A `CallRecorder`, owned by the client and handed to
its streams, writes it: the span begins when the request is built and ends
exactly once, in `succeed` or `fail`, which also record the request in the
collector and log it. A failure while recording is logged and counted in
`telemetry_errors`, never raised: telemetry never breaks a chat.

Whatever it records passes its `Redactor` first (span names, every string
attribute, log and warning texts), and message content, when captured, is
cut to `max_content_chars` per attribute with `obs.content.truncated` set.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from obs import semconv
from obs.clock import Clock
from obs.llm._call_state import Call
from obs.llm._redaction import Redactor
from obs.llm.errors import LLMServerError
from obs.llm.llama.attributes import (
    ContentBudget,
    derived_attributes,
    input_messages_json,
    output_messages_json,
    request_attributes,
    response_attributes,
)
from obs.llm.llama.props import ServerProps
from obs.llm.llama.responses import ChatCompletion, Timings, Usage
from obs.trace.ids import RandomIdGenerator
from obs.trace.spans import Span, create_span, end_span, set_span_attributes

if TYPE_CHECKING:
    from obs.logs import LLMLogger
    from obs.metrics.collector import MetricsCollector
    from obs.trace.core import TraceHandle
    from obs.trace.handles import SpanHandle
    from obs.trace.tracer import Tracer

_log = logging.getLogger(__name__)
_FALLBACK_IDS = RandomIdGenerator()
_MAX_SERVER_MS = 86_400_000.0


class CallRecorder:
    """Writes the telemetry of calls: their spans, metrics records and log entries.

    The client owns one and hands it to its streams. It holds everything
    recording needs: the tracer, collector, logger and clock, the content
    settings (`capture_content`, which may be switched at any time, and
    `max_content_chars`), the redactor, the server's address, port and
    public URL, the traces begun with `open_trace`, and the count of
    telemetry failures. Thread-safe.
    """

    def __init__(
        self,
        *,
        tracer: Tracer,
        collector: MetricsCollector,
        logger: LLMLogger,
        clock: Clock,
        capture_content: bool,
        max_content_chars: int,
        redact: Redactor,
        server_url: str,
        server_address: str,
        server_port: int,
    ) -> None:
        """Keep the sinks and settings; `server_url` is the server's URL already free of secrets."""
        self.tracer = tracer
        self.collector = collector
        self.logger = logger
        self.clock = clock
        self.capture_content = capture_content
        self.max_content_chars = max_content_chars
        self.redact = redact
        self.server_url = server_url
        self.server_address = server_address
        self.server_port = server_port
        self._traces: list[TraceHandle] = []
        self._traces_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._telemetry_errors = 0

    @property
    def telemetry_errors(self) -> int:
        """How many times recording failed (each logged to the `obs` logger, none raised)."""
        return self._telemetry_errors

    def telemetry_error(self, where: str, exc: BaseException) -> None:
        """Count and log a failure inside telemetry; never raises."""
        with self._count_lock:
            self._telemetry_errors += 1
        _log.warning("obs: telemetry failed in %s: %s: %s", where, type(exc).__name__, self.redact(str(exc)))

    # -- traces begun by the client -------------------------------------------------------------

    def open_trace(self, handle: TraceHandle) -> None:
        """Remember a trace begun by `InstrumentedClient.start_trace`, so `close_trace` may end it."""
        with self._traces_lock:
            self._traces = [t for t in self._traces if not t.ended]
            self._traces.append(handle)

    def close_trace(self, current: TraceHandle | None) -> TraceHandle | None:
        """Forget and return `current` if it is a running trace begun by the client; else None."""
        with self._traces_lock:
            self._traces = [t for t in self._traces if not t.ended]
            if current is None or current not in self._traces:
                return None
            self._traces.remove(current)
        return current

    # -- one call ---------------------------------------------------------------------------------

    def latency_ms(self, call: Call) -> float:
        """Milliseconds since the request was sent (0 before that)."""
        return 0.0 if call.t0 is None else max(0.0, self.clock.monotonic_ms() - call.t0)

    def begin(
        self,
        call: Call,
        props: ServerProps | None,
        parent: Any,
        conversation_id: str | None = None,
        *,
        opened: SpanHandle | None = None,
        at_ms: float | None = None,
    ) -> None:
        """Begin the call's span (under `parent`, else the span or trace current here) and log it.

        `conversation_id` goes on the span as `gen_ai.conversation.id` and
        `session.id`. `opened` is the call's span begun earlier (a proxy
        begins it as the request goes out and describes the call once the
        answer is relayed): it is named and described instead of a new one.
        `at_ms` (monotonic, the recorder's clock) stamps the request's start
        event and log entry, default now. Raises ValueError only for a
        `parent` that is not a span or trace handle.
        """
        name = self._span_name(call)
        try:
            attrs = request_attributes(
                call.body,
                model=call.model,
                server_address=self.server_address,
                server_port=self.server_port,
                props=props,
                stream=call.stream,
                operation=call.operation,
            )
            if self.capture_content:
                budget = ContentBudget(self.max_content_chars)
                attrs[semconv.GEN_AI_INPUT_MESSAGES] = input_messages_json(call.messages, budget)
                if budget.truncated:
                    attrs[semconv.OBS_CONTENT_TRUNCATED] = True
            attrs = self.redact.attributes(attrs)
        except Exception as exc:
            self.telemetry_error("request attributes", exc)
            attrs = {semconv.GEN_AI_OPERATION_NAME: call.operation}
        if conversation_id is not None:
            shown = self.redact(conversation_id)
            attrs[semconv.GEN_AI_CONVERSATION_ID] = attrs[semconv.SESSION_ID] = shown
        wall = None if at_ms is None else self.wall_ms(at_ms)
        try:
            if opened is not None:
                call.handle = opened
                opened.update_name(name)
                opened.set_attributes(attrs)
            else:
                call.handle = self.tracer.begin_span(name, attrs, kind="client", parent=parent)
            call.handle.add_event(semconv.EVENT_REQUEST_START, timestamp=wall)
        except Exception as exc:
            if isinstance(exc, ValueError) and parent is not None and call.handle is None:
                raise  # a bad `parent` argument is the caller's mistake, not a telemetry failure
            self.telemetry_error("begin span", exc)
            if call.handle is None:
                call.fallback = create_span(name, _fallback_trace_id(), attributes=attrs, kind="client")
        self._log("info", f"{name} request started", call, {"stream": call.stream, "server": self.server_url},
                  timestamp=wall)  # fmt: skip

    def wall_ms(self, at_ms: float) -> float:
        """The epoch ms of `at_ms` on the recorder's monotonic clock."""
        return max(0.0, self.clock.time_ms() - (self.clock.monotonic_ms() - at_ms))

    def event(
        self, call: Call, name: str, attrs: Mapping[str, Any] | None = None, *, at_ms: float | None = None
    ) -> None:
        """Add an event to the call's span, stamped now or at monotonic `at_ms`; never raises."""
        if call.handle is None:
            return
        try:
            call.handle.add_event(name, attrs, timestamp=None if at_ms is None else self.wall_ms(at_ms))
        except Exception as exc:
            self.telemetry_error("span event", exc)

    def _log(
        self, level: str, message: str, call: Call, data: Mapping[str, Any], *, timestamp: float | None = None
    ) -> None:
        try:
            self.logger.log(level, message, data, trace_id=call.trace_id, span_id=call.span_id,
                            timestamp=timestamp)  # fmt: skip
        except Exception as exc:
            self.telemetry_error("logger", exc)

    def _record(
        self,
        call: Call,
        attrs: dict[str, Any],
        latency_ms: float,
        prompt: int,
        completion: int,
        *,
        cached: bool,
        error: bool,
        timings: Timings | None = None,
    ) -> float | None:
        """Record the call in the collector; put its cost and how it was priced in `attrs`.

        The cost stays off the span when the collector cannot price the call
        (it failed, or the price is per hour of server time and the server
        reported none: `obs.cost.pricing` = "unknown").
        """
        server_ms = _server_ms(timings)
        try:
            cost = self.collector.record_request(
                latency_ms,
                prompt,
                completion,
                cached=cached,
                error=error,
                model=call.model,
                ttft_ms=call.ttft_ms,
                timestamp=self.clock.time_ms() / 1000.0,
                server_ms=server_ms,
            )
        except Exception as exc:
            self.telemetry_error("metrics", exc)
            return None
        try:
            price_for = getattr(self.collector, "price_for", None)
            if price_for is not None:
                # The price in effect now: the one record_request applied unless it changed in between.
                pricing = price_for(call.model).charge(prompt, completion, server_ms, cached)[1]
                attrs[semconv.OBS_COST_PRICING] = pricing
                if pricing == semconv.PRICING_UNKNOWN:
                    return cost
            attrs[semconv.OBS_COST_USD] = cost
        except Exception as exc:
            self.telemetry_error("pricing", exc)
        return cost

    def _content_attributes(
        self, attrs: dict[str, Any], completion: ChatCompletion, *, partial: bool
    ) -> None:
        """The answer's text on the span, each attribute cut to `max_content_chars`."""
        output = ContentBudget(self.max_content_chars)
        attrs[semconv.GEN_AI_OUTPUT_MESSAGES] = output_messages_json(
            completion.content, completion.finish_reason, completion.role, output
        )
        truncated = output.truncated
        if partial:
            kept = ContentBudget(self.max_content_chars)
            attrs[semconv.OBS_PARTIAL_OUTPUT] = kept.take(completion.content)
            truncated = truncated or kept.truncated
        if truncated:
            attrs[semconv.OBS_CONTENT_TRUNCATED] = True

    def _span_name(self, call: Call) -> str:
        # The model name may come from the server's /props: redacted like everything it says.
        return self.redact(f"{call.operation} {call.model}" if call.model else call.operation)

    def _warn_usage(self, call: Call, usage: Usage) -> None:
        fields = ", ".join(usage.invalid)
        self._log(
            "warning",
            f"{self._span_name(call)}: the server reported usage out of range ({fields}); counted as 0",
            call,
            {"invalid": list(usage.invalid)},
        )

    def _end_span(self, call: Call, attrs: dict[str, Any], error: BaseException | None) -> Span:
        span: Span | None = None
        try:
            attrs = self.redact.attributes(attrs)
        except Exception as exc:
            self.telemetry_error("redaction", exc)
            attrs = {}
        if call.handle is not None:
            try:
                call.handle.set_attributes(attrs)
                span = call.handle.end(error=error) if error is not None else call.handle.end()
            except Exception as exc:
                self.telemetry_error("end span", exc)
                span = call.handle.span
        if span is None:
            base = call.fallback or create_span(call.operation, _fallback_trace_id(), kind="client")
            span = end_span(set_span_attributes(base, attrs), error=error)
        call.span = span
        return span

    def succeed(
        self,
        call: Call,
        completion: ChatCompletion,
        *,
        cached: bool = False,
        status: int | None = None,
        closed_early: bool = False,
    ) -> Span:
        """End the call as a success with `completion`: span, metrics record and log entry; never raises.

        `cached` marks an answer from the response cache (no tokens spent),
        `closed_early` a stream the caller stopped reading (`completion` holds
        what arrived). Returns the recorded span.
        """
        call.ended = True
        latency_ms = self.latency_ms(call)
        usage = completion.usage
        prompt = usage.prompt_tokens if usage is not None and not cached else 0
        completion_tokens = usage.completion_tokens if usage is not None and not cached else 0
        if usage is None and closed_early:
            completion_tokens = call.tokens_seen()
        attrs: dict[str, Any] = {}
        try:
            attrs = response_attributes(_without_usage(completion) if cached else completion)
            if cached:
                attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] = 0
                attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = 0
            attrs.update(
                derived_attributes(
                    latency_ms,
                    None if usage is None and not closed_early else completion_tokens,
                    None if cached else completion.timings,
                    ttft_ms=call.ttft_ms,
                    first_chunk_ms=call.first_chunk_ms,
                    gaps_ms=call.gaps,
                )
            )
            attrs[semconv.OBS_CACHE_HIT] = cached
            if call.stream:
                attrs[semconv.OBS_STREAM_CHUNKS] = call.acc.chunks
            if status is not None:
                attrs[semconv.HTTP_RESPONSE_STATUS_CODE] = status
            if closed_early:
                attrs[semconv.OBS_STREAM_CLOSED_EARLY] = True
            if self.capture_content:
                self._content_attributes(attrs, completion, partial=closed_early)
        except Exception as exc:
            self.telemetry_error("response attributes", exc)
        if usage is not None and usage.invalid and not cached:
            self._warn_usage(call, usage)
        cost = self._record(
            call, attrs, latency_ms, prompt, completion_tokens, cached=cached, error=False,
            timings=None if cached else completion.timings,
        )
        span = self._end_span(call, attrs, None)
        what = "closed early" if closed_early else ("answered from cache" if cached else "finished")
        self._log(
            "info",
            f"{span.name} {what}",
            call,
            {
                "latency_ms": latency_ms,
                "prompt_tokens": prompt,
                "completion_tokens": completion_tokens,
                "cost_usd": cost,
                "pricing": attrs.get(semconv.OBS_COST_PRICING),
                "cached": cached,
            },
        )
        return span

    def fail(self, call: Call, error: BaseException, *, status: int | None = None) -> Span:
        """End the call as a failure with `error`: error span, error in the metrics, error log entry.

        The text a stream received before failing stays on the span. Never
        raises; returns the recorded span.
        """
        call.ended = True
        latency_ms = self.latency_ms(call)
        partial = call.acc.text
        usage = call.acc.usage
        prompt = usage.prompt_tokens if usage is not None else 0
        completion_tokens = usage.completion_tokens if usage is not None else call.tokens_seen()
        attrs: dict[str, Any] = {}
        try:
            if isinstance(error, LLMServerError):
                attrs[semconv.ERROR_TYPE] = error.error_type
            attrs[semconv.OBS_CACHE_HIT] = False
            if status is not None:
                attrs[semconv.HTTP_RESPONSE_STATUS_CODE] = status
            if call.stream and call.acc.chunks:
                attrs.update(response_attributes(call.acc.to_completion()))
                attrs[semconv.OBS_STREAM_CHUNKS] = call.acc.chunks
            attrs.update(
                derived_attributes(
                    latency_ms,
                    None,
                    None,
                    ttft_ms=call.ttft_ms,
                    first_chunk_ms=call.first_chunk_ms,
                    gaps_ms=call.gaps,
                )
            )
            if partial and self.capture_content:
                so_far = ChatCompletion(id=None, model=None, content=partial)
                self._content_attributes(attrs, so_far, partial=True)
        except Exception as exc:
            self.telemetry_error("error attributes", exc)
        if usage is not None and usage.invalid:
            self._warn_usage(call, usage)
        self._record(call, attrs, latency_ms, prompt, completion_tokens, cached=False, error=True)
        span = self._end_span(call, attrs, error)
        message = self.redact(str(error)) or type(error).__name__
        self._log(
            "error",
            f"{span.name} failed: {message}",
            call,
            {
                "error_type": attrs.get(semconv.ERROR_TYPE, type(error).__name__),
                "latency_ms": latency_ms,
                "server": self.server_url,
                "partial_chars": len(partial),
            },
        )
        return span


def _without_usage(completion: ChatCompletion) -> ChatCompletion:
    return dataclasses.replace(completion, usage=None, timings=None)


def _server_ms(timings: Timings | None) -> float | None:
    """llama.cpp's time on the request (prompt + generation), None when unknown or out of range."""
    if timings is None:
        return None
    ms = timings.prompt_ms + timings.predicted_ms
    # A server's numbers are not trusted: beyond what the collector takes (one day), the time is unknown.
    if timings.prompt_ms < 0.0 or timings.predicted_ms < 0.0 or ms > _MAX_SERVER_MS:
        return None
    return ms


def _fallback_trace_id() -> str:
    return _FALLBACK_IDS.trace_id()
