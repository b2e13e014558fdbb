"""A real peer: OtlpHttpExporter sends the traces of a real chat to Arize Phoenix, read back by its REST API.

Phoenix (`arize-phoenix` from PyPI) lives in a virtual environment of its
own, never the project's: `$OBS_PHOENIX_VENV`, by default
`~/.cache/obs/phoenix-venv` (`.ci/run` creates it). The test starts
`phoenix serve` on free loopback ports with a temporary working directory
and no outside resources or telemetry, chats with the embedded llama-server
through an InstrumentedClient whose tracer exports to Phoenix (project
named by the `x-project-name` header), and reads the spans back with
`GET /v1/projects/{project}/spans`: names, ids, parent links, attributes and
token counts must match what obs recorded. Without Phoenix the test is
skipped with a message; with `CI` set it fails instead.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from obs import semconv
from obs.export import OtlpHttpExporter
from obs.llm.client import InstrumentedClient
from obs.llm.llama.server import EmbeddedServer, find_free_port
from obs.trace.processors import BatchProcessor, InMemoryExporter, SimpleProcessor
from obs.trace.tracer import Tracer

pytestmark = pytest.mark.integration

PROJECT = "obs-export-test"
_INSTALL = ("python3 -m venv {venv} && {venv}/bin/python -m pip install 'arize-phoenix>=20.26,<21'")


def phoenix_venv() -> Path:
    """Where Phoenix's own virtual environment is: $OBS_PHOENIX_VENV, else ~/.cache/obs/phoenix-venv."""
    chosen = os.environ.get("OBS_PHOENIX_VENV")
    if chosen:
        return Path(chosen)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "obs" / "phoenix-venv"


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`phoenix serve` on free loopback ports in a temporary working directory; yields its base URL."""
    venv = phoenix_venv()
    executable = venv / "bin" / "phoenix"
    if not executable.exists():
        message = (f"Arize Phoenix is not installed in {venv} (set OBS_PHOENIX_VENV to another place); "
                   f"install it with: {_INSTALL.format(venv=venv)}")
        if os.environ.get("CI"):
            pytest.fail(message + " (.ci/run does this)")
        pytest.skip(message)
    workdir = tmp_path_factory.mktemp("phoenix")
    port, grpc_port = find_free_port(), find_free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_"))}
    env.update({
        "PHOENIX_WORKING_DIR": str(workdir), "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc_port), "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        "PHOENIX_TELEMETRY_ENABLED": "false",
    })
    log = (workdir / "phoenix.log").open("wb")
    process = subprocess.Popen([str(executable), "serve"], cwd=workdir, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        started = _wait(lambda: process.poll() is not None or _healthy(base), 180.0)
        if not started or process.poll() is not None:
            pytest.fail(f"phoenix serve did not start: {(workdir / 'phoenix.log').read_text()[-3000:]}")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _healthy(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=2.0).status_code == 200
    except httpx.TransportError:
        return False


def _wait(condition: Any, timeout_s: float) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return bool(condition())


def _phoenix_spans(base: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{base}/v1/projects/{PROJECT}/spans", params={"limit": 1000}, timeout=10.0)
    if response.status_code == 404:  # the project is made when its first span is stored
        return []
    response.raise_for_status()
    return list(response.json()["data"])


def test_a_real_chat_exported_to_phoenix_reads_back_the_same(
    phoenix: str, embedded_server: EmbeddedServer
) -> None:
    recorded = InMemoryExporter()
    otlp = OtlpHttpExporter(phoenix + "/v1/traces", headers={"x-project-name": PROJECT}, timeout_s=30.0)
    tracer = Tracer(processors=[SimpleProcessor(recorded), BatchProcessor(otlp)], service_name="phoenix-test")
    question = [{"role": "user", "content": "Name a colour."}]
    with (InstrumentedClient(embedded_server.url, tracer=tracer, timeout=60) as client,
          tracer.start_span("answer question", {"user.tier": "pro"})):
        client.chat(question, max_tokens=8, temperature=0.0, seed=1)
    assert tracer.shutdown(timeout_s=60.0)
    assert otlp.stats().failed == 0 and otlp.stats().rejected_spans == 0
    (trace,) = recorded.traces
    assert len(trace.spans) == 2

    assert _wait(lambda: len(_phoenix_spans(phoenix)) >= len(trace.spans), 60.0)
    found = {s["context"]["span_id"]: s for s in _phoenix_spans(phoenix)}
    assert set(found) == {s.id for s in trace.spans}
    for span in trace.spans:
        theirs = found[span.id]
        assert theirs["name"] == span.name
        assert theirs["context"]["trace_id"] == trace.id
        assert theirs["parent_id"] == span.parent_id
        assert theirs["status_code"] == "OK"
    root, chat = sorted(trace.spans, key=lambda s: s.parent_id is not None)
    assert found[root.id]["attributes"]["user.tier"] == "pro"
    theirs = found[chat.id]["attributes"]
    ours = chat.attributes
    for key in (semconv.GEN_AI_OPERATION_NAME, semconv.GEN_AI_PROVIDER_NAME, semconv.GEN_AI_REQUEST_MODEL,
                semconv.GEN_AI_RESPONSE_MODEL, semconv.GEN_AI_REQUEST_MAX_TOKENS, semconv.SERVER_PORT,
                semconv.LLAMA_CPP_TIMINGS_PREDICTED_N):
        assert theirs[key] == ours[key], key
    assert ours[semconv.GEN_AI_USAGE_INPUT_TOKENS] > 0 and ours[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] > 0
    assert theirs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == ours[semconv.GEN_AI_USAGE_INPUT_TOKENS]
    assert theirs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == ours[semconv.GEN_AI_USAGE_OUTPUT_TOKENS]
    # Phoenix reads the GenAI token counts into its own (OpenInference) ones too.
    assert theirs["llm.token_count.prompt"] == ours[semconv.GEN_AI_USAGE_INPUT_TOKENS]
    assert theirs["llm.token_count.completion"] == ours[semconv.GEN_AI_USAGE_OUTPUT_TOKENS]
    assert found[chat.id]["span_kind"] == "LLM"
