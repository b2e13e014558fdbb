"""The Tracer: spans that nest by themselves and become finished traces.

`with tracer.start_span("retrieve") as span:` starts a span as a child of the
span current in this context (a `contextvars` variable, so nesting follows
threads that copy the context and asyncio tasks, which always do). A span
started with nothing current begins a new trace; when that trace has no
running span left, it is finished, sampled, and handed to the store, the
collector and the sinks. `begin_trace` opens an explicit trace (a chat
conversation, say) that top-level spans join until `end_trace`.

The handles it hands out (`obs.trace.handles`) are mutable while a span runs;
ending one produces the immutable `Span` value the rest of obs reads; the
handle classes are importable from here too. Telemetry never breaks the host:
failures of the store, sinks, samplers and collector are logged and counted,
never raised; the application's own exceptions pass through unchanged.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar, runtime_checkable

from obs import semconv
from obs.clock import SYSTEM_CLOCK, Clock, SystemClock
from obs.trace.handles import SpanHandle, TraceHandle
from obs.trace.ids import IdGenerator, RandomIdGenerator, TraceParent, parse_traceparent
from obs.trace.spans import Span, SpanKind
from obs.trace.traces import Trace

__all__ = ["SpanHandle", "TraceHandle", "TraceSink", "Tracer"]

_log = logging.getLogger(__name__)
_DEFAULT_IDS = RandomIdGenerator()
_KINDS = ("internal", "client", "server", "producer", "consumer")
_F = TypeVar("_F", bound=Callable[..., Any])

TraceSink = Callable[[Trace], Any]


# What the tracer needs of samplers (obs.trace.sampling.head has the real ones and richer protocols).
@runtime_checkable
class _HeadDecider(Protocol):
    """Decides when a trace begins whether it is kept."""

    def should_sample(self, trace_id: str, parent_sampled: bool | None = None) -> bool:
        """True to keep the trace `trace_id`; `parent_sampled` comes from an incoming traceparent."""
        ...


@runtime_checkable
class _TailDecider(Protocol):
    """Decides when a trace ends whether a trace the head sampler let go is kept after all."""

    def should_keep(self, trace: Trace) -> bool:
        """True to keep the finished `trace`."""
        ...


class Tracer:
    """Makes spans that nest through `contextvars` and turns them into finished traces.

    Every finished trace is sampled (head decision at its start, tail decision
    at its end), and a kept one goes to `store.add(trace)` and then to each
    sink; `collector.record_sampling(decision)` is called for every trace.
    Failures there are logged (to Python logging and `logger`) and counted in
    `sink_errors` / `internal_errors`, never raised. Thread-safe.
    """

    def __init__(
        self,
        *,
        store: Any = None,
        collector: Any = None,
        logger: Any = None,
        sinks: Sequence[TraceSink] = (),
        clock: Clock = SYSTEM_CLOCK,
        id_generator: IdGenerator = _DEFAULT_IDS,
        service_name: str = "obs",
        head_sampler: _HeadDecider | None = None,
        tail_sampler: _TailDecider | None = None,
    ) -> None:
        """Configure where traces go; raises ValueError naming any argument that cannot work.

        store: has `add(trace)`; collector: has `record_sampling(decision, timestamp=None)`;
        logger: has `log(level, message, data=None, trace_id=None, span_id=None)`;
        sinks: callables taking a Trace; head_sampler: `should_sample(trace_id, parent_sampled)`;
        tail_sampler: `should_keep(trace)`; service_name: non-empty, recorded in each
        trace's metadata under `service.name`.
        """
        _require(store, "store", "add", "an object with add(trace), e.g. TraceStore")
        _require(
            collector, "collector", "record_sampling", "an object with record_sampling(), a MetricsCollector"
        )
        _require(logger, "logger", "log", "an object with log(level, message, ...), e.g. LLMLogger")
        _require(head_sampler, "head_sampler", "should_sample", "an object with should_sample(trace_id, ...)")
        _require(tail_sampler, "tail_sampler", "should_keep", "an object with should_keep(trace)")
        if not (callable(getattr(clock, "time_ms", None)) and callable(getattr(clock, "monotonic_ms", None))):
            raise ValueError(f"Tracer: clock must have time_ms() and monotonic_ms(), got {clock!r}")
        ids = id_generator
        if not (callable(getattr(ids, "trace_id", None)) and callable(getattr(ids, "span_id", None))):
            raise ValueError(f"Tracer: id_generator must have trace_id() and span_id(), got {id_generator!r}")
        if not isinstance(service_name, str) or not service_name:
            raise ValueError(f"Tracer: service_name must be a non-empty string, got {service_name!r}")
        sinks = tuple(sinks)
        for sink in sinks:
            if not callable(sink):
                raise ValueError(f"Tracer: sinks must be callables taking a Trace, got {sink!r}")
        self.store = store
        self.collector = collector
        self.logger = logger
        self.service_name = service_name
        self.head_sampler = head_sampler
        self.tail_sampler = tail_sampler
        self._clock = clock
        # Bound once: the hot path reads the clock several times per span. The system clock
        # is read through the C functions it wraps (raw nanoseconds / 1e6, the same values),
        # any other clock through its methods (raw milliseconds / 1.0).
        self._time_ms = clock.time_ms
        self._mono_ms = clock.monotonic_ms
        if type(clock) is SystemClock:
            self._wall_raw, self._mono_raw, self._clock_div = time.time_ns, time.perf_counter_ns, 1e6
        else:
            self._wall_raw, self._mono_raw, self._clock_div = clock.time_ms, clock.monotonic_ms, 1.0
        self._new_span_id = id_generator.span_id
        self._new_trace_id = id_generator.trace_id
        self._sinks: tuple[TraceSink, ...] = sinks
        self._current: contextvars.ContextVar[SpanHandle | TraceHandle | None] = contextvars.ContextVar(
            f"obs_tracer_{id(self):x}", default=None
        )
        self._counts_lock = threading.Lock()
        self.sink_errors = 0
        self.internal_errors = 0
        self.dropped_spans = 0

    @property
    def clock(self) -> Clock:
        """The clock spans and traces are timed with."""
        return self._clock

    @property
    def sinks(self) -> tuple[TraceSink, ...]:
        """The sinks each kept trace is handed to, in order."""
        return self._sinks

    def add_sink(self, sink: TraceSink) -> None:
        """Hand every kept trace from now on to `sink` as well."""
        if not callable(sink):
            raise ValueError(f"Tracer.add_sink: sink must be a callable taking a Trace, got {sink!r}")
        self._sinks = (*self._sinks, sink)

    def remove_sink(self, sink: TraceSink) -> None:
        """Stop handing traces to `sink`, compared by equality (so `items.append` works); absent is fine."""
        self._sinks = tuple(s for s in self._sinks if s != sink)

    # -- starting spans -------------------------------------------------------------------------

    def start_span(
        self,
        name: str,
        attributes: Mapping[str, Any] | None = None,
        kind: SpanKind = "internal",
        *,
        parent: SpanHandle | TraceHandle | TraceParent | None = None,
    ) -> SpanHandle:
        """Start a span to use as `with tracer.start_span(name) as span:`.

        Its parent is `parent` if given, else the current span; with no span
        current it joins the current explicit trace, else it begins a new trace.
        Inside the block it is the current span; it ends when the block exits.
        """
        # The hot path: a span joining a running trace is made here without helper calls.
        if not name or not isinstance(name, str):
            raise ValueError(f"Tracer: span name must be a non-empty string, got {name!r}")
        if kind not in _KINDS:
            raise ValueError(f"Tracer: span kind must be one of {_KINDS}, got {kind!r}")
        if parent is None:
            parent = self._current.get()
        cls = type(parent)
        if cls is SpanHandle:
            trace = parent._trace  # type: ignore[union-attr]
            parent_id = parent._id  # type: ignore[union-attr]
        elif cls is TraceHandle and not parent._ended:  # type: ignore[union-attr]
            trace = parent  # type: ignore[assignment]
            parent_id = trace._parent_span_id
        else:
            return self._start_trace(name, attributes, kind, parent)
        with trace._lock:
            if trace._ended:
                seq = -1  # too late to join: the span will be counted as dropped when it ends
            else:
                seq = len(trace._spans)
                trace._spans.append(None)
                trace._open += 1
        attrs = dict(attributes) if attributes else {}
        return SpanHandle(self, trace, seq, self._new_span_id(), parent_id, name, kind, attrs)

    def begin_span(
        self,
        name: str,
        attributes: Mapping[str, Any] | None = None,
        kind: SpanKind = "internal",
        parent: SpanHandle | TraceHandle | TraceParent | None = None,
    ) -> SpanHandle:
        """Start a span that is not made current and ends only by `handle.end(...)`.

        For work that outlives the block that started it (a streamed response).
        The parent is found as in `start_span`.
        """
        return self.start_span(name, attributes, kind, parent=parent)

    def _start_trace(
        self,
        name: str,
        attributes: Mapping[str, Any] | None,
        kind: SpanKind,
        parent: TraceHandle | TraceParent | None,
    ) -> SpanHandle:
        """Start the root span of a new implicit trace (continuing `parent` if it is a TraceParent)."""
        cls = type(parent)
        if cls is TraceParent:
            remote: TraceParent | None = parent  # type: ignore[assignment]
        elif parent is None or cls is TraceHandle:  # an ended explicit trace gathers no more spans
            remote = None
        else:
            raise ValueError(
                f"Tracer: parent must be a SpanHandle, TraceHandle or TraceParent, got {cls.__name__}"
            )
        if remote is None:
            trace_id, parent_span_id, parent_sampled = self._new_trace_id(), None, None
        else:
            trace_id, parent_span_id, parent_sampled = remote.trace_id, remote.span_id, remote.sampled
        sampled = True if self.head_sampler is None else self._head_decision(trace_id, parent_sampled)
        attrs = dict(attributes) if attributes else {}
        # An implicit trace takes its root span's time frame, set once the span has read the clock.
        trace = TraceHandle(
            self, trace_id, name, {semconv.SERVICE_NAME: self.service_name}, 0.0, 0.0,
            parent_span_id, sampled, False,
        )
        trace._open = 1
        trace._spans.append(None)
        span = SpanHandle(self, trace, 0, self._new_span_id(), parent_span_id, name, kind, attrs)
        trace._start_time = span._start_time
        trace._start_mono = span._start_mono
        return span

    def _head_decision(self, trace_id: str, parent_sampled: bool | None) -> bool:
        """Ask the head sampler; a sampler that fails keeps the trace rather than lose it."""
        try:
            return bool(self.head_sampler.should_sample(trace_id, parent_sampled=parent_sampled))  # type: ignore[union-attr]
        except Exception as exc:
            self._internal_error("head sampler failed; keeping the trace", exc, trace_id)
            return True

    # -- explicit traces ------------------------------------------------------------------------

    def begin_trace(
        self,
        name: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        traceparent: str | None = None,
        parent_context: TraceParent | None = None,
    ) -> TraceHandle:
        """Begin an explicit trace and make it active in the current context.

        Top-level spans started while it is active (in this context, in tasks
        and copied contexts made from it, or with `parent=handle`) join it,
        until `end_trace`. `traceparent` (a header value) or `parent_context`
        continues an incoming W3C context: its trace id is reused, its span
        becomes the parent of top-level spans and its sampled flag is passed
        to the head sampler. A malformed `traceparent` is logged and ignored
        (a new trace starts), as W3C Trace Context asks.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"begin_trace: name must be a non-empty string, got {name!r}")
        if traceparent is not None and parent_context is not None:
            raise ValueError("begin_trace: give traceparent or parent_context, not both")
        if parent_context is not None and not isinstance(parent_context, TraceParent):
            raise ValueError(
                f"begin_trace: parent_context must be a TraceParent, got {type(parent_context).__name__}"
            )
        remote = parent_context
        if traceparent is not None:
            try:
                remote = parse_traceparent(traceparent)
            except ValueError as exc:
                self._internal_error("ignored a malformed traceparent; starting a new trace", exc, None)
        if remote is None:
            trace_id, parent_span_id, parent_sampled = self._new_trace_id(), None, None
        else:
            trace_id, parent_span_id, parent_sampled = remote.trace_id, remote.span_id, remote.sampled
        sampled = True if self.head_sampler is None else self._head_decision(trace_id, parent_sampled)
        meta = {semconv.SERVICE_NAME: self.service_name}
        if metadata:
            meta.update(metadata)
        handle = TraceHandle(
            self, trace_id, name, meta, self._time_ms(), self._mono_ms(), parent_span_id, sampled, True
        )
        handle._prev = self._current.get()
        self._current.set(handle)
        return handle

    def end_trace(self, handle: TraceHandle) -> Trace:
        """Finish `handle`'s trace with the spans ended in it, hand it on, and return it.

        The trace is sampled and sent to the store and sinks like any other.
        Spans still running are left out (logged); if they end later they are
        counted in `dropped_spans`. Ending a trace twice raises ValueError.
        """
        if not isinstance(handle, TraceHandle):
            raise ValueError(f"end_trace: expected a TraceHandle, got {type(handle).__name__}")
        with handle._lock:
            if handle._ended:
                raise ValueError(f"end_trace: trace {handle._name!r} ({handle._trace_id}) already ended")
            handle._ended = True
            running = handle._open
        if self._current.get() is handle:
            self._current.set(handle._prev)
        if running:
            _log.warning(
                "obs: trace %r (%s) ended with %d span(s) still running; they are left out",
                handle._name, handle._trace_id, running,
            )
        return self._finish(handle)

    @contextmanager
    def activate(self, handle: SpanHandle | TraceHandle) -> Iterator[SpanHandle | TraceHandle]:
        """Make `handle` current for a block without ending it on exit.

        For a manual span (`begin_span`) under which child spans should nest,
        or an explicit trace carried to another context (a later request of
        the same conversation).
        """
        if not isinstance(handle, SpanHandle | TraceHandle):
            raise ValueError(f"activate: expected a SpanHandle or TraceHandle, got {type(handle).__name__}")
        previous = self._current.get()
        token = self._current.set(handle)
        try:
            yield handle
        finally:
            try:
                self._current.reset(token)
            except (ValueError, RuntimeError):
                self._current.set(previous)

    def wrap(self, fn: _F) -> _F:
        """Return `fn` bound to the span or trace current now, for running in another thread.

        Threads start with an empty context; a wrapped function makes the
        captured span (or trace) current while it runs, so spans it starts
        nest where the caller was.
        """
        captured = self._current.get()
        var = self._current

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            token = var.set(captured)
            try:
                return fn(*args, **kwargs)
            finally:
                var.reset(token)

        return run  # type: ignore[return-value]

    # -- reading the context --------------------------------------------------------------------

    def current_span(self) -> SpanHandle | None:
        """The span current in this context, or None."""
        current = self._current.get()
        return current if type(current) is SpanHandle else None

    def current_trace(self) -> TraceHandle | None:
        """The running trace of the current span or explicit trace, or None."""
        current = self._current.get()
        if type(current) is SpanHandle:
            return current._trace
        if type(current) is TraceHandle and not current._ended:
            return current
        return None

    def current_trace_id(self) -> str | None:
        """The id of the current span's trace or of the active explicit trace, or None."""
        trace = self.current_trace()
        return None if trace is None else trace._trace_id

    def traceparent(self) -> str | None:
        """The W3C `traceparent` header for the current span, or None when no span is current."""
        span = self.current_span()
        if span is None:
            return None
        try:
            return span.traceparent()
        except ValueError as exc:  # ids from a custom generator that are not W3C ids
            self._internal_error("cannot format traceparent", exc, span.trace_id)
            return None

    # -- finishing ------------------------------------------------------------------------------

    def _finish(self, handle: TraceHandle) -> Trace:
        # Called exactly once per trace, after handle._ended was set under its lock: sinks may
        # take their time or start spans of their own.
        trace = handle._freeze()
        decision = "head"
        if not handle._sampled:
            decision = "dropped"
            if self.tail_sampler is not None:
                try:
                    if self.tail_sampler.should_keep(trace):
                        decision = "tail"
                except Exception as exc:  # a broken sampler keeps the trace rather than lose it
                    decision = "tail"
                    self._internal_error("tail sampler failed; keeping the trace", exc, trace.id)
        if decision != "dropped":
            if self.store is not None:
                try:
                    self.store.add(trace)
                except Exception as exc:
                    self._sink_error("store.add", exc, trace.id)
            for sink in self._sinks:
                try:
                    sink(trace)
                except Exception as exc:
                    self._sink_error(repr(sink), exc, trace.id)
        if self.collector is not None:
            try:
                self.collector.record_sampling(decision)
            except Exception as exc:
                self._internal_error("collector.record_sampling failed", exc, trace.id)
        return trace

    def _late_span(self, span: Span) -> None:
        with self._counts_lock:
            self.dropped_spans += 1
        self._report(
            "warn",
            f"span {span.name!r} ended after its trace was finished; dropped",
            None, span.trace_id, span.id,
        )

    def _sink_error(self, where: str, exc: BaseException, trace_id: str) -> None:
        with self._counts_lock:
            self.sink_errors += 1
        self._report("error", f"trace sink {where} failed: {type(exc).__name__}: {exc}", exc, trace_id, None)

    def _internal_error(self, what: str, exc: BaseException, trace_id: str | None) -> None:
        with self._counts_lock:
            self.internal_errors += 1
        self._report("error", f"{what}: {type(exc).__name__}: {exc}", exc, trace_id, None)

    def _report(
        self, level: str, message: str, exc: BaseException | None, trace_id: str | None, span_id: str | None
    ) -> None:
        _log.log(logging.ERROR if level == "error" else logging.WARNING, "obs: %s", message, exc_info=exc)
        if self.logger is not None:
            try:
                self.logger.log(level, message, trace_id=trace_id, span_id=span_id)
            except Exception:  # the logger failing must not fail the caller either
                _log.exception("obs: logger failed while reporting a tracer problem")

    def __repr__(self) -> str:
        return f"Tracer(service_name={self.service_name!r}, sinks={len(self._sinks)})"


def _require(value: Any, argument: str, method: str, allowed: str) -> None:
    if value is not None and not callable(getattr(value, method, None)):
        raise ValueError(f"Tracer: {argument} must be None or {allowed}; got {value!r}")
