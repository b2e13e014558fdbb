"""Tests of app.state.AppSession: settings, client rebuilds, chat turns as traces of a conversation, and
what the pages read."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.charts import Threshold
from app.state import TURN_SPAN, AppSession, ChatTurn, Settings
from obs import semconv
from obs.trace.sampling.head import AlwaysOff, ParentBased
from tests.app.fake_server import FakeLlamaServer


@pytest.fixture
def fake() -> Iterator[FakeLlamaServer]:
    with FakeLlamaServer("Fine, thanks.") as server:
        yield server


def _session(url: str) -> AppSession:
    return AppSession(Settings(server_url=url))


def _chat(app: AppSession, text: str) -> str:
    app.add_turn(ChatTurn("user", text))
    turn = app.start_turn()
    stream = app.stream_reply(turn)
    answer = "".join(stream)
    app.end_turn(turn)
    app.add_turn(ChatTurn("assistant", answer))
    return answer


def _conversations(app: AppSession) -> list[set[str | None]]:
    """Per stored trace, the conversation ids its spans carry (gen_ai.conversation.id and session.id)."""
    keys = (semconv.GEN_AI_CONVERSATION_ID, semconv.SESSION_ID)
    return [{s.attributes.get(key) for s in t.spans for key in keys} for t in app.store.all()]


def test_each_turn_is_a_finished_trace_of_the_conversation_until_a_new_conversation(fake) -> None:
    app = _session(fake.url)
    conversation = app.conversation_id()
    assert _chat(app, "hi") == "Fine, thanks."
    assert len(app.store) == 1  # stored as soon as the answer is in
    _chat(app, "and?")
    first, second = app.traces()
    assert first.id != second.id
    for turn in (first, second):
        assert (turn.name, turn.status) == (TURN_SPAN, "success") and turn.end_time is not None
        root, request = sorted(turn.spans, key=lambda s: s.start_time)
        assert (root.name, root.parent_id, request.parent_id) == (TURN_SPAN, None, root.id)
    assert app.find_trace(second.id) == second
    assert _conversations(app) == [{conversation}, {conversation}]
    fresh = app.new_conversation()
    assert app.messages == [] and fresh == app.conversation_id() != conversation
    _chat(app, "again")
    assert _conversations(app) == [{conversation}, {conversation}, {fresh}]


def test_history_becomes_the_request_messages_after_the_system_prompt(fake) -> None:
    app = _session(fake.url)
    app.update(system_prompt="Be brief.")
    _chat(app, "one")
    app.add_turn(ChatTurn("assistant", "", error="server down"))
    _chat(app, "two")
    assert fake.requests[-1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "Fine, thanks."},
        {"role": "user", "content": "two"},
    ]


def test_a_new_server_url_gets_a_new_client_and_the_conversation_goes_on(fake) -> None:
    app = _session("http://127.0.0.1:9")
    old = app.client
    app.update(server_url=fake.url)
    assert app.client is not old and app.client.base_url == fake.url
    _chat(app, "hi")
    conversation = app.conversation_id()
    with FakeLlamaServer("Other server.") as other:
        app.update(server_url=other.url)
        assert _chat(app, "still there?") == "Other server."
    assert app.conversation_id() == conversation
    assert _conversations(app) == [{conversation}, {conversation}]


def test_prices_are_validated_by_the_collector_and_kept_when_bad() -> None:
    app = _session("http://127.0.0.1:9")
    app.set_prices(0.01, 0.02)
    assert app.collector.prices_for() == (0.01, 0.02)
    with pytest.raises(ValueError, match="prompt_token_cost"):
        app.set_prices(-0.5, 0.02)
    assert (app.settings.prompt_price, app.settings.completion_price) == (0.01, 0.02)
    assert app.collector.prices_for() == (0.01, 0.02)


def test_capture_setting_reaches_the_client() -> None:
    app = _session("http://127.0.0.1:9")
    assert app.client.capture_content is True
    app.update(capture_content=False)
    assert app.client.capture_content is False


def test_a_turn_dropped_by_head_sampling_is_counted_but_not_stored(fake) -> None:
    app = _session(fake.url)
    app.tracer.head_sampler = AlwaysOff()
    _chat(app, "hi")
    assert app.traces() == []
    metrics = app.collector.get_metrics()
    assert (metrics.request_count, metrics.traces_seen, metrics.traces_dropped) == (1, 1, 1)


def test_a_turn_is_a_new_trace_even_inside_a_span_and_stream_reply_needs_a_begun_turn(fake) -> None:
    app = _session(fake.url)
    app.add_turn(ChatTurn("user", "hi"))
    with app.tracer.start_span("the caller's own work") as outer:
        turn = app.start_turn()
    assert turn != outer.trace_id
    with pytest.raises(ValueError, match="turn must be a trace id from start_turn that has not ended"):
        app.stream_reply("not-a-turn")
    app.end_turn(turn, error="the answer broke off")
    app.end_turn(turn)  # ending twice, or an unknown turn, does nothing
    failed = app.find_trace(turn)
    assert failed is not None and failed.status == "error"
    assert failed.spans[0].attributes[semconv.ERROR_MESSAGE] == "the answer broke off"
    with pytest.raises(ValueError, match="has not ended"):
        app.stream_reply(turn)


def test_thresholds_are_read_as_copies() -> None:
    app = _session("http://127.0.0.1:9")
    assert app.chart_thresholds("cost") == []
    app.thresholds["latency_ms"] = [Threshold(500.0, "alert")]
    lines = app.chart_thresholds("latency_ms")
    lines.clear()
    assert app.chart_thresholds("latency_ms") == [Threshold(500.0, "alert")]


def test_sampling_settings_become_the_tracers_samplers() -> None:
    app = _session("http://127.0.0.1:9")
    assert isinstance(app.tracer.head_sampler, ParentBased)
    assert app.tracer.head_sampler.root.rate == 1.0
    assert [rule.name for rule in app.tracer.tail_sampler.rules] == ["errors"]
    app.set_sampling(0.25, keep_errors=False, keep_slow=True, slow_ms=1500.0)
    assert app.tracer.head_sampler.root.rate == 0.25
    assert [(rule.name, rule.threshold_ms) for rule in app.tracer.tail_sampler.rules] == [("slow", 1500.0)]
    settings = app.settings
    assert (settings.sample_rate, settings.keep_errors, settings.keep_slow, settings.slow_ms) == (
        0.25, False, True, 1500.0)


def test_a_bad_slow_threshold_is_refused_even_while_keep_slow_is_off() -> None:
    app = _session("http://127.0.0.1:9")
    head = app.tracer.head_sampler
    with pytest.raises(ValueError, match="threshold_ms must be a finite number >= 0, got -5"):
        app.set_sampling(0.5, keep_errors=True, keep_slow=False, slow_ms=-5.0)
    assert app.tracer.head_sampler is head
    assert (app.settings.sample_rate, app.settings.slow_ms) == (1.0, 2000.0)


def test_sampling_decides_what_is_stored_and_the_collector_counts_it(fake) -> None:
    app = _session(fake.url)
    app.set_sampling(0.0, keep_errors=True, keep_slow=False, slow_ms=2000.0)
    _chat(app, "hi")
    assert len(app.store) == 0
    metrics = app.collector.get_metrics()
    assert (metrics.request_count, metrics.traces_seen, metrics.traces_dropped) == (1, 1, 1)
    app.set_sampling(1.0, keep_errors=True, keep_slow=False, slow_ms=2000.0)
    _chat(app, "again")
    assert len(app.store) == 1
    assert app.collector.get_metrics().traces_kept_head == 1


def test_alert_thresholds_replace_the_rules_and_the_chart_lines() -> None:
    app = _session("http://127.0.0.1:9")
    assert [(r.name, r.threshold) for r in app.alerts.rules] == [
        ("high_error_rate", 0.05), ("slow_p95_latency", 5000.0)]
    assert [t.value for t in app.chart_thresholds("latency_ms")] == [5000.0]
    app.set_alert_thresholds(0.2, 300.0, min_requests=1)
    assert [(r.name, r.threshold, r.min_requests) for r in app.alerts.rules] == [
        ("high_error_rate", 0.2, 1), ("slow_p95_latency", 300.0, 1)]
    assert app.chart_thresholds("latency_ms") == [Threshold(300.0, "slow_p95_latency > 300 ms")]
    assert app.chart_thresholds("error_rate") == [Threshold(0.2, "high_error_rate > 20.0%")]
    with pytest.raises(ValueError, match="between 0% and 100%, got 150%"):
        app.set_alert_thresholds(1.5, 300.0, min_requests=1)
    assert (app.settings.alert_error_rate, app.settings.alert_p95_ms, app.settings.alert_min_requests) == (
        0.2, 300.0, 1)
    assert [r.threshold for r in app.alerts.rules] == [0.2, 300.0]


def test_a_rule_fires_logs_and_keeps_its_state_when_its_threshold_moves() -> None:
    app = _session("http://127.0.0.1:9")
    app.set_alert_thresholds(0.05, 100.0, min_requests=1)
    app.collector.record_request(400.0, 10, 20)
    firing = [s for s in app.evaluate_alerts() if s.status == "firing"]
    assert [(s.name, s.value) for s in firing] == [("slow_p95_latency", 400.0)]
    assert "alert slow_p95_latency firing" in app.logger.get_logs(level="warn")[0].message
    app.set_alert_thresholds(0.05, 200.0, min_requests=1)
    assert app.alerts.state("slow_p95_latency").status == "firing"  # kept: same name
    app.set_alert_thresholds(0.05, 1000.0, min_requests=1)
    assert app.evaluate_alerts()[1].status == "resolved"

