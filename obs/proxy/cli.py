"""`python -m obs.proxy`: the recording proxy in front of a llama-server, writing into the SQLite file.

    python -m obs.proxy --upstream http://127.0.0.1:8080 --port 8033 [--db .obs/obs.db]
                        [--service-name NAME] [--host 127.0.0.1] [--timeout SECONDS] [--capture-content]

Point any program at http://127.0.0.1:8033 (OpenAI clients: base URL
http://127.0.0.1:8033/v1) instead of the server itself: every request is
forwarded unchanged, and its model calls appear on the dashboard that reads
the same file. `--db` defaults to `OBS_DB_PATH`, else `.obs/obs.db`. It
listens on 127.0.0.1 unless `--host` says otherwise. Ctrl-C stores what is
waiting, then stops.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence

from obs import config
from obs.proxy._serve import ProxyServer
from obs.proxy.app import ProxyApp
from obs.proxy.server import (
    DEFAULT_HOST,
    DEFAULT_SERVICE_NAME,
    ProxyStartError,
    bind_socket,
    open_recording,
)
from obs.receive.cli import is_loopback

__all__ = ["DEFAULT_PORT", "DEFAULT_UPSTREAM", "main"]

# llama-server's own default port, and the one obs's clients and dashboard look at first.
DEFAULT_UPSTREAM = "http://127.0.0.1:8080"
DEFAULT_PORT = 8033


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m obs.proxy",
        description="Forward every request to a llama-server unchanged and record its model calls "
        "(chat, completions) into the SQLite file the dashboard reads.",
    )
    parser.add_argument("--upstream", default=DEFAULT_UPSTREAM,
                        help=f"the llama-server (or OpenAI-compatible server) to forward to "
                        f"(default {DEFAULT_UPSTREAM})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on (default {DEFAULT_PORT}; 0 = any free port)")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--db", default=None,
                        help=f"the SQLite file to record into (default ${config.DB_PATH_ENV}, "
                        f"else {config.DEFAULT_DB_PATH})")
    parser.add_argument("--service-name", default=DEFAULT_SERVICE_NAME,
                        help=f"service.name of the recorded traces (default {DEFAULT_SERVICE_NAME})")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="longest wait for the upstream's next bytes (default: none, as a direct "
                        "call would wait)")
    parser.add_argument("--keep-ready", type=float, default=30.0, metavar="SECONDS",
                        help="after each answer, keep a connection to the upstream open and ready this "
                        "long (default 30; 0 = never): llama-server closes its connection after every "
                        "stream, and the next call would first wait to connect")
    parser.add_argument("--capture-content", action="store_true", default=None,
                        help="record prompts and answers on spans (default: follow "
                        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT)")
    return parser  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the proxy until interrupted; return the exit status (2 for a refused configuration)."""
    args = _parser().parse_args(argv)
    path = args.db if args.db is not None else config.db_path_from_env()
    try:
        tracer, close = open_recording(path, args.service_name)
    except ValueError as exc:
        print(f"obs.proxy: {exc}", file=sys.stderr)
        return 2
    try:
        app = ProxyApp(args.upstream, tracer=tracer, capture_content=args.capture_content,
                       timeout_s=args.timeout, keep_ready_s=args.keep_ready)  # fmt: skip
        sock = bind_socket(args.host, args.port)
    except (ValueError, ProxyStartError) as exc:
        print(f"obs.proxy: {exc}", file=sys.stderr)
        close(10.0)
        return 2
    server = ProxyServer(app, sock)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"obs.proxy: http://{shown}:{port} -> {app.upstream}, recording into {path} "
          f"as {args.service_name!r}", file=sys.stderr, flush=True)  # fmt: skip
    if not is_loopback(args.host):
        print(f"obs.proxy: listening on {args.host}: whoever reaches it uses {app.upstream} through it "
              "(the upstream's own --api-key still applies)", file=sys.stderr, flush=True)  # fmt: skip
    try:
        with contextlib.suppress(KeyboardInterrupt):  # a Ctrl-C before the server took over the signal
            server.run(handle_signals=True)
    finally:
        close(10.0)
    return 0 if server.started else 1
