"""One request's telemetry from start to end: its span handle, its times, its stream state.

`obs.llm._recording.CallRecorder` writes it; the clients, their streams and
`obs.llm.exchange.Exchange` carry it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from obs import semconv
from obs.llm.llama.responses import StreamAccumulator
from obs.trace.spans import Span

if TYPE_CHECKING:
    from obs.trace.handles import SpanHandle

__all__ = ["Call"]


class Call:
    """One request's telemetry from start to end: span, times, stream state. Ended exactly once."""

    __slots__ = (
        "acc",
        "body",
        "ended",
        "fallback",
        "first_chunk_ms",
        "gaps",
        "handle",
        "key",
        "last_token",
        "messages",
        "model",
        "operation",
        "span",
        "stream",
        "t0",
        "ttft_ms",
    )

    def __init__(
        self, model: str | None, body: dict[str, Any], messages: list[dict[str, Any]], stream: bool
    ) -> None:
        self.model = model
        self.operation = semconv.OPERATION_CHAT  # GenAI's operation name: the span's first word
        self.body = body
        self.messages = messages
        self.stream = stream
        self.handle: SpanHandle | None = None
        self.fallback: Span | None = None
        self.span: Span | None = None
        self.key: str | None = None
        self.t0: float | None = None
        self.ttft_ms: float | None = None
        self.first_chunk_ms: float | None = None
        self.last_token: float | None = None
        self.gaps: list[float] = []
        self.acc = StreamAccumulator()
        self.ended = False

    @property
    def trace_id(self) -> str | None:
        if self.handle is not None:
            return self.handle.trace_id
        return self.fallback.trace_id if self.fallback is not None else None

    @property
    def span_id(self) -> str | None:
        if self.handle is not None:
            return self.handle.span_id
        return self.fallback.id if self.fallback is not None else None

    def tokens_seen(self) -> int:
        """How many text deltas arrived: the token count of a stream whose usage never came."""
        return len(self.gaps) + (self.ttft_ms is not None)
