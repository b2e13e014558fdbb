"""write_traces: whole files in OTLP/JSON, Jaeger or Zipkin form, written atomically."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from obs.export import from_otlp, to_jaeger, to_zipkin, write_traces
from obs.trace.spans import Span
from obs.trace.traces import Trace
from tests.export.support import sample_traces


@pytest.mark.parametrize("format", ["otlp-json", "jaeger", "zipkin"])
def test_each_format_writes_a_file_that_reads_back(tmp_path: Path, format: str) -> None:
    traces = sample_traces()
    path = tmp_path / f"traces.{format}.json"
    assert write_traces(traces, path, format=format) == 8
    data = json.loads(path.read_text(encoding="utf-8"))
    if format == "otlp-json":
        assert from_otlp(data) == traces
    elif format == "jaeger":
        assert data == to_jaeger(traces)
    else:
        assert data == to_zipkin(traces)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_the_default_is_otlp_json_and_an_existing_file_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "traces.json"
    path.write_text("old contents that are longer than what replaces them" * 1000, encoding="utf-8")
    write_traces(sample_traces()[3], str(path))
    assert from_otlp(path.read_text(encoding="utf-8"))[0].name == "charge"


def test_a_failed_write_leaves_the_earlier_file_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "traces.json"
    path.write_text("earlier", encoding="utf-8")
    good = sample_traces()[3]
    bad = Trace(good.id, "bad", 1.0, 2.0, 1.0, "success", {}, [Span("zz", good.id, None, "s", 1.0, 2.0, 1.0,
                                                                    "success")])
    with pytest.raises(ValueError, match="to_otlp"):
        write_traces([good, bad], path)
    assert path.read_text(encoding="utf-8") == "earlier"

    def disk_full(source: str, target: str) -> None:  # the disk failing at the last step
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_traces([good], path)
    assert path.read_text(encoding="utf-8") == "earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["traces.json"]


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format must be one of"):
        write_traces([], tmp_path / "t.json", format="csv")
    with pytest.raises(ValueError, match="is a directory"):
        write_traces([], tmp_path)
    with pytest.raises(FileNotFoundError):
        write_traces([], tmp_path / "missing" / "t.json")
