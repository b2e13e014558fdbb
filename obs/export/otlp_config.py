"""Where and how the OTLP exporter sends: from code, else the OpenTelemetry variables, else defaults.

For each setting the argument given in code wins, then the `_TRACES_`
variable, then the general one, then the default (as OpenTelemetry SDKs do):

- endpoint: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is), else
  `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces` appended; default
  `http://localhost:4318/v1/traces`;
- protocol (`_PROTOCOL`): `http/protobuf` (default) or `http/json`; `grpc`
  is refused with a clear error;
- headers (`_HEADERS`): `k1=v1,k2=v2`, values URL-encoded; default none;
- timeout (`_TIMEOUT`): milliseconds; default 10 s;
- compression (`_COMPRESSION`): `gzip` (default) or `none`;
- `OTEL_SERVICE_NAME`: the service of every trace sent (default: each
  trace's own `service.name`).

Each `_NAME` above is read as `OTEL_EXPORTER_OTLP_TRACES_NAME`, then
`OTEL_EXPORTER_OTLP_NAME`.

An endpoint given in code is used as is, except that one with no path
(`http://collector:4318`) gets `/v1/traces`, since nothing else could be
meant. Every value is checked here: a ValueError names the argument or
variable, what is allowed, and never quotes a header value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from obs._validate import redact_url

__all__ = ["PROTOCOLS", "OtlpConfig", "otlp_config"]

PROTOCOLS = ("http/protobuf", "http/json")
COMPRESSIONS = ("gzip", "none")
DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
TRACES_PATH = "/v1/traces"
_PREFIX = "OTEL_EXPORTER_OTLP_"
_MAX_TIMEOUT_S = 3600.0


@dataclass(frozen=True, slots=True)
class OtlpConfig:
    """A checked OTLP/HTTP exporter configuration. The repr names the headers, never their values."""

    endpoint: str
    protocol: str
    headers: Mapping[str, str] = field(repr=False)
    timeout_s: float
    compression: str
    service_name: str | None

    def __repr__(self) -> str:
        return (
            f"OtlpConfig(endpoint={redact_url(self.endpoint)!r}, protocol={self.protocol!r}, "
            f"headers={sorted(self.headers)!r}, timeout_s={self.timeout_s!r}, "
            f"compression={self.compression!r}, service_name={self.service_name!r})"
        )


def check_endpoint(owner: str, source: str, url: object) -> str:
    """`url` if it is an http(s) URL with a host; ValueError naming `source` otherwise (secrets masked)."""
    parts = None
    if isinstance(url, str):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (a bad port raises only when read)
        except ValueError:
            parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        shown = redact_url(url) if isinstance(url, str) else repr(url)
        raise ValueError(
            f"{owner}: {source} must be an http:// or https:// URL such as "
            f"http://localhost:4318/v1/traces, got {shown!r}"
        )
    return url  # type: ignore[return-value]


def _choose(
    env: Mapping[str, str], name: str, given: Any
) -> tuple[Any, str]:
    """The value of a setting and where it came from: the argument, else the variables, else None."""
    if given is not None:
        return given, name.lower()
    for variable in (f"{_PREFIX}TRACES_{name}", f"{_PREFIX}{name}"):
        value = env.get(variable)
        if value is not None and value.strip():
            return value.strip(), variable
    return None, ""


def _protocol(owner: str, env: Mapping[str, str], given: str | None) -> str:
    value, source = _choose(env, "PROTOCOL", given)
    if value is None:
        return "http/protobuf"
    if value == "grpc":
        raise ValueError(
            f"{owner}: {source} 'grpc' is not supported: obs sends OTLP over HTTP; use 'http/protobuf' "
            "(port 4318 on a collector) or 'http/json'"
        )
    if value not in PROTOCOLS:
        raise ValueError(f"{owner}: {source} must be one of {PROTOCOLS}, got {value!r}")
    return value


def _compression(owner: str, env: Mapping[str, str], given: str | None) -> str:
    value, source = _choose(env, "COMPRESSION", given)
    if value is None:
        return "gzip"
    if value not in COMPRESSIONS:
        raise ValueError(f"{owner}: {source} must be one of {COMPRESSIONS}, got {value!r}")
    return value


def _timeout(owner: str, env: Mapping[str, str], given: float | None) -> float:
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int | float) or not (
            math.isfinite(given) and 0 < given <= _MAX_TIMEOUT_S
        ):
            raise ValueError(f"{owner}: timeout_s must be a number of seconds in (0, 3600], got {given!r}")
        return float(given)
    value, source = _choose(env, "TIMEOUT", None)
    if value is None:
        return 10.0
    try:
        ms = float(value)
    except ValueError:
        ms = math.nan
    if not (math.isfinite(ms) and 0 < ms <= _MAX_TIMEOUT_S * 1000):
        raise ValueError(
            f"{owner}: {source} must be a number of ms (milliseconds) in (0, 3600000], e.g. 10000; "
            f"got {value!r}"
        )
    return ms / 1000.0


def parse_headers(owner: str, source: str, text: str) -> dict[str, str]:
    """`k1=v1,k2=v2` (values URL-encoded) as a dict; ValueError names an entry by position and key only."""
    headers: dict[str, str] = {}
    for position, entry in enumerate(text.split(","), start=1):
        if not entry.strip():
            continue
        key, sep, value = entry.partition("=")
        key = unquote(key.strip())
        if not sep or not key:
            raise ValueError(
                f"{owner}: {source} entry {position} is not key=value (write k1=v1,k2=v2 with URL-encoded "
                "values)"
            )
        headers[key] = unquote(value.strip())
    return headers


def check_headers(owner: str, headers: object) -> dict[str, str]:
    """`headers` as a dict of str to str without line breaks; ValueError names a bad header, not its value."""
    if not isinstance(headers, Mapping):
        raise ValueError(f"{owner}: headers must be a mapping of header names to values, e.g. "
                         f"{{'authorization': 'Bearer ...'}}; got {type(headers).__name__}")
    out: dict[str, str] = {}
    for key, value in headers.items():
        if not isinstance(key, str) or not key or any(c in key for c in "\r\n:") or key != key.strip():
            raise ValueError(f"{owner}: header name {key!r} is not a valid HTTP header name")
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise ValueError(
                f"{owner}: the value of header {key!r} must be a string without line breaks "
                f"(got a {type(value).__name__}; the value itself is not shown)"
            )
        out[key] = value
    return out


def _endpoint(owner: str, env: Mapping[str, str], given: str | None) -> str:
    if given is not None:
        url = check_endpoint(owner, "endpoint", given)
        if urlsplit(url).path in ("", "/"):
            url = url.rstrip("/") + TRACES_PATH
        return url
    specific = env.get(f"{_PREFIX}TRACES_ENDPOINT", "").strip()
    if specific:
        return check_endpoint(owner, f"{_PREFIX}TRACES_ENDPOINT", specific)
    general = env.get(f"{_PREFIX}ENDPOINT", "").strip()
    if general:
        check_endpoint(owner, f"{_PREFIX}ENDPOINT", general)
        return general.rstrip("/") + TRACES_PATH
    return DEFAULT_ENDPOINT


def otlp_config(
    owner: str,
    env: Mapping[str, str],
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    compression: str | None = None,
) -> OtlpConfig:
    """The configuration from the arguments given (not None) and `env` (see the module docstring)."""
    if headers is not None:
        header_map = check_headers(owner, headers)
    else:
        text, source = _choose(env, "HEADERS", None)
        header_map = check_headers(owner, parse_headers(owner, source, text)) if text else {}
    service = env.get("OTEL_SERVICE_NAME", "").strip() or None
    return OtlpConfig(
        endpoint=_endpoint(owner, env, endpoint),
        protocol=_protocol(owner, env, protocol),
        headers=header_map,
        timeout_s=_timeout(owner, env, timeout_s),
        compression=_compression(owner, env, compression),
        service_name=service,
    )
