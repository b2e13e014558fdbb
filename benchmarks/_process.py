"""What the benchmarks that run servers in child processes share: waiting for them, their CPU time,
and stopping them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

__all__ = ["cpu_seconds", "stop", "wait_healthy"]


def wait_healthy(process: subprocess.Popen[bytes], url: str, what: str, within_s: float) -> None:
    """Return once `url`/health answers 200; else stop `process` and raise RuntimeError with its stderr."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    stop(process)
    err = process.stderr.read().decode(errors="replace") if process.stderr else ""
    raise RuntimeError(f"{what} did not start: {err}")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds process `pid` has used so far (Linux /proc); None where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop `process` as Ctrl-C does (so it stores what it holds), killing it after 30 s; wait for it."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
