"""The OTLP exporter's configuration: code first, then the OpenTelemetry variables, then defaults."""

from __future__ import annotations

import pytest

from obs.export import OtlpHttpExporter
from obs.export.otlp_config import otlp_config


def _config(env: dict[str, str], **given: object):  # type: ignore[no-untyped-def]
    return otlp_config("OtlpHttpExporter", env, **given)  # type: ignore[arg-type]


def test_defaults() -> None:
    config = _config({})
    assert (config.endpoint, config.protocol, dict(config.headers), config.timeout_s, config.compression,
            config.service_name) == (
        "http://localhost:4318/v1/traces", "http/protobuf", {}, 10.0, "gzip", None)


def test_the_general_endpoint_gets_the_traces_path_and_the_traces_endpoint_is_used_as_is() -> None:
    assert _config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}).endpoint == (
        "http://collector:4318/v1/traces")
    assert _config({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://gw.example/otlp/"}).endpoint == (
        "https://gw.example/otlp/v1/traces")
    both = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:6006/v1/traces"}
    assert _config(both).endpoint == "http://b:6006/v1/traces"
    assert _config({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:9/custom"}).endpoint == "http://b:9/custom"


def test_code_wins_and_a_bare_endpoint_in_code_gets_the_traces_path() -> None:
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:1/x", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
           "OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_COMPRESSION": "none",
           "OTEL_EXPORTER_OTLP_HEADERS": "a=1"}
    config = _config(env)
    assert (config.endpoint, config.protocol, config.timeout_s, config.compression, dict(config.headers)) == (
        "http://b:1/x", "http/json", 2.5, "none", {"a": "1"})
    config = _config(env, endpoint="http://phoenix:6006", protocol="http/protobuf", timeout_s=3,
                     compression="gzip", headers={"b": "2"})
    assert (config.endpoint, config.protocol, config.timeout_s, config.compression, dict(config.headers)) == (
        "http://phoenix:6006/v1/traces", "http/protobuf", 3.0, "gzip", {"b": "2"})
    assert _config({}, endpoint="http://x:1/v1/traces").endpoint == "http://x:1/v1/traces"


def test_the_traces_variables_win_over_the_general_ones() -> None:
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json",
           "OTEL_EXPORTER_OTLP_HEADERS": "a=1", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=2",
           "OTEL_EXPORTER_OTLP_TIMEOUT": "1000", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "500",
           "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "none",
           "OTEL_SERVICE_NAME": "chat-api"}
    config = _config(env)
    got = (config.protocol, dict(config.headers), config.timeout_s, config.compression, config.service_name)
    assert got == ("http/json", {"b": "2"}, 0.5, "none", "chat-api")


def test_headers_from_the_variable_are_url_decoded() -> None:
    env = {"OTEL_EXPORTER_OTLP_HEADERS": " api-key = a%3Db%2Cc , authorization=Basic%20dXNlcjpw ,"}
    assert dict(_config(env).headers) == {"api-key": "a=b,c", "authorization": "Basic dXNlcjpw"}


def test_grpc_is_refused_with_what_to_use_instead() -> None:
    for given, env in [({"protocol": "grpc"}, {}), ({}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}),
                       ({}, {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"})]:
        with pytest.raises(ValueError, match="'grpc' is not supported") as info:
            _config(env, **given)
        assert "use 'http/protobuf'" in str(info.value)
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL 'grpc'"):
        _config({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"})


@pytest.mark.parametrize(("given", "env", "says"), [
    ({"protocol": "http"}, {}, "protocol must be one of"),
    ({"compression": "zstd"}, {}, "compression must be one of"),
    ({}, {"OTEL_EXPORTER_OTLP_COMPRESSION": "br"}, "OTEL_EXPORTER_OTLP_COMPRESSION must be one of"),
    ({"timeout_s": 0}, {}, "timeout_s must be a number of seconds in (0, 3600]"),
    ({"timeout_s": True}, {}, "timeout_s must be"),
    ({}, {"OTEL_EXPORTER_OTLP_TIMEOUT": "ten"}, "OTEL_EXPORTER_OTLP_TIMEOUT must be a number of ms"),
    ({}, {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "-5"}, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT must be"),
    ({"endpoint": "localhost:4318"}, {}, "endpoint must be an http:// or https:// URL"),
    ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector"}, "OTEL_EXPORTER_OTLP_ENDPOINT must be an http"),
    ({}, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://x"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT must be"),
    ({}, {"OTEL_EXPORTER_OTLP_HEADERS": "a=1,broken"}, "OTEL_EXPORTER_OTLP_HEADERS entry 2 is not key=value"),
    ({"headers": {"x": 5}}, {}, "the value of header 'x' must be a string"),
    ({"headers": {"bad\nname": "v"}}, {}, "is not a valid HTTP header name"),
    ({"headers": ["a"]}, {}, "headers must be a mapping"),
])
def test_bad_configuration_is_refused_naming_the_argument_or_variable(
    given: dict, env: dict, says: str
) -> None:
    with pytest.raises(ValueError, match="OtlpHttpExporter") as info:
        _config(env, **given)
    assert says in str(info.value)


def test_no_header_value_is_ever_quoted() -> None:
    secret = "Bearer top-secret-value"
    with pytest.raises(ValueError) as info:
        _config({}, headers={"authorization": secret + "\r\nx: y"})
    assert "top-secret" not in str(info.value)
    with pytest.raises(ValueError) as info:
        _config({"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20top-secret-value,oops"})
    assert "top-secret" not in str(info.value)
    config = _config({}, headers={"authorization": secret})
    assert "top-secret" not in repr(config) and "authorization" in repr(config)
    exporter = OtlpHttpExporter("https://user:pw@collector.example:4318/v1/traces?token=abcd1234",
                                headers={"authorization": secret}, env={})
    shown = repr(exporter) + exporter.endpoint
    assert "top-secret" not in shown and "pw" not in shown and "abcd1234" not in shown


def test_the_exporter_checks_its_own_arguments() -> None:
    with pytest.raises(ValueError, match="max_retries must be an int in"):
        OtlpHttpExporter(max_retries=-1, env={})
    with pytest.raises(ValueError, match="resource must be a mapping"):
        OtlpHttpExporter(resource="svc", env={})  # type: ignore[arg-type]
    exporter = OtlpHttpExporter(env={"OTEL_SERVICE_NAME": "from-env"},
                                resource={"deployment.environment": "dev"})
    assert exporter.resource == {"deployment.environment": "dev", "service.name": "from-env"}
    assert OtlpHttpExporter(env={}, resource={"service.name": "code"}).resource == {"service.name": "code"}
    assert OtlpHttpExporter(env={}).resource is None
