"""python -m obs.export: the SQLite file's recent traces to a file, as a separate process and in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from obs.clock import FakeClock
from obs.export import from_otlp, to_jaeger, to_zipkin
from obs.export.__main__ import main, parse_since
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.processors import InMemoryExporter, SimpleProcessor
from obs.trace.tracer import Tracer
from obs.trace.traces import Trace

ROOT = Path(__file__).resolve().parents[2]


def _trace(name: str, age_s: float) -> Trace:
    """A finished trace of two spans (a root and a child) that started `age_s` seconds ago."""
    clock = FakeClock(start_ms=(time.time() - age_s) * 1000.0)
    exporter = InMemoryExporter()
    tracer = Tracer(processors=[SimpleProcessor(exporter)], clock=clock, service_name="cli-test")
    with tracer.start_span(name):
        clock.advance(5)
        with tracer.start_span(f"{name} child", {"gen_ai.usage.input_tokens": 7}):
            clock.advance(10)
    (trace,) = exporter.traces
    return trace


@pytest.fixture
def db(tmp_path: Path) -> tuple[Path, dict[str, Trace]]:
    """A real SQLite file holding a trace 10 minutes old, one 2 hours old and one 3 days old."""
    path = tmp_path / "obs.db"
    traces = {"recent": _trace("recent", 600), "hours": _trace("hours", 7200),
              "days": _trace("days", 3 * 86400)}
    with SqliteTraceStore(str(path)) as store:
        store.add_many(list(traces.values()))
    return path, traces


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OBS_DB_PATH"}
    return subprocess.run([sys.executable, "-m", "obs.export", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_otlp_json_of_the_last_hour_holds_only_the_recent_trace_whole(db, tmp_path: Path) -> None:
    path, traces = db
    out = tmp_path / "out.json"
    result = _run("--format", "otlp-json", "--since", "1h", "--out", str(out), "--db", str(path))
    assert result.returncode == 0, result.stderr
    assert "1 trace(s), 2 span(s)" in result.stderr
    assert from_otlp(out.read_text(encoding="utf-8")) == [traces["recent"]]


@pytest.mark.parametrize(("since", "names"), [
    ("15m", ["recent"]), ("3h", ["hours", "recent"]), ("24h", ["hours", "recent"]),
    ("7d", ["days", "hours", "recent"]), ("all", ["days", "hours", "recent"]),
])
def test_since_windows_pick_traces_oldest_first(db, tmp_path: Path, since: str, names: list[str]) -> None:
    path, _ = db
    out = tmp_path / "out.json"
    assert main(["--format", "otlp-json", "--since", since, "--out", str(out), "--db", str(path)]) == 0
    assert [t.name for t in from_otlp(out.read_text(encoding="utf-8"))] == names


@pytest.mark.parametrize("format", ["jaeger", "zipkin"])
def test_jaeger_and_zipkin_files_are_what_the_encoders_make(db, tmp_path: Path, format: str) -> None:
    path, traces = db
    out = tmp_path / f"{format}.json"
    assert main(["--format", format, "--since", "24h", "--out", str(out), "--db", str(path)]) == 0
    expected = [traces["hours"], traces["recent"]]
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data == (to_jaeger(expected) if format == "jaeger" else to_zipkin(expected))


def test_db_defaults_to_obs_db_path(db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = db
    monkeypatch.setenv("OBS_DB_PATH", str(path))
    out = tmp_path / "out.json"
    assert main(["--format", "zipkin", "--since", "1h", "--out", str(out)]) == 0
    names = {span["name"] for span in json.loads(out.read_text(encoding="utf-8"))}
    assert names == {"recent", "recent child"}


@pytest.mark.parametrize("since", ["1y", "0m", "-1h", "h", "", "soon"])
def test_a_bad_since_is_refused_naming_the_forms(since: str) -> None:
    with pytest.raises(ValueError, match=r"--since .*15m, 1h, 24h, 7d.*'all'"):
        parse_since(since)


def test_bad_arguments_exit_2_with_the_reason_and_write_nothing(db, tmp_path: Path) -> None:
    path, _ = db
    out = tmp_path / "out.json"
    result = _run("--format", "otlp-json", "--since", "1 week", "--out", str(out), "--db", str(path))
    assert result.returncode == 2 and "--since must be" in result.stderr
    result = _run("--format", "csv", "--since", "1h", "--out", str(out), "--db", str(path))
    assert result.returncode == 2 and "invalid choice: 'csv'" in result.stderr
    missing = tmp_path / "missing.db"
    result = _run("--format", "zipkin", "--out", str(out), "--db", str(missing))
    assert result.returncode == 2 and "is not an existing SQLite file" in result.stderr
    assert not missing.exists()  # never created
    result = _run("--format", "zipkin", "--out", str(tmp_path), "--db", str(path))
    assert result.returncode == 2 and "is a directory" in result.stderr
    assert not out.exists()


def test_an_unwritable_place_leaves_the_earlier_file_as_it_was(db, tmp_path: Path) -> None:
    path, _ = db
    result = _run("--format", "jaeger", "--out", str(tmp_path / "no-such-dir" / "x.json"), "--db", str(path))
    assert result.returncode == 2 and "cannot write --out" in result.stderr
    out = tmp_path / "out.json"
    out.write_text("earlier", encoding="utf-8")
    result = _run("--format", "jaeger", "--out", str(out), "--db", str(tmp_path / "obs.db.missing"))
    assert result.returncode == 2 and out.read_text(encoding="utf-8") == "earlier"


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"not a database at all" * 100)
    result = _run("--format", "zipkin", "--out", str(tmp_path / "o.json"), "--db", str(bogus))
    assert result.returncode == 2 and result.stderr.startswith("obs.export: ")
    assert "Traceback" not in result.stderr
