"""`python -m obs.proxy` as a user runs it: a process that relays, records into the file, stops on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from obs import semconv
from obs.storage.queries import DashboardQueries
from obs.storage.sqlite import SqliteTraceStore
from tests.llm.servers import MODEL, good, serve
from tests.proxy.support import API_KEY, wait_until

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("OBS_DB_PATH", "LLAMA_SERVER_URL")}


def test_python_m_obs_proxy_relays_and_records_into_the_file(tmp_path: Path) -> None:
    db = tmp_path / "shared" / "obs.db"  # the directory is created
    port = _free_port()
    with serve(good) as upstream:
        process = subprocess.Popen(
            [sys.executable, "-m", "obs.proxy", "--upstream", upstream.url, "--port", str(port),
             "--db", str(db), "--service-name", "open-webui"],
            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            def up() -> bool:
                if process.poll() is not None:
                    return True
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200
                except httpx.TransportError:
                    return False

            assert wait_until(up, 30.0) and process.poll() is None, process.communicate(timeout=10)
            body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
            answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body,
                                headers={"Authorization": f"Bearer {API_KEY}"})
            assert answer.status_code == 200 and "traceparent" in answer.headers
        finally:
            process.send_signal(signal.SIGINT)  # Ctrl-C: what waits is stored, then it stops
            _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"http://127.0.0.1:{port} -> {upstream.url}, recording into {db}".encode() in err
    with SqliteTraceStore(db) as store:
        traces = store.all()
        logs = DashboardQueries(store).logs(service="open-webui").items
    assert len(traces) == 1
    assert traces[0].metadata[semconv.SERVICE_NAME] == "open-webui"
    assert traces[0].spans[0].name == f"chat {MODEL}"
    assert sorted(e.message for e in logs) == [f"chat {MODEL} finished", f"chat {MODEL} request started"]
    assert API_KEY[:8] not in json.dumps([t.to_dict() for t in traces]) + json.dumps([e.data for e in logs])


def test_python_m_obs_proxy_refuses_what_cannot_work(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "obs.proxy", "--db", str(tmp_path / "x.db"), *args],
                              cwd=ROOT, env=_env(), capture_output=True, timeout=60)

    bad = run("--upstream", "localhost:8080", "--port", "0")
    assert bad.returncode == 2 and b"upstream must be an http(s) URL" in bad.stderr
    never = run("--upstream", "http://127.0.0.1:8080", "--port", "0", "--keep-ready", "-1")
    assert never.returncode == 2 and b"keep_ready_s must be seconds >= 0 (0: never)" in never.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = run("--upstream", "http://127.0.0.1:8080", "--port", str(taken.getsockname()[1]))
    assert busy.returncode == 2 and b"choose another port" in busy.stderr
