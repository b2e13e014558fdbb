"""`python -m obs.receiver`: the OTLP/HTTP receiver alone, storing traces in a SQLite file.

    python -m obs.receiver --port 4318 --db traces.sqlite [--host 127.0.0.1] [--token-env VAR]

It listens on 127.0.0.1 unless `--host` says otherwise. When the variable
named by `--token-env` (default `OBS_ACCESS_TOKEN`, the dashboard's) is set,
every request must carry `Authorization: Bearer <its value>` (16 characters
at least); on an address other machines can reach, the token is required
and the receiver refuses to start without one. `GET /metrics` serves the
GenAI spans received, as Prometheus text. Traces are written through
`SqliteExporter` (one transaction per batch), merged with the part of each
already in the file; the file's retention settings apply. Ctrl-C stores
what is queued, then stops.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import ipaddress
import os
import sys
from collections.abc import Sequence

from obs.receive.app import MIN_TOKEN_LENGTH, make_receiver_app
from obs.receive.merge import MergingStoreExporter
from obs.storage.exporter import SqliteExporter
from obs.storage.sqlite import SqliteTraceStore

__all__ = ["DEFAULT_TOKEN_ENV", "is_loopback", "main"]

DEFAULT_TOKEN_ENV = "OBS_ACCESS_TOKEN"


def is_loopback(host: str) -> bool:
    """True if only this machine can reach `host`: `localhost`, 127.0.0.0/8 or ::1."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m obs.receiver",
        description="Receive OTLP/HTTP traces (POST /v1/traces) into a SQLite file; GET /metrics.",
    )
    parser.add_argument("--port", type=int, default=4318, help="port to listen on (default 4318)")
    parser.add_argument("--db", required=True, help="the SQLite file the traces go to (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--token-env", default=DEFAULT_TOKEN_ENV,
                        help=f"variable holding the bearer token requests must carry "
                        f"(default {DEFAULT_TOKEN_ENV})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the receiver until interrupted; return the exit status (2 for a refused configuration)."""
    args = _parser().parse_args(argv)
    token = os.environ.get(args.token_env) or None
    if not 0 <= args.port <= 65535:
        print(f"obs.receiver: --port must be in [0, 65535], got {args.port}", file=sys.stderr)
        return 2
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        print(f"obs.receiver: the token in {args.token_env} must be at least {MIN_TOKEN_LENGTH} characters",
              file=sys.stderr)
        return 2
    if token is None and not is_loopback(args.host):
        print(f"obs.receiver: refusing to listen on {args.host} without a token: other machines could "
              f"write traces into {args.db} and read its metrics. Set {args.token_env} to a secret of "
              f"{MIN_TOKEN_LENGTH}+ characters (python -c 'import secrets; "
              "print(secrets.token_urlsafe(24))'), or listen on 127.0.0.1", file=sys.stderr)
        return 2
    try:
        store = SqliteTraceStore(args.db)
    except ValueError as exc:
        print(f"obs.receiver: {exc}", file=sys.stderr)
        return 2
    store.start_retention()  # the file's own retention settings (see obs.storage.retention)
    import uvicorn  # imported here: only the standalone receiver needs a server

    try:
        app = make_receiver_app(MergingStoreExporter(SqliteExporter(store)), token=token)
        server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                               access_log=False, lifespan="on"))
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"obs.receiver: listening on http://{host}:{args.port}/v1/traces, storing into {args.db}"
              f"{'' if token is None else ' (bearer token required)'}", file=sys.stderr, flush=True)
        # What is loaded by now lives as long as the process: out of the collector's sight, a full
        # collection no longer walks it (a tenth of a second, every so often, under a stream of spans).
        gc.freeze()
        # uvicorn raises Ctrl-C again once it has shut down (and stored what was queued).
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
    finally:
        store.close()
    return 0 if server.started else 1
