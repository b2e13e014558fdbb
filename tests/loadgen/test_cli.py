"""`python -m obs.loadgen` as a user runs it, against the real embedded llama-server: the summary it
prints is what the traces it stored say; Ctrl-C stops it cleanly and still prints and stores; sweeps."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from obs import semconv
from obs.llm.llama.server import EmbeddedServer
from obs.storage.sqlite import SqliteTraceStore
from tests.llm.servers import refused_url
from tests.loadgen.support import Stored

ROOT = Path(__file__).resolve().parents[2]
_SUMMARY = re.compile(r"^(\d+) requests in [\d.]+ s at concurrency (\d+): (\d+) answered, (\d+) failed"
                      r"(?:, (\d+) cancelled in flight)?$", re.MULTILINE)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("OBS_DB_PATH", "LLAMA_SERVER_URL")}


def _loadgen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "obs.loadgen", *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)


def _figure(out: str, label: str) -> str:
    match = re.search(rf"^  {re.escape(label)}\s+(.+)$", out, re.MULTILINE)
    assert match, out
    return match.group(1)


def test_the_printed_summary_is_what_the_stored_traces_say(
    embedded_server: EmbeddedServer, tmp_path: Path
) -> None:
    db = tmp_path / "runs" / "obs.db"  # its directory is created
    done = _loadgen("--url", embedded_server.url, "--concurrency", "2", "--requests", "6", "--stream",
                    "--max-tokens", "8", "--db", str(db))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert _SUMMARY.search(out).groups() == ("6", "2", "6", "0", None)
    stored = Stored.read(db)
    assert len(stored.answered) == 6
    assert f"({stored.output_tokens} output tokens," in _figure(out, "output tokens/s")
    latency = [stored.answered_percentile(semconv.OBS_LATENCY_MS, q) for q in (0.5, 0.95, 0.99)]
    assert _figure(out, "latency p50/p95/p99") == " / ".join(f"{v:.0f}" for v in latency) + " ms"
    ttft = [stored.answered_percentile(semconv.OBS_TTFT_MS, q) for q in (0.5, 0.95)]
    assert _figure(out, "TTFT p50/p95") == " / ".join(f"{v:.0f}" for v in ttft) + " ms"
    assert _figure(out, "errors") == "none"
    with SqliteTraceStore(str(db)) as store:
        assert {t.metadata[semconv.SERVICE_NAME] for t in store.all()} == {"obs-loadgen"}
    # Off a terminal the progress is plain lines on stderr; the summary alone is on stdout.
    assert "\r" not in done.stderr and "6/6 done" in done.stderr
    assert f"traces stored in {db}" in done.stderr


def _stored_count(db: Path) -> int:
    if not db.exists():
        return 0
    with SqliteTraceStore(str(db)) as store:
        return len(store)


def test_ctrl_c_cancels_what_is_in_flight_and_still_prints_and_stores(
    embedded_server: EmbeddedServer, tmp_path: Path
) -> None:
    db = tmp_path / "obs.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "obs.loadgen", "--url", embedded_server.url, "--concurrency", "2",
         "--requests", "500", "--max-tokens", "32", "--db", str(db)],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while _stored_count(db) < 2:  # a few requests are done (and written) before the Ctrl-C
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no request stored within 120 s"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    assert "stopped by Ctrl-C; in-flight requests were cancelled" in err
    requests, concurrency, answered, failed, cancelled = _SUMMARY.search(out).groups()
    requests, cancelled = int(requests), int(cancelled or 0)
    assert concurrency == "2" and failed == "0" and 2 <= requests < 500
    stored = Stored.read(db)
    # What was done is stored: every request that ended, and every one cancelled in flight (as failed).
    assert len(stored.spans) == requests + cancelled
    assert set(stored.errors_by_type) <= {"CancelledError"}
    assert len(stored.answered) >= int(answered)
    assert "latency p50/p95/p99" in out and f"traces stored in {db}" in err


def test_a_sweep_prints_the_capacity_table_and_where_p95_turns_up(
    embedded_server: EmbeddedServer, tmp_path: Path
) -> None:
    db = tmp_path / "obs.db"
    done = _loadgen("--url", embedded_server.url, "--sweep", "1,2", "--requests", "3", "--max-tokens", "8",
                    "--stream", "--db", str(db))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split() == ["concurrency", "requests/s", "output", "tok/s", "p50", "ms", "p95", "ms",
                                "p99", "ms", "TTFT", "p95", "ms", "errors"]
    rows = [line.split() for line in lines[2:4]]
    assert [row[0] for row in rows] == ["1", "2"] and all(row[-1] == "0" for row in rows)
    assert all(float(row[1]) > 0 and row[6] != "-" for row in rows)
    assert lines[4].startswith(("knee at concurrency 1: going to 2", "no knee up to concurrency 2"))
    assert "concurrency 1: " in done.stderr and "concurrency 2: " in done.stderr
    assert len(Stored.read(db).answered) == 6


def test_no_answer_at_all_exits_1_and_says_where_it_looked(tmp_path: Path) -> None:
    url = refused_url()
    done = _loadgen("--url", url, "--requests", "3", "--concurrency", "3", "--db", str(tmp_path / "obs.db"))
    assert done.returncode == 1
    assert _figure(done.stdout, "errors") == "3 (ServerUnavailable 3)"
    assert f"no request was answered: is a server running at {url}?" in done.stderr
    assert Stored.read(tmp_path / "obs.db").errors_by_type == {"ServerUnavailable": 3}


def test_a_duration_alone_with_a_rate_sends_what_fits_in_it(tmp_path: Path) -> None:
    url = refused_url()
    done = _loadgen("--url", url, "--duration", "1s", "--rate", "4/s", "--concurrency", "2",
                    "--db", str(tmp_path / "obs.db"))
    assert done.returncode == 1
    assert "1 s, 2 at once, at most 4/s, not streamed, max_tokens 64" in done.stderr
    # Request i goes at i / 4 s: 0, 0.25, 0.5 and 0.75 s fall within the second, 1.0 s does not.
    assert _SUMMARY.search(done.stdout).groups()[:3] == ("4", "2", "0")
    assert Stored.read(tmp_path / "obs.db").errors_by_type == {"ServerUnavailable": 4}
