"""The dashboard receives OTLP/HTTP traces: OpenTelemetry's own SDK sends one, and a user finds it.

The app is served with its history in a temporary file and its receiver on
a free port. A user reads the `OTEL_EXPORTER_OTLP_ENDPOINT` line on the
Export & receive page; a program instrumented with the OpenTelemetry SDK
(`OTLPSpanExporter`, OTLP/HTTP protobuf) sends a trace with GenAI attributes
there; the trace reaches the app's file with its names, parent links and
tokens, and the Traces page shows it: its row (name, tokens), and its
waterfall with the model call indented under its parent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from obs.llm.llama.server import find_free_port
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.traces import Trace
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS, run_app
from tests.browser.pages import (
    PLOTS,
    choose,
    grid,
    open_page,
    select_row,
    shot,
    wait_for_grid_records,
    wait_idle,
)

_ARRIVAL_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Path]]:
    """(app URL, receiver port, history file) of a dashboard with no model server behind it."""
    db = tmp_path_factory.mktemp("history") / "obs.db"
    receiver_port = find_free_port()
    env = {"LLAMA_SERVER_URL": f"http://127.0.0.1:{find_free_port()}", "OBS_EMBEDDED_SERVER": "0",
           "OBS_DB_PATH": str(db), "OBS_RECEIVER_PORT": str(receiver_port)}
    with run_app(tmp_path_factory.mktemp("streamlit"), env, name="streamlit-receiver") as url:
        yield url, receiver_port, db


@pytest.fixture(scope="module")
def tab(served: tuple[str, int, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Chromium tab on the served app."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1440, "height": 1000},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(60_000)
            page.goto(served[0])
            wait_idle(page)
            yield page
        finally:
            context.close()


def _send_with_opentelemetry_sdk(endpoint: str) -> tuple[str, str, str]:
    """Send a root and a GenAI client child as an instrumented program does; (trace, root, child) ids."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    provider = TracerProvider(resource=Resource.create({"service.name": "trip-planner"}))
    exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
    sent = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(SimpleSpanProcessor(sent))
    tracer = provider.get_tracer("trip-planner")
    with tracer.start_as_current_span("plan trip") as root, tracer.start_as_current_span(
        "chat qwen2.5", kind=SpanKind.CLIENT
    ) as child:
        child.set_attributes({
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "llama.cpp",
            "gen_ai.request.model": "qwen2.5", "gen_ai.response.model": "qwen2.5",
            "gen_ai.usage.input_tokens": 31, "gen_ai.usage.output_tokens": 9,
        })
    provider.shutdown()
    assert len(sent.get_finished_spans()) == 2
    trace_id = f"{root.get_span_context().trace_id:032x}"
    return trace_id, f"{root.get_span_context().span_id:016x}", f"{child.get_span_context().span_id:016x}"


def _stored(db: Path, trace_id: str) -> Trace:
    """Wait until the app's file holds the whole trace (both spans); return it."""
    deadline = time.monotonic() + _ARRIVAL_TIMEOUT_S
    with SqliteTraceStore(str(db)) as store:
        while True:
            trace = store.get(trace_id)
            if trace is not None and len(trace.spans) == 2:
                return trace
            assert time.monotonic() < deadline, f"trace {trace_id} not stored within {_ARRIVAL_TIMEOUT_S} s"
            time.sleep(0.05)  # polling the file for a condition, not waiting a fixed time


def _endpoint_shown(tab: Any) -> str:
    """The endpoint the Export & receive page tells a user to set, read from the page."""
    open_page(tab, "Export & receive")
    code = tab.get_by_test_id("stCode").first
    code.wait_for()
    line = next(text for text in code.inner_text().splitlines()
                if text.startswith("OTEL_EXPORTER_OTLP_ENDPOINT="))
    return line.split("=", 1)[1]


def test_the_export_page_tells_how_to_send_traces_in(tab: Any, served: tuple[str, int, Path],
                                                     artifacts: Path) -> None:
    _, port, _ = served
    open_page(tab, "Export & receive")
    code = tab.get_by_test_id("stCode").first
    code.wait_for()
    assert f"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{port}" in code.inner_text()
    shot(tab, artifacts, "export-receive")


def test_a_trace_sent_by_the_opentelemetry_sdk_reaches_the_apps_file_whole(
    tab: Any, served: tuple[str, int, Path]
) -> None:
    _, _, db = served
    trace_id, root_id, child_id = _send_with_opentelemetry_sdk(_endpoint_shown(tab))
    stored = _stored(db, trace_id)
    spans = {span.name: span for span in stored.spans}
    assert spans["plan trip"].parent_id is None and spans["plan trip"].id == root_id
    assert spans["chat qwen2.5"].parent_id == root_id and spans["chat qwen2.5"].id == child_id
    assert spans["chat qwen2.5"].attributes["gen_ai.usage.input_tokens"] == 31
    assert spans["chat qwen2.5"].attributes["gen_ai.usage.output_tokens"] == 9
    assert stored.metadata.get("service.name") == "trip-planner"


def test_a_trace_sent_by_the_opentelemetry_sdk_shows_on_the_traces_page(
    tab: Any, served: tuple[str, int, Path], artifacts: Path
) -> None:
    _, _, db = served
    trace_id, _, _ = _send_with_opentelemetry_sdk(_endpoint_shown(tab))
    _stored(db, trace_id)
    open_page(tab, "Traces")
    choose(tab, "Scope", "Everything")  # another program's traces are not this browser session's
    records = wait_for_grid_records(grid(tab), 1)
    row = next(r for r in records if r["Trace id"] == trace_id)
    assert (row["Name"], row["Service"], row["Spans"]) == ("plan trip", "trip-planner", "2")
    assert (row["Tokens in"], row["Tokens out"]) == ("31", "9")
    select_row(tab, grid(tab), records.index(row))
    tab.get_by_role("heading", name="plan trip", exact=True).wait_for()
    tab.get_by_text(f"trace {trace_id}").wait_for()
    waterfall = next(p for p in tab.evaluate(PLOTS) if p["ticktext"])
    labels = waterfall["ticktext"]
    assert [label.strip("\u00a0") for label in labels] == ["plan trip", "chat qwen2.5"]
    assert not labels[0].startswith("\u00a0") and labels[1].startswith("\u00a0")  # the call under its parent
    shot(tab, artifacts, "traces-received")


def test_the_forwarding_panel_sends_received_traces_on_and_counts_them(
    tab: Any, served: tuple[str, int, Path], artifacts: Path
) -> None:
    from obs.receive.app import make_receiver_app
    from obs.trace.processors import InMemoryExporter
    from tests.receive.support import serving, wait_until

    secret = "browser-forwarding-secret-0042"
    forwarded = InMemoryExporter()
    peer = make_receiver_app(forwarded, token=secret)  # a second backend, which wants its key
    try:
        with serving(peer) as base:
            endpoint = _endpoint_shown(tab)
            tab.get_by_role("textbox", name="OTLP endpoint").fill(base)
            tab.get_by_role("textbox", name="Headers").fill(f"Authorization=Bearer {secret}")
            tab.get_by_role("button", name="Forward to this endpoint").click()
            tab.get_by_text(f"Forwarding to {base}/v1/traces").wait_for()
            assert tab.get_by_role("textbox", name="Headers").input_value() == ""
            trace_id, _, _ = _send_with_opentelemetry_sdk(endpoint)
            assert wait_until(lambda: any(t.id == trace_id for t in forwarded.traces), 30.0)
            # The SDK sends each span as it ends, so the trace may be forwarded in parts (one or two).
            assert _exported_shown(tab) in ("1", "2")
            assert secret not in tab.locator("body").inner_text()
            shot(tab, artifacts, "export-forwarding")
            tab.get_by_role("button", name="Stop forwarding").click()
            tab.get_by_role("button", name="Forward to this endpoint").wait_for()
    finally:
        peer.state.ingest.shutdown(5.0)


def _exported_shown(tab: Any) -> str:
    """The "Exported traces" count the page shows once it is not 0, refreshing as a user would."""
    value = tab.get_by_test_id("stMetric").filter(has_text="Exported traces").get_by_test_id("stMetricValue")
    deadline = time.monotonic() + _ARRIVAL_TIMEOUT_S
    while True:
        tab.get_by_role("button", name="Refresh counters").click()
        wait_idle(tab)
        shown = value.inner_text().strip()
        if shown != "0" or time.monotonic() > deadline:
            return shown
