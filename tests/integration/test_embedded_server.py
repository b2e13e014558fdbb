"""The embedded llama-server as a child process: serving, refusing, stopping, never orphaned."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from obs.llm.client import InstrumentedClient
from obs.llm.errors import AuthenticationError
from obs.llm.llama.props import check_health, fetch_metrics, fetch_props
from obs.llm.llama.server import EmbeddedServer, EmbeddedServerError, find_free_port, start_embedded_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _wait_gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_serves_health_props_and_metrics(embedded_server: EmbeddedServer) -> None:
    assert embedded_server.is_running()
    assert embedded_server.url == f"http://127.0.0.1:{embedded_server.port}"
    assert check_health(embedded_server.url) == "ok"
    props = fetch_props(embedded_server.url)
    assert props is not None
    assert props.model_name == "SmolLM2-135M-Instruct.Q4_1"
    assert props.n_ctx == 1024  # 2048 shared by 2 slots
    assert props.total_slots == 2
    assert props.build
    assert props.model_path == str(embedded_server.model_path)
    metrics = fetch_metrics(embedded_server.url)
    assert metrics is not None and metrics.tokens_predicted_total is not None


def test_a_taken_port_is_refused_clearly(embedded_server: EmbeddedServer) -> None:
    with pytest.raises(EmbeddedServerError, match=f"port {embedded_server.port} on 127.0.0.1 is taken"):
        start_embedded_server(port=embedded_server.port)


def test_api_key_server_and_clean_stop() -> None:
    secret = "sk-embedded-789"
    with start_embedded_server(port=0, api_key=secret, parallel=1, ctx=512) as server:
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert secret.encode() not in cmdline  # passed by environment, not in the process list
        assert httpx.get(server.url + "/props").status_code == 401
        with pytest.raises(AuthenticationError, match="pass api_key="):
            InstrumentedClient(server.url).chat([{"role": "user", "content": "hi"}], max_tokens=2)
        with InstrumentedClient(server.url, api_key=secret) as client:
            response, span = client.chat([{"role": "user", "content": "hi"}], max_tokens=2)
        assert response.usage is not None and response.usage.completion_tokens <= 2
        assert span.status == "success"
    assert not server.is_running()
    assert server.exit_status == 0
    server.stop()  # stopping twice is harmless


def test_the_child_stops_when_its_parent_dies() -> None:
    code = (
        "from obs.llm.llama.server import start_embedded_server\n"
        "s = start_embedded_server(port=0, parallel=1, ctx=512)\n"
        "print(s.pid, flush=True)\n"
        "import time; time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        os.kill(child_pid, 0)  # the server runs
        parent.kill()
        parent.wait()
        assert _wait_gone(child_pid, within_s=20), "the embedded server outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def _time_wait_ports() -> set[int]:
    """Local ports of loopback TCP sockets in TIME-WAIT (state 06 in /proc/net/tcp)."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "06":
            ports.add(int(fields[1].split(":")[1], 16))
    return ports


def test_restarts_at_once_on_the_same_port_while_it_is_in_time_wait() -> None:
    port = find_free_port()
    # The server stops first (the inner context ends first) and closes the kept-alive connection
    # itself: its side of that connection then waits in TIME-WAIT on the server's port.
    with httpx.Client() as http, start_embedded_server(port=port, parallel=1, ctx=512) as server:
        assert http.get(server.url + "/health").status_code == 200
    deadline = time.monotonic() + 10
    while port not in _time_wait_ports():
        assert time.monotonic() < deadline, "the stopped server left no TIME-WAIT behind"
        time.sleep(0.05)
    with start_embedded_server(port=port, parallel=1, ctx=512) as again:  # at once, same port
        assert httpx.get(again.url + "/health").json() == {"status": "ok"}
    assert again.exit_status == 0
