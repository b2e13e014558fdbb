"""The client's configuration, validated: the server's URL and the settings read from the environment.

`Endpoint.parse` checks `base_url` (or LLAMA_SERVER_URL) once and keeps
what requests are sent to (user info included: httpx sends it as Basic
auth; the query string rides on every request) apart from how the URL is
shown (`obs.llm._redaction.public_url`) and the secrets it carries.
`capture_content_from_env` reads OpenTelemetry's opt-in for message content,
and `wire_sinks` completes the tracer, store, collector, logger and clock a
client was given.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, NamedTuple

import httpx

from obs.clock import SYSTEM_CLOCK, Clock
from obs.config import default_tracer
from obs.llm._redaction import public_url, url_secrets
from obs.logs import LLMLogger
from obs.metrics.collector import MetricsCollector
from obs.storage.memory import TraceStore
from obs.trace.sampling.head import SAMPLER_ENV, HeadSampler, sampler_from_env
from obs.trace.tracer import Tracer

DEFAULT_BASE_URL = "http://127.0.0.1:8033"
BASE_URL_ENV = "LLAMA_SERVER_URL"
# OpenTelemetry's opt-in for message content on GenAI spans.
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One server: where requests go, how it is shown, and the secrets its URL carries."""

    root: str
    params: httpx.QueryParams
    shown: str
    address: str
    port: int
    secrets: tuple[str, ...]

    @classmethod
    def parse(cls, base_url: Any) -> Endpoint:
        """Read `base_url` (None: LLAMA_SERVER_URL, else the default); ValueError if it is no http(s) URL.

        The error never quotes user info or query values.
        """
        raw = base_url if base_url is not None else os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        if not isinstance(raw, str) or not raw.strip():
            raise ValueError(f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL}, got {raw!r}")
        try:
            url = httpx.URL(raw.strip().rstrip("/"))
        except (httpx.InvalidURL, TypeError):
            raise ValueError(
                f"base_url is not a valid URL: give an http(s) URL such as {DEFAULT_BASE_URL}"
            ) from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                f"base_url must be an http(s) URL with a host, such as {DEFAULT_BASE_URL}, "
                f"got {public_url(url)!r}"
            )
        return cls(
            root=str(url.copy_with(query=None, fragment=None)).rstrip("/"),
            params=url.params,
            shown=public_url(url),
            address=url.host,
            port=url.port or (443 if url.scheme == "https" else 80),
            secrets=tuple(url_secrets(url)),
        )


def capture_content_from_env() -> bool:
    """OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT as a bool: off unless it says true.

    `true` (any case) turns content on, as do the newer `span_only` and
    `span_and_event`; `false`, `no_content`, `event_only` and unset leave it
    off. Anything else is logged as a warning and leaves it off.
    """
    raw = os.environ.get(CAPTURE_CONTENT_ENV, "")
    value = raw.strip().lower()
    if value in ("true", "span_only", "span_and_event"):
        return True
    if value not in ("", "false", "no_content", "event_only"):
        _log.warning("%s=%r is not true or false; message content stays off spans", CAPTURE_CONTENT_ENV, raw)
    return False


def check_count(name: str, value: Any, minimum: int, meaning: str) -> int:
    """`value` as an int >= `minimum`; ValueError naming `name`, the range and what it means."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum} ({meaning}), got {value!r}")
    return value


class Sinks(NamedTuple):
    """Where a client's calls are recorded, and the clock that times them."""

    tracer: Tracer
    store: Any
    collector: MetricsCollector
    logger: LLMLogger
    clock: Clock


def _sampler_from_env() -> HeadSampler | None:
    # As OpenTelemetry SDKs do: OTEL_TRACES_SAMPLER (and _ARG) pick the head sampler, and an
    # unknown one is logged and replaced by the default, never fatal.
    return sampler_from_env(strict=False) if os.environ.get(SAMPLER_ENV, "").strip() else None


def wire_sinks(
    tracer: Tracer | None, store: Any, collector: MetricsCollector | None, logger: LLMLogger | None,
    clock: Clock | None,
) -> Sinks:
    """Fill in what was not given: from `tracer` when there is one, else fresh objects.

    With neither a tracer nor a store given, the process-wide tracer of
    `obs.configure` is used when there is one (its traces go to the shared
    SQLite file). A fresh tracer records into the given (or fresh) store,
    collector and logger, with the head sampler OTEL_TRACES_SAMPLER names
    when it is set.
    """
    if tracer is None and store is None:
        tracer = default_tracer()
    clock = clock if clock is not None else (tracer.clock if tracer is not None else SYSTEM_CLOCK)
    if tracer is not None:
        store = store if store is not None else tracer.store
        collector = collector if collector is not None else tracer.collector
        logger = logger if logger is not None else tracer.logger
    collector = collector if collector is not None else MetricsCollector(clock=clock)
    store = store if store is not None else TraceStore()
    logger = logger if logger is not None else LLMLogger(clock=clock)
    if tracer is None:
        tracer = Tracer(
            store=store, collector=collector, logger=logger, clock=clock, head_sampler=_sampler_from_env()
        )
    return Sinks(tracer, store, collector, logger, clock)
