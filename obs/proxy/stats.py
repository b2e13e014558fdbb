"""What the recording proxy counts as it relays: `ProxyStats` (read by the dashboard and tests)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ProxyStats"]


@dataclass
class ProxyStats:
    """Counts of what the proxy did (read them at any time; written on its event loop only).

    `requests` relayed or tried; `recorded` model calls recorded; `no_answer`
    requests answered 502/504 by the proxy itself; `retried` requests sent
    again after a pooled connection turned out closed; `connects_waited`
    requests that waited for a new upstream connection (none was open and
    ready); `broken` answers cut because the upstream's broke; `client_gone`
    callers that left before the end; `telemetry_errors` failures inside
    recording (logged, never raised); `kept` model calls a kept
    connection's thread relayed from the request's arrival to the answer's
    end (`obs.proxy._kept`; counted among `requests` as well).
    """

    requests: int = 0
    recorded: int = 0
    no_answer: int = 0
    retried: int = 0
    connects_waited: int = 0
    broken: int = 0
    client_gone: int = 0
    telemetry_errors: int = 0
    kept: int = 0
