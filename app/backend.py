"""Finding and checking the llama-server the dashboard talks to.

`validate_server_url` says whether a URL typed in the sidebar can be used;
`check_health` asks a server's `/health` and `/props` with a short timeout and
reports ok / loading / unreachable plus the model, context size and build;
`choose_server_url` applies the start-up rule: the configured URL if a server
answers there, otherwise the embedded server (unless it is turned off).
Nothing here imports streamlit, so the rules are tested on their own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import httpx

from obs.llm.llama.props import ServerProps, shared_ssl_context

__all__ = [
    "DEFAULT_SERVER_URL",
    "EMBEDDED_ENV",
    "SERVER_URL_ENV",
    "ServerHealth",
    "check_health",
    "choose_server_url",
    "configured_server_url",
    "embedded_allowed",
    "validate_server_url",
]

DEFAULT_SERVER_URL = "http://127.0.0.1:8033"
SERVER_URL_ENV = "LLAMA_SERVER_URL"
EMBEDDED_ENV = "OBS_EMBEDDED_SERVER"
HealthStatus = Literal["ok", "loading", "unreachable"]


@dataclass(frozen=True, slots=True)
class ServerHealth:
    """What one look at a server found.

    `status` is "ok" (ready), "loading" (answers 503 while loading its model)
    or "unreachable" (no answer, or not a llama-server); `detail` says why in a
    sentence. `model`, `n_ctx` (context per slot) and `build` come from
    `/props` when the server gives them.
    """

    url: str
    status: HealthStatus
    detail: str
    model: str | None = None
    n_ctx: int | None = None
    build: str | None = None


def validate_server_url(url: object) -> str:
    """Return `url` stripped of spaces and a trailing slash if it is a usable http(s) URL.

    Raises ValueError saying what is wrong: empty, not http/https, or no host.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("server URL must not be empty: give one like http://127.0.0.1:8033")
    text = url.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 -- reading it validates the port number
    except ValueError as exc:
        raise ValueError(f"server URL {text!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"server URL must start with http:// or https://, got {text!r}")
    if not parts.hostname:
        raise ValueError(f"server URL {text!r} has no host: give one like http://127.0.0.1:8033")
    return text.rstrip("/")


def configured_server_url(environ: Mapping[str, str] | None = None) -> str:
    """The URL from `LLAMA_SERVER_URL`, or the default http://127.0.0.1:8033 when unset or blank.

    Raises ValueError (from `validate_server_url`) when the variable is set to a bad URL.
    """
    env = os.environ if environ is None else environ
    value = env.get(SERVER_URL_ENV, "").strip()
    return validate_server_url(value) if value else DEFAULT_SERVER_URL


def embedded_allowed(environ: Mapping[str, str] | None = None) -> bool:
    """False only when `OBS_EMBEDDED_SERVER` is `0` (or false/no/off)."""
    env = os.environ if environ is None else environ
    return env.get(EMBEDDED_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def check_health(url: str, timeout_s: float = 0.5, *, client: httpx.Client | None = None) -> ServerHealth:
    """Ask `url`/health (and /props once healthy); never raises.

    Each request waits at most `timeout_s` seconds, so a page can call this
    on every refresh. A server that answers /health but not /props is still
    "ok", with the facts left None.
    """
    own = client is None
    http = client if client is not None else httpx.Client(timeout=timeout_s, verify=shared_ssl_context())
    try:
        try:
            response = http.get(f"{url}/health", timeout=timeout_s)
        except httpx.TimeoutException:
            return ServerHealth(url, "unreachable", f"no answer from {url} within {timeout_s:g} s")
        except httpx.HTTPError as exc:
            return ServerHealth(url, "unreachable", f"cannot connect to {url}: {type(exc).__name__}")
        if response.status_code == 503:
            return ServerHealth(url, "loading", "the server is loading its model")
        if response.status_code != 200:
            return ServerHealth(url, "unreachable", f"/health answered HTTP {response.status_code}")
        try:
            props = http.get(f"{url}/props", timeout=timeout_s).json()
        except (httpx.HTTPError, ValueError):
            props = {}
        facts = ServerProps.from_json(props)
        return ServerHealth(url, "ok", "ready", facts.model_name, facts.n_ctx, facts.build)
    finally:
        if own:
            http.close()


def choose_server_url(
    configured: str,
    *,
    allow_embedded: bool,
    start_embedded: Callable[[], str],
    probe: Callable[[str], ServerHealth] = check_health,
) -> tuple[str, str]:
    """Pick the server for a new session; return (url, how it was chosen).

    The configured URL wins when a server answers there (ok or loading).
    Otherwise `start_embedded()` gives the embedded server's URL, unless
    `allow_embedded` is False or starting it fails; then the configured URL
    is kept and the sidebar shows it as unreachable.
    """
    health = probe(configured)
    if health.status != "unreachable":
        return configured, f"llama-server at {configured}"
    if not allow_embedded:
        return configured, f"no server at {configured}; the embedded server is off ({EMBEDDED_ENV}=0)"
    try:
        return start_embedded(), f"embedded llama-server, started because nothing answered at {configured}"
    except Exception as exc:  # the app must still open to show what went wrong
        return configured, f"no server at {configured}, and the embedded server failed to start: {exc}"
