"""AppTest of the history file: its settings in the sidebar, "clear history", and files the app cannot use."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app import state
from obs.storage.sqlite import SqliteTraceStore
from tests.app.conftest import open_app, plain, record_request


def _history_text(at) -> str:
    return "\n".join(plain(m.value) for m in at.sidebar.markdown) + "\n" + "\n".join(
        plain(c.value) for c in at.sidebar.caption)


def _count(path: Path) -> int:
    with SqliteTraceStore(path) as reopened:
        return len(reopened)


def test_the_sidebar_shows_the_file_its_traces_and_retention(history_db: Path) -> None:
    at = open_app()
    record_request(at.session_state[state.APP], latency_ms=100.0)
    at.run()
    text = _history_text(at)
    assert f"File: `{history_db}`" in text
    assert "1 trace · 1 request · 1 log entry" in text
    assert "Retention: 7 days, at most 100,000 traces; applied in the background." in text
    assert at.sidebar.number_input(key=state.W_KEEP_DAYS).value == 7
    assert at.sidebar.number_input(key=state.W_KEEP_TRACES).value == 100_000


def test_retention_set_in_the_sidebar_is_kept_in_the_file(history_db: Path) -> None:
    at = open_app()
    at.sidebar.number_input(key=state.W_KEEP_DAYS).set_value(2.0)
    at.sidebar.number_input(key=state.W_KEEP_TRACES).set_value(500).run()
    assert not at.exception
    with SqliteTraceStore(history_db) as reopened:
        assert (reopened.retention.max_age_s, reopened.retention.max_traces) == (2 * 86400.0, 500)
    at.run()
    assert "Retention: 2 days, at most 500 traces" in _history_text(at)


def test_clear_history_asks_first_and_then_empties_the_file(history_db: Path) -> None:
    at = open_app()
    record_request(at.session_state[state.APP], latency_ms=100.0)
    at.run()
    at.sidebar.button(key="history_clear").click().run()
    assert any("cannot be undone" in w.value for w in at.sidebar.warning)
    at.sidebar.button(key="history_clear_no").click().run()
    assert _count(history_db) == 1  # cancelled: nothing removed
    at.sidebar.button(key="history_clear").click().run()
    at.sidebar.button(key="history_clear_yes").click().run()
    assert not at.exception
    assert "History cleared." in [i.value for i in at.sidebar.info]
    assert _count(history_db) == 0


@pytest.mark.parametrize("kind", ["not a database", "newer version", "directory"])
def test_a_file_the_app_cannot_use_is_explained_and_the_chat_still_works(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_server,
) -> None:
    path = tmp_path / f"bad-{kind.replace(' ', '-')}.db"
    if kind == "not a database":
        path.write_bytes(b"these are my notes, not a database\n" * 200)
    elif kind == "newer version":
        SqliteTraceStore(path).close()
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA user_version = 999")
        conn.commit()
        conn.close()
    else:
        path.mkdir()
    before = path.read_bytes() if path.is_file() else None
    monkeypatch.setenv("OBS_DB_PATH", str(path))
    at = open_app()
    assert not at.exception
    warnings = [plain(w.value) for w in at.sidebar.warning]
    assert any(w.startswith("History is kept in memory for this run only:") and str(path) in w
               for w in warnings), warnings
    assert "File: in memory (nothing is kept after the app stops)" in _history_text(at)
    at.chat_input[0].set_value("hello").run()
    assert not at.exception
    answers = [md.value for message in at.chat_message for md in message.markdown]
    assert any("Hello from the fake server." in text for text in answers), answers
    if before is not None:
        assert path.read_bytes() == before  # never written to


def test_alert_state_changes_are_stored_in_the_file(history_db: Path) -> None:
    from obs.storage.queries import DashboardQueries

    at = open_app()
    app = at.session_state[state.APP]
    app.set_alert_thresholds(0.01, 5000.0, 1)
    record_request(app, latency_ms=100.0, error=True)
    app.evaluate_alerts()  # as the background evaluator does
    app.evaluate_alerts()  # nothing new: nothing stored twice
    with SqliteTraceStore(history_db) as reopened:
        stored = DashboardQueries(reopened).alert_transitions()
    assert [(t.rule, t.from_status) for t in reversed(stored)] == [
        (t.rule, t.from_status) for t in app.alerts.history]
    assert stored and stored[-1].rule == "high_error_rate"
