"""What a llama-server says about itself: `/health`, `/props` and `/metrics`.

`ServerProps.from_json` and `parse_prometheus_text` are pure; the `fetch_*`
and `check_health` functions do the HTTP and never raise for an unreachable
or odd server (they return None or a health state), because callers use them
for display and enrichment, never for the request path.
"""

from __future__ import annotations

import functools
import math
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Literal

import httpx

__all__ = [
    "HealthState",
    "ServerMetrics",
    "ServerProps",
    "check_health",
    "fetch_metrics",
    "fetch_props",
    "model_display_name",
    "parse_prometheus_text",
    "shared_ssl_context",
]

HealthState = Literal["ok", "loading", "unauthorized", "error", "unreachable"]
_LLAMA_PREFIX = "llamacpp:"
# name{labels} value [timestamp]
_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(?:\s+\S+)?\s*$")


@functools.lru_cache(maxsize=64)  # asked for on every recorded call, about the same few names
def model_display_name(name: str | None) -> str | None:
    """A short model name: a path becomes its file name without `.gguf`; None stays None."""
    if not name:
        return None
    if "/" in name or "\\" in name:
        name = PurePath(name.replace("\\", "/")).name
    return name.removesuffix(".gguf") or None


@dataclass(frozen=True, slots=True)
class ServerProps:
    """The parts of `/props` obs uses: model, per-slot context size, slots and build.

    `n_ctx` is the context one request can use (the server's total divided by
    its slots); `build` is `build_info` when the server reports it.
    """

    model_path: str | None = None
    model_alias: str | None = None
    n_ctx: int | None = None
    total_slots: int | None = None
    build: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def model_name(self) -> str | None:
        """The name to show and to put in span names: the alias, else the model file's name."""
        return model_display_name(self.model_alias) or model_display_name(self.model_path)

    @classmethod
    def from_json(cls, data: Any) -> ServerProps:
        """Read a decoded `/props` body; missing or odd fields become None."""
        if not isinstance(data, Mapping):
            return cls()
        settings = data.get("default_generation_settings")
        n_ctx = settings.get("n_ctx") if isinstance(settings, Mapping) else None
        if n_ctx is None:
            n_ctx = data.get("n_ctx")
        build = data.get("build_info") or data.get("system_fingerprint")
        alias = data.get("model_alias")
        if isinstance(alias, list):  # newer servers may list several aliases
            alias = alias[0] if alias else None
        return cls(
            model_path=_text(data.get("model_path")),
            model_alias=_text(alias),
            n_ctx=_count(n_ctx),
            total_slots=_count(data.get("total_slots")),
            build=_text(build),
            raw=dict(data),
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def parse_prometheus_text(text: str) -> dict[str, float]:
    """Samples of a Prometheus text exposition as `{name or name{labels}: value}`.

    Comment and malformed lines are skipped; `NaN`/`+Inf` values are kept as floats.
    """
    samples: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_RE.match(line)
        if match is None:
            continue
        name, labels, raw_value = match.groups()
        try:
            value = float(raw_value)
        except ValueError:
            continue
        samples[name + (labels or "")] = value
    return samples


@dataclass(frozen=True, slots=True)
class ServerMetrics:
    """llama-server's `/metrics` counters and gauges, by name without the `llamacpp:` prefix.

    `get("prompt_tokens_total")` reads one; the properties cover the common ones.
    """

    values: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_text(cls, text: str) -> ServerMetrics:
        """Read a Prometheus text body, keeping the `llamacpp:` samples."""
        return cls(
            {
                name.removeprefix(_LLAMA_PREFIX): value
                for name, value in parse_prometheus_text(text).items()
                if name.startswith(_LLAMA_PREFIX)
            }
        )

    def get(self, name: str, default: float | None = None) -> float | None:
        """The value of `name` (with or without the `llamacpp:` prefix), else `default`."""
        return self.values.get(name.removeprefix(_LLAMA_PREFIX), default)

    @property
    def prompt_tokens_total(self) -> float | None:
        """Prompt tokens evaluated so far (not counting cached ones)."""
        return self.get("prompt_tokens_total")

    @property
    def prompt_tokens_cached_total(self) -> float | None:
        """Prompt tokens reused from the prompt cache so far (newer servers only)."""
        return self.get("prompt_tokens_cached_total")

    @property
    def tokens_predicted_total(self) -> float | None:
        """Tokens generated so far."""
        return self.get("tokens_predicted_total")

    @property
    def requests_processing(self) -> float | None:
        """Requests being processed now."""
        return self.get("requests_processing")

    @property
    def requests_deferred(self) -> float | None:
        """Requests waiting for a free slot now."""
        return self.get("requests_deferred")

    @property
    def prompt_cache_ratio(self) -> float | None:
        """Cached / (cached + evaluated) prompt tokens since the server started; None if unknown."""
        cached = self.prompt_tokens_cached_total
        evaluated = self.prompt_tokens_total
        if cached is None or evaluated is None or not math.isfinite(cached + evaluated):
            return None
        total = cached + evaluated
        return cached / total if total > 0 else 0.0


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


_ssl_context: ssl.SSLContext | None = None


def shared_ssl_context() -> ssl.SSLContext:
    """The default TLS context, built once: building one costs ~60 ms, and health checks repeat."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = httpx.create_ssl_context()
    return _ssl_context


def _get(base_url: str, path: str, api_key: str | None, timeout_s: float) -> httpx.Response | None:
    try:
        return httpx.get(
            base_url.rstrip("/") + path,
            headers=_headers(api_key),
            timeout=timeout_s,
            verify=shared_ssl_context(),
        )
    except (httpx.HTTPError, ValueError):
        return None


def fetch_props(base_url: str, *, api_key: str | None = None, timeout_s: float = 5.0) -> ServerProps | None:
    """GET `/props`; None when the server does not answer 200 with a JSON object."""
    response = _get(base_url, "/props", api_key, timeout_s)
    if response is None or response.status_code != 200:
        return None
    try:
        data = response.json()
    except ValueError:
        return None
    return ServerProps.from_json(data) if isinstance(data, Mapping) else None


def fetch_metrics(
    base_url: str, *, api_key: str | None = None, timeout_s: float = 5.0
) -> ServerMetrics | None:
    """GET `/metrics`; None when it is off (llama-server without `--metrics`) or unreachable."""
    response = _get(base_url, "/metrics", api_key, timeout_s)
    if response is None or response.status_code != 200:
        return None
    return ServerMetrics.from_text(response.text)


def check_health(base_url: str, *, api_key: str | None = None, timeout_s: float = 2.0) -> HealthState:
    """GET `/health`: "ok", "loading" (503, model loading), "unauthorized", "error" or "unreachable"."""
    response = _get(base_url, "/health", api_key, timeout_s)
    if response is None:
        return "unreachable"
    if response.status_code == 200:
        return "ok"
    if response.status_code == 503:
        return "loading"
    if response.status_code in (401, 403):
        return "unauthorized"
    return "error"
