"""Reading text completions: OpenAI's `/v1/completions` and llama-server's native `/completion`.

Pure functions and values, like `obs.llm.llama.responses` (whose
`ChatCompletion` they return, so one recorder handles every answer):

- `/v1/completions` answers `choices[i].text`, streamed as chunks of the
  same shape ending with `data: [DONE]`;
- `/completion` answers `{"content", "stop", "stop_type", "tokens_evaluated",
  "tokens_predicted", "timings", ...}`; its stream sends objects of that shape
  and ends with the one whose `stop` is true: it has no `[DONE]`.

`usage_from_timings` gives the token counts of an answer whose usage was not
sent (a chat stream without `stream_options.include_usage`) from llama.cpp's
timings, which always come on the last chunk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from obs.llm.llama.responses import (
    ChatCompletion,
    ResponseFormatError,
    StreamAccumulator,
    Timings,
    Usage,
    common_fields,
    first_choice,
    str_or_none,
)

__all__ = [
    "OPERATION_TEXT_COMPLETION",
    "NativeStreamAccumulator",
    "TextStreamAccumulator",
    "finish_reason_of_stop_type",
    "parse_native_completion",
    "parse_text_completion",
    "usage_from_timings",
    "with_usage_from_timings",
]

# GenAI's operation name for a prompt completed as text (chat is `semconv.OPERATION_CHAT`).
OPERATION_TEXT_COMPLETION = "text_completion"

# llama-server's `stop_type` as an OpenAI finish reason: the end of the text, a stop word, or the limit.
_STOP_TYPES = {"eos": "stop", "word": "stop", "limit": "length"}


def finish_reason_of_stop_type(stop_type: Any) -> str | None:
    """The OpenAI finish reason for a native `stop_type` (`eos`/`word` -> stop, `limit` -> length)."""
    return _STOP_TYPES.get(stop_type) if isinstance(stop_type, str) else None


def parse_text_completion(data: Any) -> ChatCompletion:
    """Read a non-streamed `/v1/completions` body (already JSON-decoded).

    Raises ResponseFormatError when it is not an object with a non-empty
    `choices` list whose first entry has a `text` string.
    """
    body, first, reasons = first_choice(data)
    if not (isinstance(first, Mapping) and isinstance(first.get("text"), str)):
        raise ResponseFormatError("the first choice has no text")
    return ChatCompletion(content=first["text"], **common_fields(body, first, reasons))


def _native_usage(data: Mapping[str, Any]) -> Usage | None:
    # `tokens_evaluated` is the whole prompt (cached part included), `tokens_predicted` the answer.
    return Usage.from_json(
        {"prompt_tokens": data.get("tokens_evaluated"), "completion_tokens": data.get("tokens_predicted")}
    )


def parse_native_completion(data: Any) -> ChatCompletion:
    """Read a non-streamed native `/completion` body (already JSON-decoded).

    Raises ResponseFormatError when it is not an object with a `content` string.
    """
    if not isinstance(data, Mapping):
        raise ResponseFormatError(f"expected a JSON object, got {type(data).__name__}")
    if not isinstance(data.get("content"), str):
        keys = ", ".join(sorted(str(k) for k in data)[:8]) or "none"
        raise ResponseFormatError(f"the JSON has no content (keys: {keys})")
    reason = finish_reason_of_stop_type(data.get("stop_type"))
    return ChatCompletion(
        id=None,
        model=str_or_none(data.get("model")),
        content=data["content"],
        finish_reason=reason,
        finish_reasons=(reason,) if reason else (),
        usage=_native_usage(data),
        timings=Timings.from_json(data.get("timings")),
        raw=dict(data),
    )


class TextStreamAccumulator(StreamAccumulator):
    """A StreamAccumulator for `/v1/completions` chunks, whose text is `choices[0].text`."""

    __slots__ = ()

    def feed(self, chunk: Mapping[str, Any]) -> str:
        """Take one chunk; return its text ("" when it carries none)."""
        super().feed(chunk)  # id, model, usage, timings, finish reason: the same fields as chat
        choices = chunk.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        text = first.get("text") if isinstance(first, Mapping) else None
        if not isinstance(text, str) or not text:
            return ""
        self._parts.append(text)
        return text


class NativeStreamAccumulator(StreamAccumulator):
    """A StreamAccumulator for native `/completion` chunks; `done` once the chunk with `stop` came."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        """Start empty, not done."""
        super().__init__()
        self.done = False

    def feed(self, chunk: Mapping[str, Any]) -> str:
        """Take one chunk; return its text ("" when it carries none)."""
        super().feed(chunk)  # model and timings
        if chunk.get("stop") is True:
            self.done = True
            self.finish_reason = finish_reason_of_stop_type(chunk.get("stop_type")) or self.finish_reason
            self.usage = _native_usage(chunk) or self.usage
        text = chunk.get("content")
        if not isinstance(text, str) or not text:
            return ""
        self._parts.append(text)
        return text


def usage_from_timings(timings: Timings) -> Usage | None:
    """Token counts read off llama.cpp's timings: prompt = prompt_n + cache_n, answer = predicted_n.

    Counts out of range are handled as in a server's own `usage` (`Usage.invalid`).
    """
    cached = timings.cache_n
    return Usage.from_json({
        "prompt_tokens": timings.prompt_n + (cached or 0),
        "completion_tokens": timings.predicted_n,
        "prompt_tokens_details": {"cached_tokens": cached},
    })


def with_usage_from_timings(completion: ChatCompletion) -> ChatCompletion:
    """`completion` with usage from its timings when the server sent timings but no usage."""
    if completion.usage is not None or completion.timings is None:
        return completion
    return dataclasses.replace(completion, usage=usage_from_timings(completion.timings))
