"""/props, /metrics and /health: pure readers and their HTTP fetchers against loopback servers."""

from __future__ import annotations

from obs.llm.llama.props import (
    ServerMetrics,
    ServerProps,
    check_health,
    fetch_metrics,
    fetch_props,
    model_display_name,
    parse_prometheus_text,
)
from tests.llm import servers

METRICS_TEXT = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed, excluding cached tokens
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 32
# TYPE llamacpp:prompt_tokens_cached_total counter
llamacpp:prompt_tokens_cached_total 96
llamacpp:tokens_predicted_total 12
llamacpp:requests_processing 1
llamacpp:requests_deferred 0
llamacpp:predicted_tokens_seconds 75.1174
other_metric{label="a b"} 3 1700000000
broken line
llamacpp:bad_value abc
"""


def test_model_display_name() -> None:
    assert model_display_name("/models/SmolLM2-135M-Instruct.Q4_1.gguf") == "SmolLM2-135M-Instruct.Q4_1"
    assert model_display_name("C:\\models\\m.gguf") == "m"
    assert model_display_name("smollm2") == "smollm2"
    assert model_display_name("") is None
    assert model_display_name(None) is None


def test_server_props_from_real_shape() -> None:
    props = ServerProps.from_json(
        {
            "total_slots": 2,
            "model_alias": "/x/SmolLM2-135M-Instruct.Q4_1.gguf",
            "model_path": "/x/SmolLM2-135M-Instruct.Q4_1.gguf",
            "build_info": "b0-unknown",
            "default_generation_settings": {"n_ctx": 1024},
        }
    )
    assert props == ServerProps(
        model_path="/x/SmolLM2-135M-Instruct.Q4_1.gguf",
        model_alias="/x/SmolLM2-135M-Instruct.Q4_1.gguf",
        n_ctx=1024,
        total_slots=2,
        build="b0-unknown",
    )
    assert props.model_name == "SmolLM2-135M-Instruct.Q4_1"


def test_server_props_fallbacks() -> None:
    props = ServerProps.from_json({"n_ctx": 4096, "system_fingerprint": "b42", "model_alias": ["a", "b"]})
    assert (props.n_ctx, props.build, props.model_alias, props.model_name) == (4096, "b42", "a", "a")
    assert ServerProps.from_json("nonsense") == ServerProps()
    assert ServerProps.from_json({"total_slots": -1, "model_path": 3}).total_slots is None
    assert ServerProps().model_name is None


def test_parse_prometheus_text() -> None:
    samples = parse_prometheus_text(METRICS_TEXT)
    assert samples == {
        "llamacpp:prompt_tokens_total": 32.0,
        "llamacpp:prompt_tokens_cached_total": 96.0,
        "llamacpp:tokens_predicted_total": 12.0,
        "llamacpp:requests_processing": 1.0,
        "llamacpp:requests_deferred": 0.0,
        "llamacpp:predicted_tokens_seconds": 75.1174,
        'other_metric{label="a b"}': 3.0,
    }


def test_server_metrics_names_and_cache_ratio() -> None:
    metrics = ServerMetrics.from_text(METRICS_TEXT)
    assert "other_metric" not in str(metrics.values)
    assert metrics.prompt_tokens_total == 32
    assert metrics.get("llamacpp:prompt_tokens_total") == 32
    assert metrics.prompt_tokens_cached_total == 96
    assert metrics.tokens_predicted_total == 12
    assert metrics.requests_processing == 1
    assert metrics.requests_deferred == 0
    assert metrics.prompt_cache_ratio == 0.75
    assert metrics.get("missing", -1.0) == -1.0
    assert ServerMetrics().prompt_cache_ratio is None
    assert (
        ServerMetrics({"prompt_tokens_total": 0, "prompt_tokens_cached_total": 0}).prompt_cache_ratio == 0.0
    )


def _metrics_server(handler: servers.Handler) -> None:
    if handler.path == "/metrics":
        handler.send_raw(200, METRICS_TEXT.encode(), "text/plain; version=0.0.4")
    else:
        servers.good(handler)


def test_fetchers_against_a_server() -> None:
    with servers.serve(_metrics_server) as server:
        props = fetch_props(server.url, api_key="k-123")
        metrics = fetch_metrics(server.url + "/")
        assert check_health(server.url) == "ok"
    assert props is not None
    assert (props.model_name, props.n_ctx, props.build, props.total_slots) == (
        "test-model",
        1024,
        "b1234-test",
        2,
    )
    assert server.requests[0].headers["Authorization"] == "Bearer k-123"
    assert metrics is not None and metrics.prompt_tokens_total == 32


def test_fetchers_never_raise() -> None:
    url = servers.refused_url()
    assert fetch_props(url) is None
    assert fetch_metrics(url) is None
    assert check_health(url) == "unreachable"
    with servers.serve(servers.loading) as loading:
        assert check_health(loading.url) == "loading"
        assert fetch_props(loading.url) is None
        assert fetch_metrics(loading.url) is None
    with servers.serve(servers.unauthorized) as locked:
        assert check_health(locked.url) == "unauthorized"
    with servers.serve(servers.garbage) as garbage:
        assert fetch_props(garbage.url) is None
    with servers.serve(servers.error_status(500, "boom")) as broken:
        assert check_health(broken.url) == "error"
