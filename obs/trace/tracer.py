"""The Tracer: spans that nest by themselves and become finished traces.

`with tracer.start_span("retrieve") as span:` starts a span as a child of the
span current in this context (a `contextvars` variable, so nesting follows
threads that copy the context and asyncio tasks, which always do). A span
started with nothing current begins a new trace; when that trace has no
running span left, it is finished, sampled, and handed to every processor
(`obs.trace.processors`; the store is one of them) while the collector counts
the sampling decision. `begin_trace` opens an explicit trace (an agent's
steps, say) that top-level spans join until `end_trace`.

The handles it hands out (`obs.trace.handles`, `obs.trace.core`) are mutable
while a span runs; ending one produces the immutable `Span` value the rest
of obs reads. A tracer with processors flushes them at interpreter exit, so
a script that ends without `shutdown()` loses nothing. Telemetry never
breaks the host: failures of processors, samplers and the collector are
logged and counted, never raised; the application's own exceptions pass
through unchanged.
"""

from __future__ import annotations

import atexit
import contextvars
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from obs import semconv
from obs.clock import SYSTEM_CLOCK, Clock, SystemClock
from obs.trace.core import TraceHandle, TracerCore, begin_explicit_trace
from obs.trace.handles import SpanHandle, start_child_span, start_root_span
from obs.trace.ids import IdGenerator, RandomIdGenerator, TraceParent, parse_traceparent
from obs.trace.processors import SimpleProcessor, StoreExporter, TraceProcessor, check_timeout
from obs.trace.sampling.deciders import HeadDecider, TailDecider
from obs.trace.spans import Span, SpanKind
from obs.trace.traces import Trace

__all__ = ["Tracer"]

_log = logging.getLogger(__name__)
_DEFAULT_IDS = RandomIdGenerator()
_KINDS = ("internal", "client", "server", "producer", "consumer")
_F = TypeVar("_F", bound=Callable[..., Any])

# Every tracer that has processors, flushed and shut down at interpreter exit (weakly held).
_LIVE: weakref.WeakSet[Tracer] = weakref.WeakSet()
_EXIT_TIMEOUT_S = 10.0


def _shutdown_all_at_exit() -> None:
    for tracer in list(_LIVE):
        try:
            tracer.shutdown(_EXIT_TIMEOUT_S)
        except Exception:  # at exit there is nobody left to raise to
            _log.exception("obs: a tracer failed to shut down at exit")


atexit.register(_shutdown_all_at_exit)


class Tracer:
    """Makes spans that nest through `contextvars` and turns them into finished traces.

    Every finished trace is sampled (head decision at its start, tail decision
    at its end), and a kept one goes to each processor in order (`store=`
    is short for a `SimpleProcessor(StoreExporter(store))` placed first);
    `collector.record_sampling(decision)` is called for every trace, kept or
    not. Failures there are logged (to Python logging and `logger`) and
    counted in `processor_errors` / `internal_errors`, never raised. Call
    `shutdown()` when done (it also runs at interpreter exit). Thread-safe.
    """

    def __init__(
        self,
        *,
        store: Any = None,
        collector: Any = None,
        logger: Any = None,
        processors: Sequence[TraceProcessor] = (),
        clock: Clock = SYSTEM_CLOCK,
        id_generator: IdGenerator = _DEFAULT_IDS,
        service_name: str = "obs",
        head_sampler: HeadDecider | None = None,
        tail_sampler: TailDecider | None = None,
    ) -> None:
        """Configure where traces go; raises ValueError naming any argument that cannot work.

        store: has `add(trace)`; collector: has `record_sampling(decision, timestamp=None)`;
        logger: has `log(level, message, data=None, trace_id=None, span_id=None)`;
        processors: TraceProcessors (`on_end`, `force_flush`, `shutdown`); head_sampler:
        `should_sample(trace_id, parent_sampled)`; tail_sampler: `should_keep(trace)`;
        service_name: non-empty, recorded in each trace's metadata under `service.name`.
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
        processors = tuple(processors)
        for processor in processors:
            _check_processor(processor, "processors")
        self.store = store
        self.collector = collector
        self.logger = logger
        self.service_name = service_name
        self.head_sampler = head_sampler
        self.tail_sampler = tail_sampler
        self._clock = clock
        self._new_trace_id = id_generator.trace_id
        # The system clock is read through the C functions it wraps (raw nanoseconds / 1e6, the
        # same values; the hot path reads the clock several times per span), any other clock
        # through its methods (raw milliseconds / 1.0).
        if type(clock) is SystemClock:
            wall_raw, mono_raw, div = time.time_ns, time.perf_counter_ns, 1e6
        else:
            wall_raw, mono_raw, div = clock.time_ms, clock.monotonic_ms, 1.0
        self._current: contextvars.ContextVar[SpanHandle | TraceHandle | None] = contextvars.ContextVar(
            f"obs_tracer_{id(self):x}", default=None
        )
        self._core = TracerCore(
            wall_raw=wall_raw, mono_raw=mono_raw, clock_div=div, time_ms=clock.time_ms,
            current=self._current, new_span_id=id_generator.span_id,
            finish=self._finish, late_span=self._late_span,
        )
        if store is not None:
            processors = (SimpleProcessor(StoreExporter(store)), *processors)
        self._processors: tuple[TraceProcessor, ...] = ()
        self._counts_lock = threading.Lock()
        self.processor_errors = 0
        self.internal_errors = 0
        self.dropped_spans = 0
        self._shut_down = False
        for processor in processors:
            self.add_processor(processor)

    @property
    def clock(self) -> Clock:
        """The clock spans and traces are timed with."""
        return self._clock

    @property
    def processors(self) -> tuple[TraceProcessor, ...]:
        """The processors each kept trace is handed to, in order."""
        return self._processors

    def add_processor(self, processor: TraceProcessor) -> None:
        """Hand every kept trace from now on to `processor` as well (after those added before).

        From then on the processor is flushed and shut down with the tracer,
        at the latest at interpreter exit. ValueError if it lacks `on_end`,
        `force_flush` or `shutdown`, or if the tracer was shut down.
        """
        _check_processor(processor, "add_processor")
        if self._shut_down:
            raise ValueError("Tracer.add_processor: this tracer was shut down; make a new Tracer")
        self._processors = (*self._processors, processor)
        _LIVE.add(self)

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Ask every processor to export what it holds; True if all finished within `timeout_s` seconds."""
        timeout = check_timeout("Tracer.force_flush", "timeout_s", timeout_s)
        return self._each_processor("force_flush", timeout)

    def flush_soon(self) -> None:
        """Ask each processor that can (a BatchProcessor) and the logger's stream to export what waits
        now, at a moment when that costs least; never waits or raises (see `processor_errors`)."""
        for processor in self._processors:
            ask = getattr(processor, "flush_soon", None)
            if callable(ask):
                try:
                    ask()
                except Exception as exc:
                    self._processor_error(f"{processor!r}.flush_soon", exc, None)
        ask_logger = getattr(self.logger, "flush_soon", None)
        if callable(ask_logger):
            ask_logger()

    def shutdown(self, timeout_s: float = 30.0) -> bool:
        """Flush and shut down every processor (once); True if all finished within `timeout_s` seconds.

        Traces that finish afterwards are still counted by the collector but
        reach no processor. Calling it again returns True at once.
        """
        timeout = check_timeout("Tracer.shutdown", "timeout_s", timeout_s)
        if self._shut_down:
            return True
        self._shut_down = True
        _LIVE.discard(self)
        done = self._each_processor("shutdown", timeout)
        self._processors = ()
        return done

    def _each_processor(self, method: str, timeout_s: float) -> bool:
        """Call `method(remaining)` on each processor within one deadline; never raises."""
        deadline = time.monotonic() + timeout_s
        ok = True
        for processor in self._processors:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                ok = bool(getattr(processor, method)(timeout_s=remaining)) and ok
            except Exception as exc:
                ok = False
                self._processor_error(f"{processor!r}.{method}", exc, None)
        return ok

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
        if not name or not isinstance(name, str):
            raise ValueError(f"Tracer: span name must be a non-empty string, got {name!r}")
        if kind not in _KINDS:
            raise ValueError(f"Tracer: span kind must be one of {_KINDS}, got {kind!r}")
        if parent is None:
            parent = self._current.get()
        cls = type(parent)
        if cls is SpanHandle or cls is TraceHandle:
            span = start_child_span(
                self._core, parent, name, kind, dict(attributes) if attributes else {}  # type: ignore[arg-type]
            )
            if span is not None:
                return span
        return self._start_trace(name, attributes, kind, parent)  # type: ignore[arg-type]

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
        return start_root_span(
            self._core, trace_id, parent_span_id, sampled, {semconv.SERVICE_NAME: self.service_name},
            name, kind, dict(attributes) if attributes else {},
        )

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
        return begin_explicit_trace(self._core, trace_id, name, meta, parent_span_id, sampled)

    def end_trace(self, handle: TraceHandle) -> Trace:
        """Finish `handle`'s trace with the spans ended in it, hand it on, and return it.

        The trace is sampled and sent to the processors like any other.
        Spans still running are left out (logged); if they end later they are
        counted in `dropped_spans`. Ending a trace twice raises ValueError.
        """
        if not isinstance(handle, TraceHandle):
            raise ValueError(f"end_trace: expected a TraceHandle, got {type(handle).__name__}")
        return handle.end()

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
        """Return `fn` bound to the context of now, for running in another thread.

        Threads start with an empty context; a wrapped function runs in a copy
        of the context captured here (a fresh copy per call, so calls on
        several threads at once do not share one), so spans it starts nest
        where the caller was, and every other context value (an active
        conversation, another tracer's span) comes along too.
        """
        captured = contextvars.copy_context()

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            return captured.copy().run(fn, *args, **kwargs)

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
            return current.trace_handle
        if type(current) is TraceHandle and not current.ended:
            return current
        return None

    def current_trace_id(self) -> str | None:
        """The id of the current span's trace or of the active explicit trace, or None."""
        trace = self.current_trace()
        return None if trace is None else trace.trace_id

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

    def _finish(self, trace: Trace, sampled: bool) -> None:
        # Called exactly once per trace by its handle, outside any lock: processors may take
        # their time or start spans of their own.
        decision = "head"
        if not sampled:
            decision = "dropped"
            if self.tail_sampler is not None:
                try:
                    if self.tail_sampler.should_keep(trace):
                        decision = "tail"
                except Exception as exc:  # a broken sampler keeps the trace rather than lose it
                    decision = "tail"
                    self._internal_error("tail sampler failed; keeping the trace", exc, trace.id)
        if decision != "dropped":
            for processor in self._processors:
                try:
                    processor.on_end(trace)
                except Exception as exc:
                    self._processor_error(f"{processor!r}.on_end", exc, trace.id)
        if self.collector is not None:
            try:
                self.collector.record_sampling(decision)
            except Exception as exc:
                self._internal_error("collector.record_sampling failed", exc, trace.id)

    def _late_span(self, span: Span) -> None:
        with self._counts_lock:
            self.dropped_spans += 1
        self._report(
            "warn",
            f"span {span.name!r} ended after its trace was finished; dropped",
            None, span.trace_id, span.id,
        )

    def _processor_error(self, where: str, exc: BaseException, trace_id: str | None) -> None:
        with self._counts_lock:
            self.processor_errors += 1
        message = f"trace processor {where} failed: {type(exc).__name__}: {exc}"
        self._report("error", message, exc, trace_id, None)

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
        return f"Tracer(service_name={self.service_name!r}, processors={len(self._processors)})"


def _require(value: Any, argument: str, method: str, allowed: str) -> None:
    if value is not None and not callable(getattr(value, method, None)):
        raise ValueError(f"Tracer: {argument} must be None or {allowed}; got {value!r}")


def _check_processor(processor: object, where: str) -> None:
    missing = [m for m in ("on_end", "force_flush", "shutdown") if not callable(getattr(processor, m, None))]
    if missing:
        raise ValueError(
            f"Tracer: {where} must hold TraceProcessors (on_end, force_flush, shutdown), e.g. "
            f"SimpleProcessor(exporter) or BatchProcessor(exporter); {processor!r} lacks {', '.join(missing)}"
        )
