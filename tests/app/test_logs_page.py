"""AppTest of the Logs page: newest first, level and trace filters, links to traces."""

from __future__ import annotations

from app import state
from tests.app.conftest import open_app, record_request

PAGE = "app/pages/logs.py"


def _seeded():
    at = open_app(PAGE)
    app = at.session_state[state.APP]
    ok = record_request(app, latency_ms=100.0, name="chat first")
    failed = record_request(app, latency_ms=100.0, error=True, name="chat second")
    app.logger.warn("a warning without a trace")
    at.run()
    return at, app, ok, failed


def test_no_logs_yet() -> None:
    at = open_app(PAGE)
    assert not at.exception
    assert "No log entries yet" in at.info[0].value


def test_entries_are_newest_first() -> None:
    at, *_ = _seeded()
    assert not at.exception
    table = at.dataframe[0].value
    messages = list(table["message"])
    assert messages.index("a warning without a trace") < messages.index("chat second finished")
    assert messages.index("chat second finished") < messages.index("chat first finished")


def test_level_filter_is_exact() -> None:
    at, _, _, failed = _seeded()
    at.selectbox(key=state.W_LOG_LEVEL).set_value("error").run()
    table = at.dataframe[0].value
    assert set(table["level"]) == {"error"}
    assert failed in set(table["trace_id"])


def test_trace_filter_shows_its_entries_and_a_link_to_the_trace() -> None:
    at, _, ok, _ = _seeded()
    at.text_input(key=state.W_LOG_TRACE).set_value(ok).run()
    table = at.dataframe[0].value
    assert set(table["trace_id"]) == {ok}
    links = at.get("page_link")
    assert any(ok in link.proto.label for link in links)
    assert all(state.QUERY_TRACE + "=" + ok in link.proto.query_string for link in links)


def test_picking_an_entry_of_a_trace_offers_a_link_to_it() -> None:
    at, _, _, failed = _seeded()
    assert not at.get("page_link")
    table = at.dataframe[0].value
    row = list(table["trace_id"]).index(failed)
    at.session_state[state.W_LOG_TABLE] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    at.run()
    links = at.get("page_link")
    assert [link.proto.label for link in links] == [f"Open trace {failed}"]


def test_everything_reads_the_log_entries_of_every_program_from_the_file(history_db) -> None:
    from obs.logs import LLMLogger
    from obs.storage.exporter import SqliteLogSink

    at, *_ = _seeded()
    from obs.storage.sqlite import SqliteTraceStore
    from obs.trace.tracer import Tracer

    with SqliteTraceStore(history_db) as other:  # another program's tracer and logger on the file
        sink = SqliteLogSink(other, service="my-script")
        with Tracer(store=other, service_name="my-script").start_span("script call"):
            LLMLogger(stream=sink).info("hello from my script")
        assert sink.close()
    at.selectbox(key=state.W_SCOPE).set_value("Everything").run()
    messages = list(at.dataframe[0].value["message"])
    assert messages[0] == "hello from my script"
    assert "chat first finished" in messages
    at.selectbox(key=state.W_SCOPE).set_value("Service: my-script").run()
    assert list(at.dataframe[0].value["message"]) == ["hello from my script"]
