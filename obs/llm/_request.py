"""What the client sends: checked messages, the request body, and its JSON bytes.

Bad input is the caller's: a ValueError that names the argument (the
message by index, or the parameter) and says how to fix it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def check_messages(messages: Any) -> list[dict[str, Any]]:
    """`messages` as a list of dicts, each with a `role` string; ValueError otherwise."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence) or not messages:
        raise ValueError(
            "messages must be a non-empty list of {'role': ..., 'content': ...} dicts, "
            f"got {type(messages).__name__}"
        )
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise ValueError(f"messages[{index}] must be a dict with a 'role' string, got {message!r}"[:200])
        checked.append(dict(message))
    return checked


def build_body(
    messages: list[dict[str, Any]], params: dict[str, Any], *, model: str | None, stream: bool
) -> dict[str, Any]:
    """The `/v1/chat/completions` body: messages, the model when known, the parameters, stream flags.

    A stream asks for usage (`stream_options.include_usage`) unless the
    caller set `stream_options`.
    """
    body: dict[str, Any] = {"messages": messages}
    if model:
        body["model"] = model
    body.update(params)
    if stream:
        body["stream"] = True
        body.setdefault("stream_options", {"include_usage": True})
    else:
        body.pop("stream", None)
    return body


def _encode(value: Any) -> bytes:
    # allow_nan=False: NaN and Infinity are not JSON, and a server would refuse the whole body.
    return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")


def encode_body(body: Mapping[str, Any]) -> bytes:
    """The body as UTF-8 JSON; ValueError naming the message or parameter that cannot be sent."""
    try:
        return _encode(body)
    except (TypeError, ValueError, RecursionError) as exc:
        where = "the request body"
        parts: list[tuple[str, Any]] = [
            (f"messages[{i}]", m) for i, m in enumerate(body.get("messages") or ())
        ]
        parts += [(str(k), v) for k, v in body.items() if k != "messages"]
        for name, value in parts:
            try:
                _encode(value)
            except (TypeError, ValueError, RecursionError):
                where = name
                break
        raise ValueError(
            f"{where} cannot be sent as JSON ({type(exc).__name__}: {str(exc)[:200]}): use strings, "
            "finite numbers, booleans, None, lists and dicts, and text without lone surrogates"
        ) from exc
