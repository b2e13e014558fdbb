"""What a load run is asked to do: `LoadConfig`, and the parsers of its command-line forms.

Each parser takes the text a user typed and returns the value, or raises
ValueError with a message that names what was wrong and what is accepted:
`parse_duration("2m") == 120.0`, `parse_rate("5/s") == 5.0`,
`parse_levels("1,2,4,8") == (1, 2, 4, 8)`. `load_prompts(path)` reads a
prompts file (format below); `DEFAULT_PROMPTS` is the small built-in list.

Prompts file formats, chosen by the file name:

- `*.jsonl`: one JSON value per line, each a request's messages: a string
  (one user message), a list of OpenAI messages (`{"role": ..., "content": ...}`),
  or an object with such a list under `"messages"`.
- anything else: plain text, one prompt per line (sent as one user
  message); blank lines and lines starting with `#` are skipped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_PROMPTS",
    "LoadConfig",
    "Messages",
    "load_prompts",
    "parse_duration",
    "parse_levels",
    "parse_prompt_lines",
    "parse_rate",
]

Messages = tuple[Mapping[str, Any], ...]

_ROLES = ("system", "user", "assistant", "developer", "tool")


def _user(text: str) -> Messages:
    return ({"role": "user", "content": text},)


# Short questions with short answers: a load test measures the server, not the prompts.
DEFAULT_PROMPTS: tuple[Messages, ...] = tuple(_user(text) for text in (
    "Name three colours.",
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "Count from one to five.",
    "What is two plus two?",
    "Give a synonym for happy.",
    "Name a fruit that is yellow.",
    "Say hello in Spanish.",
))  # fmt: skip

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:/\s*(s|m|h|sec|min))?\s*$", re.IGNORECASE)
_RATE_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_MAX_LEVELS = 64


def parse_duration(text: str) -> float:
    """Seconds from a duration such as `60s`, `2m`, `1.5h`, `500ms` or a bare number of seconds.

    Raises ValueError for anything else, or for a duration that is not more than 0.
    """
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"a duration is a number with a unit, like 60s, 2m, 1h or 500ms; got {text!r}")
    seconds = float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "s").lower()]
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"a duration must be more than 0, like 60s or 2m; got {text!r}")
    return seconds


def parse_rate(text: str) -> float:
    """Requests per second from a rate such as `5/s`, `120/m`, `0.5/s` or a bare number (per second).

    Raises ValueError for anything else, or for a rate that is not more than 0.
    """
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"a rate is requests per unit of time, like 5/s, 120/m or 0.5/s; got {text!r}")
    per_second = float(match.group(1)) / _RATE_UNITS[(match.group(2) or "s").lower()]
    if not per_second > 0 or not math.isfinite(per_second):
        raise ValueError(f"a rate must be more than 0, like 5/s; got {text!r}")
    return per_second


def parse_levels(text: str) -> tuple[int, ...]:
    """Concurrency levels from a comma-separated list such as `1,2,4,8`: whole numbers of 1 or more.

    They are returned in increasing order without repeats. Raises ValueError
    naming the item that is not a whole number of at least 1, or for more than
    64 levels.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("concurrency levels are a comma-separated list like 1,2,4,8; got nothing")
    levels: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise ValueError(f"concurrency levels are whole numbers of 1 or more, like 1,2,4,8; "
                             f"{item!r} in {text!r} is not")  # fmt: skip
        levels.add(int(item))
    if len(levels) > _MAX_LEVELS:
        raise ValueError(f"at most {_MAX_LEVELS} concurrency levels, got {len(levels)}")
    return tuple(sorted(levels))


def _check_messages(value: Any, where: str) -> Messages:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"{where}: the prompt is empty")
        return _user(value)
    if isinstance(value, Mapping) and "messages" in value:
        value = value["messages"]
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: expected a string, a non-empty list of messages or "
                         f'{{"messages": [...]}}, got {type(value).__name__}')  # fmt: skip
    for index, message in enumerate(value):
        if (not isinstance(message, Mapping) or message.get("role") not in _ROLES
                or not isinstance(message.get("content"), str)):
            raise ValueError(f"{where}: message {index} must be an object with a role "
                             f"({', '.join(_ROLES)}) and a content string, got {message!r:.80}")
    return tuple(dict(message) for message in value)


def parse_prompt_lines(text: str) -> tuple[Messages, ...]:
    """Prompts from text with one prompt per line (blank and `#` lines skipped), each one user message.

    May be empty: the caller says what an empty list means.
    """
    lines = (line.strip() for line in text.splitlines())
    return tuple(_user(line) for line in lines if line and not line.startswith("#"))


def load_prompts(path: str | Path) -> tuple[Messages, ...]:
    """The prompts in the file at `path`, each as the messages of one request (formats: module docstring).

    Raises ValueError naming the file when it does not exist, cannot be read,
    holds no prompt, or (JSONL) has a line that is not a prompt, with its
    line number.
    """
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"prompts file {str(file)!r} does not exist (or is not a file)")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"prompts file {str(file)!r} cannot be read as UTF-8 text: {exc}") from None
    jsonl = file.name.lower().endswith(".jsonl")
    prompts: list[Messages] = [] if jsonl else list(parse_prompt_lines(text))
    for number, line in enumerate(text.splitlines() if jsonl else (), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        where = f"prompts file {str(file)!r}, line {number}"
        try:
            value = json.loads(stripped)
        except ValueError as exc:
            raise ValueError(f"{where} is not JSON ({exc.args[0]}); each line of a .jsonl file is a "
                             "string, a list of messages or {\"messages\": [...]}") from None  # fmt: skip
        prompts.append(_check_messages(value, where))
    if not prompts:
        kind = "JSON line" if jsonl else "prompt line (blank and # lines are skipped)"
        raise ValueError(f"prompts file {str(file)!r} is empty: it has no {kind}")
    return tuple(prompts)


def _positive_int(name: str, value: Any, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number of 1 or more ({hint}), got {value!r}")


def _positive_number(name: str, value: Any, hint: str) -> None:
    if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            or value <= 0):
        raise ValueError(f"{name} must be a number more than 0 ({hint}), got {value!r}")


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """One load run: what to send, how many at once, and when to stop. Checked on construction.

    `concurrency` requests are in flight at most. The run stops after
    `requests` requests were sent or `duration_s` seconds, whichever comes
    first (at least one of them is given; requests in flight at the
    duration's end are let finish). With `rate` (requests per second across
    all workers) request i is not sent before i / rate seconds from the
    start. Request i sends `prompts[i % len(prompts)]` with `max_tokens`
    and the `params` (temperature, seed, ...), streamed if `stream`.
    `url` is the server (None: the client's default); `conversation_id`,
    when given, goes on every request's span (`gen_ai.conversation.id`).
    ValueError names a bad field and what it accepts.
    """

    url: str | None = None
    concurrency: int = 8
    requests: int | None = 200
    duration_s: float | None = None
    rate: float | None = None
    prompts: tuple[Messages, ...] = DEFAULT_PROMPTS
    stream: bool = False
    max_tokens: int = 64
    params: Mapping[str, Any] = field(default_factory=dict)
    conversation_id: str | None = None

    def __post_init__(self) -> None:
        _positive_int("concurrency", self.concurrency, "requests in flight at once")
        if self.requests is None and self.duration_s is None:
            raise ValueError("give requests (how many to send) or duration_s (how long to run), or both")
        if self.requests is not None:
            _positive_int("requests", self.requests, "how many requests to send")
        if self.duration_s is not None:
            _positive_number("duration_s", self.duration_s, "seconds to run")
        if self.rate is not None:
            _positive_number("rate", self.rate, "requests per second")
        _positive_int("max_tokens", self.max_tokens, "tokens each answer may have")
        if not isinstance(self.prompts, Sequence) or isinstance(self.prompts, str) or not self.prompts:
            raise ValueError("prompts must be a non-empty sequence of message lists (see load_prompts)")
        prompts = tuple(_check_messages(list(p) if isinstance(p, tuple) else p, f"prompt {i}")
                        for i, p in enumerate(self.prompts))  # fmt: skip
        object.__setattr__(self, "prompts", prompts)
        if not isinstance(self.params, Mapping):
            raise ValueError(f"params must be a mapping of request fields, got {type(self.params).__name__}")
        clash = {"messages", "stream", "max_tokens", "conversation_id", "parent"} & set(self.params)
        if clash:
            raise ValueError(f"params must not set {', '.join(sorted(clash))}: use the fields of LoadConfig")
        conversation = self.conversation_id
        if conversation is not None and (not isinstance(conversation, str) or not conversation):
            raise ValueError(f"conversation_id must be None or a non-empty string, got {conversation!r}")
        object.__setattr__(self, "stream", bool(self.stream))

    def messages(self, index: int) -> list[dict[str, Any]]:
        """The messages of request `index` (the prompts in turn), as fresh dicts."""
        return [dict(message) for message in self.prompts[index % len(self.prompts)]]

    def body_params(self) -> dict[str, Any]:
        """The request fields sent with every request besides its messages: max_tokens and `params`."""
        return {"max_tokens": self.max_tokens, **self.params}

    def describe(self) -> str:
        """The run in a line, e.g. `200 requests, 8 at once, streamed, max_tokens 64`."""
        parts = []
        if self.requests is not None:
            parts.append(f"{self.requests} request{'s' if self.requests != 1 else ''}")
        if self.duration_s is not None:
            parts.append(f"{'at most ' if self.requests is not None else ''}{self.duration_s:g} s")
        parts.append(f"{self.concurrency} at once")
        if self.rate is not None:
            parts.append(f"at most {self.rate:g}/s")
        parts.append("streamed" if self.stream else "not streamed")
        parts.append(f"max_tokens {self.max_tokens}")
        return ", ".join(parts)
