"""AppTest of the Traces page: table, filters, selection, waterfall, span details, downloads."""

from __future__ import annotations

import plotly.graph_objects as go

from app import state
from obs.clock import FakeClock
from obs.trace.ids import SequentialIdGenerator
from obs.trace.spans import create_span, end_span
from obs.trace.traces import Trace, add_span_to_trace, create_trace, end_trace
from tests.app.conftest import open_app
from tests.app.plotly_spec import figures

PAGE = "app/pages/traces.py"


def _trace(clock: FakeClock, ids: SequentialIdGenerator, name: str, ms: float, *, error: bool = False,
           child: str | None = None) -> Trace:
    trace = create_trace(name, {"team": "search"} if child else None, clock=clock, id_generator=ids)
    root = create_span(name, trace.id, clock=clock, id_generator=ids)
    spans = [root]
    if child:
        spans.append(create_span(child, trace.id, root.id, clock=clock, id_generator=ids))
    clock.advance(ms)
    spans = [end_span(s, "error" if error else "success", clock=clock) for s in reversed(spans)]
    for span in spans:
        trace = add_span_to_trace(trace, span)
    ended = end_trace(trace, clock=clock)
    clock.advance(1000)  # the next trace starts a second later
    return ended


def _seeded():
    """Three stored traces with exact durations: fast (100 ms), failed (250 ms), nested (40 ms)."""
    at = open_app(PAGE)
    app = at.session_state[state.APP]
    clock, ids = FakeClock(), SequentialIdGenerator()
    traces = {
        "fast": _trace(clock, ids, "chat fast", 100.0),
        "failed": _trace(clock, ids, "chat failing", 250.0, error=True),
        "nested": _trace(clock, ids, "retrieval pipeline", 40.0, child="lookup"),
    }
    for trace in traces.values():
        app.db.add(trace)  # the history file the page reads
    at.selectbox(key=state.W_RANGE).set_value("All")
    at.selectbox(key=state.W_SCOPE).set_value("Everything")
    at.run()
    return at, app, {key: trace.id for key, trace in traces.items()}


def _waterfall(at) -> go.Figure:
    shown = figures(at)
    assert len(shown) == 1
    return shown[0]


def test_no_traces_yet_says_so() -> None:
    at = open_app(PAGE)
    assert not at.exception
    assert "No traces yet" in at.info[0].value


def test_table_lists_traces_newest_first_and_shows_the_newest_waterfall() -> None:
    at, _, ids = _seeded()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["trace_id"]) == [ids["nested"], ids["failed"], ids["fast"]]
    assert list(table["status"]) == ["success", "error", "success"]
    assert ids["nested"] in at.caption[0].value + "".join(c.value for c in at.caption)
    figure = _waterfall(at)
    labels = figure.layout.yaxis.ticktext
    assert [label.strip("\u00a0") for label in labels] == ["retrieval pipeline", "lookup"]
    assert len(at.main.expander) == 2
    assert len(at.get("download_button")) == 5  # JSON of this trace / all shown; OTLP JSON, Jaeger, Zipkin


def test_a_trace_linked_by_query_parameter_is_selected() -> None:
    at, _, ids = _seeded()
    at.query_params[state.QUERY_TRACE] = ids["failed"]
    at.run()
    assert at.session_state[state.SELECTED_TRACE] == ids["failed"]
    figure = _waterfall(at)
    assert [t.name for t in figure.data] == ["error"]
    assert state.QUERY_TRACE not in at.query_params


def test_picking_a_row_selects_its_trace_and_a_later_link_wins_over_it() -> None:
    at, _, ids = _seeded()
    at.session_state[state.W_TRACE_TABLE] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    at.run()
    assert at.session_state[state.SELECTED_TRACE] == ids["fast"]
    assert [label.strip("\u00a0") for label in _waterfall(at).layout.yaxis.ticktext] == ["chat fast"]
    at.query_params[state.QUERY_TRACE] = ids["failed"]
    at.run()
    assert at.session_state[state.SELECTED_TRACE] == ids["failed"]


def test_errors_only_filter() -> None:
    at, _, ids = _seeded()
    at.toggle(key=state.W_ERRORS_ONLY).set_value(True).run()
    assert list(at.dataframe[0].value["trace_id"]) == [ids["failed"]]


def test_slower_than_filter_uses_trace_duration() -> None:
    at, _, ids = _seeded()
    at.number_input(key=state.W_SLOWER_MS).set_value(100).run()
    assert list(at.dataframe[0].value["trace_id"]) == [ids["failed"], ids["fast"]]
    at.number_input(key=state.W_SLOWER_MS).set_value(101).run()
    assert list(at.dataframe[0].value["trace_id"]) == [ids["failed"]]


def test_text_search_matches_names_and_ids_and_reports_no_match() -> None:
    at, _, ids = _seeded()
    at.text_input(key=state.W_SEARCH).set_value("PIPELINE").run()
    assert list(at.dataframe[0].value["trace_id"]) == [ids["nested"]]
    at.text_input(key=state.W_SEARCH).set_value(ids["failed"]).run()
    assert list(at.dataframe[0].value["trace_id"]) == [ids["failed"]]
    at.text_input(key=state.W_SEARCH).set_value("no such thing").run()
    assert "No trace matches" in at.warning[0].value
    assert not at.dataframe


def test_download_of_the_selected_trace_is_its_json() -> None:
    at, _, ids = _seeded()
    at.session_state[state.SELECTED_TRACE] = ids["fast"]
    at.run()
    selected, every = at.get("download_button")[:2]
    assert selected.proto.label == "Download this trace (JSON)"
    assert every.proto.label == "Download all 3 shown (JSON)"
    figure = _waterfall(at)
    assert [label.strip("\u00a0") for label in figure.layout.yaxis.ticktext] == ["chat fast"]
    assert list(figure.data[0].x) == [100.0]


def test_traces_another_program_wrote_to_the_file_are_listed_and_filtered_by_service(history_db) -> None:
    import obs
    from obs.storage.sqlite import SqliteTraceStore

    at = open_app(PAGE)
    with SqliteTraceStore(history_db) as other:  # another program's own connection to the same file
        tracer = obs.Tracer(store=other, service_name="my-script")
        with tracer.start_span("script call"):
            pass
    at.selectbox(key=state.W_SCOPE).set_value("Everything").run()
    table = at.dataframe[0].value
    assert list(table["service"]) == ["my-script"]
    assert "Service: my-script" in at.selectbox(key=state.W_SCOPE).options
    at.selectbox(key=state.W_SCOPE).set_value("Service: my-script").run()
    assert list(at.dataframe[0].value["name"]) == ["script call"]
    at.selectbox(key=state.W_SCOPE).set_value("This browser session").run()
    assert not at.dataframe
    assert "No traces yet in this browser session" in at.info[0].value
