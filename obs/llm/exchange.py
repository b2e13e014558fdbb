"""Recording a call another program made to llama-server, from the bytes that went by.

`Exchange` is the seam a proxy drives. It begins the call from the raw
request (its route, headers and body bytes), is told when the request went
out (`sent`) and when the answer's status came (`response`), is fed the
answer's bytes as they pass (`feed`), and records the call through a
`CallRecorder` exactly as `InstrumentedClient` does: the span with GenAI
attributes and llama.cpp timings, time to first token and the gaps between
tokens, tokens and cost in the metrics, the log entries, and the same
`obs.llm.errors` for failures. It ends once: when the answer is complete
(`end`), breaks (`fail`), or the caller leaves (`client_gone`).

It does no I/O and never raises: a failure inside it is counted in the
recorder's `telemetry_errors` and ends the recording, never the answer.
Routes: `/v1/chat/completions` (and `/chat/completions`), `/v1/completions`
(and `/completions`) and llama-server's native `/completion`, streamed or not.
The conversation comes from the `X-Conversation-Id` header, else Open
WebUI's `X-OpenWebUI-Chat-Id`, else the OpenAI `user` field; an incoming
`traceparent` makes the span a child of the caller's span.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from obs import semconv
from obs.llm._call_state import Call
from obs.llm._limits import LineSplitter, TooLarge
from obs.llm._recording import CallRecorder
from obs.llm._server_errors import ServerErrors
from obs.llm.conversation import check_conversation_id
from obs.llm.errors import BadResponse, ClientDisconnected
from obs.llm.llama.completions import (
    OPERATION_TEXT_COMPLETION,
    NativeStreamAccumulator,
    TextStreamAccumulator,
    parse_native_completion,
    parse_text_completion,
    with_usage_from_timings,
)
from obs.llm.llama.props import ServerProps
from obs.llm.llama.responses import (
    DONE,
    ChatCompletion,
    ResponseFormatError,
    StreamAccumulator,
    StreamError,
    parse_chat_response,
    parse_sse_line,
)
from obs.llm.stream import take_chunk
from obs.trace.ids import TraceParent, parse_traceparent
from obs.trace.spans import Span

if TYPE_CHECKING:
    from obs.trace.handles import SpanHandle
    from obs.trace.tracer import Tracer

__all__ = ["CONVERSATION_HEADERS", "ROUTES", "Exchange", "Route", "conversation_of", "open_span", "route_of"]

# Headers naming the conversation a request belongs to, first found wins; then the body's `user`.
CONVERSATION_HEADERS = ("x-conversation-id", "x-openwebui-chat-id")
# An error body is quoted, not parsed whole: this much of it is enough (as in the client).
_ERROR_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Route:
    """One recorded endpoint: its GenAI operation, how its answer and its stream chunks are read."""

    operation: str
    parse: Callable[[Any], ChatCompletion]
    accumulator: Callable[[], StreamAccumulator]
    what: str
    prompt_key: str | None = None  # the body key holding a text prompt; None for chat messages


_CHAT = Route(semconv.OPERATION_CHAT, parse_chat_response, StreamAccumulator, "a chat completion")
_TEXT = Route(OPERATION_TEXT_COMPLETION, parse_text_completion, TextStreamAccumulator, "a text completion",
              "prompt")  # fmt: skip
_NATIVE = Route(OPERATION_TEXT_COMPLETION, parse_native_completion, NativeStreamAccumulator,
                "a llama-server completion", "prompt")  # fmt: skip

ROUTES: Mapping[str, Route] = {
    "/v1/chat/completions": _CHAT,
    "/chat/completions": _CHAT,
    "/v1/completions": _TEXT,
    "/completions": _TEXT,
    "/completion": _NATIVE,
}


def route_of(method: str, path: str) -> Route | None:
    """The recorded route a request goes to (POST to a path in ROUTES), None for any other."""
    if method != "POST":
        return None
    return ROUTES.get(path.rstrip("/") or "/")


def conversation_of(headers: Mapping[str, str], body: Mapping[str, Any]) -> str | None:
    """The conversation id a request names (see the module docstring); None if none is usable.

    `headers` has lowercase names. An id that is not 1 to 256 printable
    characters is ignored, as a malformed `traceparent` is.
    """
    candidates = [headers.get(name) for name in CONVERSATION_HEADERS]
    candidates.append(body.get("user"))
    for value in candidates:
        if isinstance(value, str) and value.strip():
            try:
                return check_conversation_id(value.strip())
            except ValueError:
                continue
    return None


def _parent(header: str | None) -> TraceParent | None:
    if not header:
        return None
    try:
        return parse_traceparent(header)
    except ValueError:  # W3C Trace Context: a malformed traceparent starts a new trace
        return None


def open_span(tracer: Tracer, route: Route, traceparent: str | None) -> SpanHandle:
    """Begin the span of a call to `route` now, before anything of it is read: the cheap part of
    beginning, for a relay that records the call once it has passed (`Exchange.begin(opened=...)`).

    Named by the route's operation until then; a child of `traceparent`
    when that is a valid W3C header. Raises what `Tracer.begin_span` raises.
    """
    return tracer.begin_span(route.operation, None, kind="client", parent=_parent(traceparent))


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _messages(route: Route, data: Mapping[str, Any]) -> list[dict[str, Any]]:
    if route.prompt_key is None:
        messages = data.get("messages")
        return [dict(m) for m in messages if isinstance(m, Mapping)] if isinstance(messages, list) else []
    prompt = data.get(route.prompt_key)
    if prompt is None:
        return []
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False)
    return [{"role": "user", "content": text}]


def _decoder(encoding: str | None) -> Any:
    """A zlib decompressor for a gzip or deflate body, None for an uncompressed one."""
    encoding = (encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header, told apart by zlib
    raise ValueError(f"the answer is compressed with {encoding!r}, which obs cannot read")


class Exchange:
    """One call seen on the wire, recorded when it ends (see the module docstring). Not thread-safe:
    drive it from the one task that relays the call."""

    __slots__ = (
        "_body",
        "_charset",
        "_content_type",
        "_decode",
        "_done",
        "_lines",
        "_pending",
        "_pending_bytes",
        "_sse",
        "call",
        "errors",
        "recorder",
        "route",
        "status",
    )

    def __init__(self, recorder: CallRecorder, errors: ServerErrors, route: Route, call: Call) -> None:
        """Internal: use `Exchange.begin`."""
        self.recorder = recorder
        self.errors = errors
        self.route = route
        self.call = call
        self.status: int | None = None
        self._sse = False
        self._done = False
        self._lines: LineSplitter | None = None
        self._pending: list[tuple[float, bytes]] = []
        self._pending_bytes = 0
        self._body = bytearray()
        self._decode: Any = None
        self._content_type: str | None = None
        self._charset: str | None = None

    @classmethod
    def begin(
        cls,
        recorder: CallRecorder,
        errors: ServerErrors,
        route: Route,
        body: bytes,
        headers: Mapping[str, str],
        props: ServerProps | None = None,
        *,
        opened: SpanHandle | None = None,
        at_ms: float | None = None,
    ) -> Exchange:
        """Begin recording a request to `route` with these body bytes and (lowercase-named) headers.

        The model is the body's `model`, else the one `props` names. A body
        that is not a JSON object is recorded as an empty request (the
        server's refusal then ends the call). `opened` is the call's span
        from `open_span` (then the headers' `traceparent` was its parent),
        `at_ms` the request's start (recorder's clock): see `CallRecorder.begin`.
        """
        data = _json_object(body)
        model = data.get("model")
        if not isinstance(model, str) or not model:
            model = props.model_name if props is not None else None
        call = Call(model, data, _messages(route, data), data.get("stream") is True)
        call.operation = route.operation
        call.acc = route.accumulator()
        parent = None if opened is not None else _parent(headers.get("traceparent"))
        recorder.begin(call, props, parent, conversation_of(headers, data), opened=opened, at_ms=at_ms)
        return cls(recorder, errors, route, call)

    # -- what the relay reports -------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        """True once the call has been recorded."""
        return self.call.ended

    @property
    def span(self) -> Span | None:
        """The recorded span once the call has ended, else None."""
        return self.call.span

    def traceparent(self) -> str | None:
        """The W3C `traceparent` naming this call's span (to answer the caller with); None if unknown."""
        try:
            return self.call.handle.traceparent() if self.call.handle is not None else None
        except Exception as exc:  # ids that are not W3C ids
            self.recorder.telemetry_error("traceparent", exc)
            return None

    def now_ms(self) -> float:
        """The recorder's monotonic clock now: the time to give `feed` for bytes that just arrived."""
        return self.recorder.clock.monotonic_ms()

    def sent(self, at_ms: float | None = None) -> None:
        """The request went out now (or at `at_ms`, recorder's clock): latency and TTFT count from then."""
        self.call.t0 = self.now_ms() if at_ms is None else at_ms

    def response(
        self, status: int, content_type: str | None, content_encoding: str | None = None,
        charset: str | None = None,
    ) -> None:
        """The answer's status and headers arrived (`charset` decodes an error body's text)."""
        self.status = status
        self._content_type = content_type
        self._charset = charset
        try:
            self._sse = self.call.stream and status < 400 and "event-stream" in (content_type or "")
            if self._sse:
                self._lines = LineSplitter(self.errors.limits.max_response_bytes)
            self._decode = _decoder(content_encoding)
        except Exception as exc:
            self._broken("answer headers", exc)

    def feed(self, chunk: bytes, now_ms: float | None = None) -> None:
        """Take the next bytes of the answer, which arrived at `now_ms` (recorder's clock; default now).

        A stream's bytes are kept with their arrival times and read when the
        call ends (or past the byte cap): relaying a chunk costs no parsing.
        """
        if self.call.ended or not chunk:
            return
        now = self.now_ms() if now_ms is None else now_ms
        if self._lines is None:
            self._read([(now, chunk)])
            return
        self._pending.append((now, chunk))
        self._pending_bytes += len(chunk)
        if self._pending_bytes > self.errors.limits.max_response_bytes:
            self._drain()

    def end(self) -> Span | None:
        """The answer is complete: record the call (success, or the failure the answer was); the span."""
        call = self.call
        if call.ended:
            return call.span
        try:
            self._end()
        except Exception as exc:
            self._broken("end of the answer", exc)
        return call.span

    def fail(self, error: BaseException) -> Span | None:
        """The call failed with `error` (no answer, or the answer broke off): record it; the span.

        What the stream brought before is read first, so its text stays on the span.
        """
        self._drain()
        if not self.call.ended:
            self.recorder.fail(self.call, error, status=self.status)
        return self.call.span

    def cut(self, exc: httpx.HTTPError) -> Span | None:
        """The connection to the server broke while the answer was arriving (`exc` from httpx).

        Recorded as the client records it: StreamInterrupted for a stream
        (the text so far kept on the span), ServerUnavailable for a body.
        """
        self._drain()
        if self.call.ended:
            return self.call.span
        call, errors = self.call, self.errors
        if self._sse:
            return self.fail(errors.stream_cut(exc, call.acc.chunks, call.acc.text))
        return self.fail(errors.transport(exc))

    def client_gone(self) -> Span | None:
        """The caller left before the whole answer was relayed; the request to the server was stopped.

        A stream that had begun is recorded as closed early (as
        `ChatStream.close()` records it); a call with no answer yet, or a
        whole body cut short, as a `ClientDisconnected` failure.
        """
        call = self.call
        self._drain()
        if call.ended:
            return call.span
        try:
            if self._done:
                self._end()
            elif self._sse and call.acc.chunks:
                completion = with_usage_from_timings(call.acc.to_completion())
                self.recorder.succeed(call, completion, closed_early=True)
            else:
                seconds = self.recorder.latency_ms(call) / 1000.0
                what = "any answer" if self.status is None else "the whole answer"
                self.fail(ClientDisconnected(
                    f"the caller disconnected after {seconds:.3g} s, before {what} came from "
                    f"{self.errors.url}; the request to it was stopped (a caller's own timeout runs out "
                    "like this on a slow or stuck server)",
                    url=self.errors.url,
                ))  # fmt: skip
        except Exception as exc:
            self._broken("caller gone", exc)
        return call.span

    # -- reading ----------------------------------------------------------------------------------

    def _drain(self) -> None:
        """Read the stream's bytes kept so far, each piece at the time it arrived."""
        if self._pending:
            pending, self._pending, self._pending_bytes = self._pending, [], 0
            self._read(pending)

    def _read(self, pieces: list[tuple[float, bytes]]) -> None:
        try:
            for now, chunk in pieces:
                if self.call.ended:
                    return
                data = self._decode.decompress(chunk) if self._decode is not None else chunk
                if self._lines is not None:
                    self._take_lines(self._lines.feed(data), now)
                else:
                    self._keep(data)
        except TooLarge as exc:
            self.fail(self.errors.too_large(exc.limit, stream=self._sse))
        except Exception as exc:
            self._broken("answer bytes", exc)

    def _keep(self, data: bytes) -> None:
        error_body = self.status is not None and self.status >= 400
        limit = _ERROR_BODY_BYTES if error_body else self.errors.limits.max_response_bytes
        room = limit - len(self._body)
        if len(data) > room:
            if not error_body:
                raise TooLarge(limit)
            data = data[: max(room, 0)]  # an error body is quoted, not read whole
        self._body += data

    def _take_lines(self, lines: list[str], now: float) -> None:
        call, errors = self.call, self.errors
        for line in lines:
            if self._done or call.ended:
                return  # after the end of the stream, nothing more counts
            try:
                item = parse_sse_line(line)
            except ResponseFormatError:
                self.fail(errors.stream_line(line))
                return
            if item is None:
                continue
            if item is DONE:
                self._done = True
            elif isinstance(item, StreamError):
                self.fail(errors.stream_event(item))
            else:
                take_chunk(self.recorder, call, item, now)
                if isinstance(call.acc, NativeStreamAccumulator) and call.acc.done:
                    self._done = True  # the native stream's last object; it sends no [DONE]

    def _end(self) -> None:
        call, recorder, errors, status = self.call, self.recorder, self.errors, self.status
        self._drain()
        if self._decode is not None:
            rest = self._decode.flush()
            self._decode = None
            if rest:
                self._read([(self.now_ms(), rest)])
        if self._lines is not None and not self._done and not call.ended:
            self._take_lines(self._lines.close(), self.now_ms())
        if call.ended:
            return
        received = {semconv.HTTP_RESPONSE_STATUS_CODE: status}
        if status is not None and status >= 400:
            recorder.event(call, semconv.EVENT_RESPONSE_RECEIVED, received)
            recorder.fail(call, errors.status(status, bytes(self._body), self._charset), status=status)
            return
        if self._sse:
            if not self._done:
                recorder.fail(call, errors.stream_ended(call.acc.chunks, call.acc.text), status=status)
                return
            completion = call.acc.to_completion()
        else:
            try:
                completion = errors.completion(
                    bytes(self._body), self._content_type, self._charset,
                    parse=self.route.parse, what=self.route.what,
                )  # fmt: skip
            except BadResponse as error:
                recorder.event(call, semconv.EVENT_RESPONSE_RECEIVED, received)
                recorder.fail(call, error, status=status)
                return
        recorder.event(call, semconv.EVENT_RESPONSE_RECEIVED, received)
        recorder.succeed(call, with_usage_from_timings(completion), status=status)

    def _broken(self, where: str, exc: Exception) -> None:
        """A failure inside recording: counted and logged, and the call ended with it, never raised."""
        self.recorder.telemetry_error(f"proxy recording ({where})", exc)
        if not self.call.ended:
            said = self.recorder.redact(f"{type(exc).__name__}: {exc}")
            url = self.errors.url
            error = BadResponse(f"obs could not read the answer from {url} ({said})", url=url)
            self.recorder.fail(self.call, error, status=self.status)
