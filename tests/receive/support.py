"""Helpers for the receiver tests: the app served by uvicorn on a real loopback port, spans to send."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import uvicorn

from obs.export import to_otlp
from obs.trace.spans import Span
from obs.trace.traces import Trace

T0_MS = 1_700_000_000_000.0
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port; yield its base URL; stop it on exit."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="test-receiver", daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started or not thread.is_alive(), 20.0) and server.started
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(15.0)


def wait_until(condition: Callable[[], object], timeout_s: float = 10.0) -> bool:
    """Poll `condition` until it is true; False if it is not within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def chat_trace(trace_id: str = TRACE_ID, *, root_id: str = "00f067aa0ba902b7",
               llm_id: str = "00f067aa0ba902b8", input_tokens: int = 42, output_tokens: int = 7,
               status: str = "success") -> Trace:
    """A finished trace: an internal root and a GenAI chat client span under it."""
    root = Span(id=root_id, trace_id=trace_id, parent_id=None, name="answer", start_time=T0_MS,
                end_time=T0_MS + 900.0, duration=900.0, status="success", attributes={"user.tier": "pro"},
                kind="internal")
    llm = Span(id=llm_id, trace_id=trace_id, parent_id=root_id, name="chat smollm2", start_time=T0_MS + 10.0,
               end_time=T0_MS + 810.0, duration=800.0, status=status,  # type: ignore[arg-type]
               attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "smollm2",
                           "gen_ai.usage.input_tokens": input_tokens,
                           "gen_ai.usage.output_tokens": output_tokens,
                           "gen_ai.response.time_to_first_chunk": 0.125},
               kind="client")
    return Trace(id=trace_id, name="answer", start_time=T0_MS, end_time=T0_MS + 900.0, duration=900.0,
                 status=status, metadata={"service.name": "chat-api"}, spans=(root, llm))  # type: ignore[arg-type]


def protobuf_body(traces: Sequence[Trace]) -> bytes:
    """An ExportTraceServiceRequest of `traces`, serialized."""
    return to_otlp(list(traces)).SerializeToString()
