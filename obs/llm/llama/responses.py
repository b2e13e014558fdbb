"""Reading what llama-server answers: chat completions, stream chunks, timings, errors.

Pure functions and values, no I/O: the client feeds them decoded JSON and
server-sent-event lines. llama-server adds `timings` (prompt and generation
times, prompt-cache reuse) to the OpenAI fields; other OpenAI-compatible
servers leave them out, and everything here copes with their absence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "DONE",
    "MAX_TOKEN_COUNT",
    "ChatCompletion",
    "ResponseFormatError",
    "StreamAccumulator",
    "StreamError",
    "Timings",
    "Usage",
    "common_fields",
    "first_choice",
    "parse_chat_response",
    "parse_error_body",
    "parse_sse_line",
    "str_or_none",
]


class ResponseFormatError(ValueError):
    """A body or stream line that is not what an OpenAI-compatible server sends."""


class _Done:
    """The `data: [DONE]` marker that ends a complete stream."""

    _instance: _Done | None = None

    def __new__(cls) -> _Done:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "DONE"


DONE: Final = _Done()


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# The largest token count taken as real; the metrics collector refuses more.
MAX_TOKEN_COUNT = 10**12


def _count(value: Any) -> int | None:
    """A token count in [0, MAX_TOKEN_COUNT], or None when `value` is not one."""
    count = _int(value)
    return count if count is not None and 0 <= count <= MAX_TOKEN_COUNT else None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the server reports them; `cached_tokens` is None when not reported.

    `invalid` names the fields the server sent out of range (negative, over
    10**12, or not an integer): those count as 0 (`cached_tokens` as None)
    and are left off the span's usage attributes.
    """

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int | None = None
    invalid: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> Usage | None:
        """Read an OpenAI `usage` object; None if it is absent or has no token counts."""
        if not isinstance(data, Mapping):
            return None
        raw_prompt, raw_completion = data.get("prompt_tokens"), data.get("completion_tokens")
        if raw_prompt is None and raw_completion is None:
            return None
        details = data.get("prompt_tokens_details")
        raw = {
            "prompt_tokens": raw_prompt,
            "completion_tokens": raw_completion,
            "total_tokens": data.get("total_tokens"),
            "cached_tokens": details.get("cached_tokens") if isinstance(details, Mapping) else None,
        }
        counts = {name: _count(value) for name, value in raw.items()}
        invalid = tuple(name for name, value in raw.items() if value is not None and counts[name] is None)
        prompt = counts["prompt_tokens"] or 0
        completion = counts["completion_tokens"] or 0
        total = counts["total_tokens"]
        return cls(
            prompt,
            completion,
            total if total is not None else prompt + completion,
            counts["cached_tokens"],
            invalid,
        )


@dataclass(frozen=True, slots=True)
class Timings:
    """llama-server's per-request `timings`: milliseconds, token counts and rates.

    `cache_n` prompt tokens came from the prompt cache, `prompt_n` were
    evaluated now; `draft_*` are present only with speculative decoding.
    """

    prompt_n: int
    prompt_ms: float
    predicted_n: int
    predicted_ms: float
    cache_n: int | None = None
    prompt_per_token_ms: float | None = None
    prompt_per_second: float | None = None
    predicted_per_token_ms: float | None = None
    predicted_per_second: float | None = None
    draft_n: int | None = None
    draft_n_accepted: int | None = None

    @classmethod
    def from_json(cls, data: Any) -> Timings | None:
        """Read a `timings` object; None if absent or missing the prompt/predicted times."""
        if not isinstance(data, Mapping):
            return None
        prompt_ms = _float(data.get("prompt_ms"))
        predicted_ms = _float(data.get("predicted_ms"))
        if prompt_ms is None or predicted_ms is None:
            return None
        return cls(
            prompt_n=_int(data.get("prompt_n")) or 0,
            prompt_ms=prompt_ms,
            predicted_n=_int(data.get("predicted_n")) or 0,
            predicted_ms=predicted_ms,
            cache_n=_int(data.get("cache_n")),
            prompt_per_token_ms=_float(data.get("prompt_per_token_ms")),
            prompt_per_second=_float(data.get("prompt_per_second")),
            predicted_per_token_ms=_float(data.get("predicted_per_token_ms")),
            predicted_per_second=_float(data.get("predicted_per_second")),
            draft_n=_int(data.get("draft_n")),
            draft_n_accepted=_int(data.get("draft_n_accepted")),
        )

    @property
    def model_ms(self) -> float:
        """Time the model spent on this request: prompt processing plus generation."""
        return self.prompt_ms + self.predicted_ms

    @property
    def prompt_cache_ratio(self) -> float | None:
        """cache_n / (cache_n + prompt_n): the share of the prompt reused; None if unknown."""
        if self.cache_n is None:
            return None
        seen = self.cache_n + self.prompt_n
        return self.cache_n / seen if seen > 0 else 0.0

    @property
    def draft_acceptance_rate(self) -> float | None:
        """draft_n_accepted / draft_n with speculative decoding; None without it."""
        if not self.draft_n or self.draft_n_accepted is None:
            return None
        return self.draft_n_accepted / self.draft_n


@dataclass(frozen=True, slots=True)
class ChatCompletion:
    """One chat answer: the first choice's text and finish reason, usage, timings and the raw JSON.

    `finish_reasons` lists every choice's reason (GenAI's
    `gen_ai.response.finish_reasons`); `raw` is the body as received (for a
    stream, a body assembled in the same shape).
    """

    id: str | None
    model: str | None
    content: str
    role: str = "assistant"
    finish_reason: str | None = None
    finish_reasons: tuple[str, ...] = ()
    usage: Usage | None = None
    timings: Timings | None = None
    created: int | None = None
    system_fingerprint: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def text(self) -> str:
        """The answer's text (same as `content`)."""
        return self.content

    def to_dict(self) -> dict[str, Any]:
        """The response as OpenAI-shaped JSON (the raw body)."""
        return dict(self.raw)


def _message_text(content: Any) -> str:
    """Text of a message `content`, which may be a string or a list of typed parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return str(content)


def first_choice(data: Any) -> tuple[Mapping[str, Any], Any, tuple[str, ...]]:
    """(the body, its first choice, every choice's finish reason) of an OpenAI-style answer.

    Shared by the chat and text-completion parsers, which check the first
    choice's shape themselves. Raises ResponseFormatError when `data` is not
    an object with a non-empty `choices` list.
    """
    if not isinstance(data, Mapping):
        raise ResponseFormatError(f"expected a JSON object, got {type(data).__name__}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        keys = ", ".join(sorted(str(k) for k in data)[:8]) or "none"
        raise ResponseFormatError(f"the JSON has no choices (keys: {keys})")
    first = choices[0]
    reasons = tuple(
        str(c["finish_reason"]) for c in choices if isinstance(c, Mapping) and c.get("finish_reason")
    )
    return data, first, reasons


def common_fields(
    data: Mapping[str, Any], first: Mapping[str, Any], reasons: tuple[str, ...]
) -> dict[str, Any]:
    """The ChatCompletion fields every OpenAI-style answer has, read the same way for all of them."""
    return {
        "id": str_or_none(data.get("id")),
        "model": str_or_none(data.get("model")),
        "finish_reason": str_or_none(first.get("finish_reason")),
        "finish_reasons": reasons,
        "usage": Usage.from_json(data.get("usage")),
        "timings": Timings.from_json(data.get("timings")),
        "created": _int(data.get("created")),
        "system_fingerprint": str_or_none(data.get("system_fingerprint")),
        "raw": dict(data),
    }


def parse_chat_response(data: Any) -> ChatCompletion:
    """Read a non-streamed `/v1/chat/completions` body (already JSON-decoded).

    Raises ResponseFormatError when it is not an object with a non-empty
    `choices` list whose first entry has a `message`.
    """
    body, first, reasons = first_choice(data)
    message = first.get("message") if isinstance(first, Mapping) else None
    if not isinstance(message, Mapping):
        raise ResponseFormatError("the first choice has no message")
    return ChatCompletion(
        content=_message_text(message.get("content")),
        role=str(message.get("role") or "assistant"),
        **common_fields(body, first, reasons),
    )


def str_or_none(value: Any) -> str | None:
    """`value` as a string, or None when it is None."""
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class StreamError:
    """An error the server reported inside a stream (`error:` event or `{"error": ...}` data)."""

    message: str
    type: str | None = None
    code: int | None = None


def parse_error_body(body: str | bytes | Any) -> StreamError | None:
    """Read llama-server's (and OpenAI's) error JSON: `{"error": {"code", "message", "type"}}`.

    Also accepts `{"error": "text"}` and `{"message": ...}`. None when the body
    is not JSON or says nothing recognisable.
    """
    data = body
    if isinstance(body, bytes | str):
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
    if not isinstance(data, Mapping):
        return None
    error = data.get("error", data)
    if isinstance(error, str):
        return StreamError(error)
    if not isinstance(error, Mapping) or not error.get("message"):
        return None
    return StreamError(str(error["message"]), str_or_none(error.get("type")), _int(error.get("code")))


def parse_sse_line(line: str) -> dict[str, Any] | _Done | StreamError | None:
    """Read one line of a server-sent-events stream.

    Returns the decoded JSON object of a `data:` line, `DONE` for
    `data: [DONE]`, a StreamError for an `error:` line or a data object
    carrying `error`, and None for blank lines, comments and other fields.
    Raises ResponseFormatError for a `data:` line that is not a JSON object.
    """
    if not line or line.startswith(":"):
        return None
    name, sep, value = line.partition(":")
    if not sep:
        return None
    if value.startswith(" "):
        value = value[1:]
    if name == "error":
        return parse_error_body(value) or StreamError(value.strip() or "error event without details")
    if name != "data":
        return None
    if value.strip() == "[DONE]":
        return DONE
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise ResponseFormatError(f"a stream line is not JSON: {value[:80]!r}") from exc
    if not isinstance(data, dict):
        raise ResponseFormatError(f"a stream line is not a JSON object: {value[:80]!r}")
    if "error" in data and "choices" not in data:
        return parse_error_body(data) or StreamError("error event without details")
    return data


class StreamAccumulator:
    """Builds a ChatCompletion from stream chunks, one `feed` per decoded `data:` object.

    Keeps the text so far (also after a cut, for the span), the finish reason,
    and the `usage` and `timings` that llama-server sends on its last chunks.
    """

    __slots__ = (
        "_parts",
        "chunks",
        "created",
        "finish_reason",
        "id",
        "model",
        "role",
        "system_fingerprint",
        "timings",
        "usage",
    )

    def __init__(self) -> None:
        """Start empty."""
        self.id: str | None = None
        self.model: str | None = None
        self.role = "assistant"
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.timings: Timings | None = None
        self.created: int | None = None
        self.system_fingerprint: str | None = None
        self.chunks = 0
        self._parts: list[str] = []

    def feed(self, chunk: Mapping[str, Any]) -> str:
        """Take one chunk; return its text delta ("" when it carries none)."""
        self.chunks += 1
        if self.id is None and chunk.get("id") is not None:
            self.id = str(chunk["id"])
        if self.model is None and chunk.get("model") is not None:
            self.model = str(chunk["model"])
        if self.created is None:
            self.created = _int(chunk.get("created"))
        if self.system_fingerprint is None and chunk.get("system_fingerprint") is not None:
            self.system_fingerprint = str(chunk["system_fingerprint"])
        usage = chunk.get("usage")
        if usage is not None:
            self.usage = Usage.from_json(usage) or self.usage
        timings = chunk.get("timings")
        if timings is not None:
            self.timings = Timings.from_json(timings) or self.timings
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return ""
        first = choices[0]
        if not isinstance(first, Mapping):
            return ""
        if first.get("finish_reason"):
            self.finish_reason = str(first["finish_reason"])
        delta = first.get("delta")
        if not isinstance(delta, Mapping):
            return ""
        if delta.get("role"):
            self.role = str(delta["role"])
        text = _message_text(delta.get("content"))
        if text:
            self._parts.append(text)
        return text

    @property
    def text(self) -> str:
        """All text received so far."""
        return "".join(self._parts)

    def to_completion(self) -> ChatCompletion:
        """The answer so far as a ChatCompletion, with a raw body shaped like a non-streamed one."""
        text = self.text
        raw: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": self.role, "content": text},
                    "finish_reason": self.finish_reason,
                }
            ],
        }
        if self.system_fingerprint is not None:
            raw["system_fingerprint"] = self.system_fingerprint
        if self.usage is not None:
            usage: dict[str, Any] = {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
                "total_tokens": self.usage.total_tokens,
            }
            if self.usage.cached_tokens is not None:
                usage["prompt_tokens_details"] = {"cached_tokens": self.usage.cached_tokens}
            raw["usage"] = usage
        if self.timings is not None:
            raw["timings"] = {
                name: value
                for name in Timings.__slots__
                if (value := getattr(self.timings, name)) is not None
            }
        return ChatCompletion(
            id=self.id,
            model=self.model,
            content=text,
            role=self.role,
            finish_reason=self.finish_reason,
            finish_reasons=(self.finish_reason,) if self.finish_reason else (),
            usage=self.usage,
            timings=self.timings,
            created=self.created,
            system_fingerprint=self.system_fingerprint,
            raw=raw,
        )
