"""What the benchmarks that run servers in child processes share: their CPU time, and stopping them."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

__all__ = ["cpu_seconds", "stop"]


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
