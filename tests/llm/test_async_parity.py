"""The sync and the async client record the same thing for the same request: span, logs, metrics, error.

Each case sends one request (or two, for the cache) with `InstrumentedClient`
and with `AsyncInstrumentedClient` to the same real loopback server, both
on a FakeClock with ids counting from 1, and compares everything recorded:
every trace as a dict (span names, attributes and their values, events,
status), every log entry, the metrics snapshot, and the exception raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from obs import semconv
from tests.llm import servers
from tests.llm.async_support import make_async_rig
from tests.llm.client_support import MESSAGES, Rig, make_rig

MIB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    """One request: the server's behaviour, the client's options, and how the answer is read."""

    behaviour: Callable[[], servers.Behaviour] | None  # None: nothing listens
    read: str  # "chat", "stream" (to the end), "one delta" (then close), "twice" (chat, chat: the cache)
    options: dict[str, Any] = field(default_factory=dict)


CASES = {
    "chat": Case(lambda: servers.good, "chat"),
    "stream": Case(lambda: servers.good, "stream"),
    "stream closed after one delta": Case(lambda: servers.hang_mid_stream(after=2), "one delta"),
    "cache hit": Case(lambda: servers.good, "twice", {"cache_size": 4}),
    "500": Case(lambda: servers.error_status(500, "slot unavailable"), "chat"),
    "503 on a stream": Case(lambda: servers.loading, "stream"),
    "401": Case(lambda: servers.unauthorized, "chat"),
    "garbage": Case(lambda: servers.garbage, "chat"),
    "no choices": Case(lambda: servers.no_choices, "chat"),
    "stream cut": Case(lambda: servers.stream_cut(after=2, chunked=False), "stream"),
    "error event mid-stream": Case(lambda: servers.error_in_stream, "stream"),
    "hang": Case(lambda: servers.hang, "chat", {"timeout": 0.3}),
    "silent mid-stream": Case(lambda: servers.hang_mid_stream(after=1), "stream", {"timeout": 0.3}),
    "stream over the byte cap": Case(
        lambda: servers.huge_answer(2 * MIB, stream=True), "stream", {"max_response_bytes": MIB}
    ),
    "answer over the byte cap": Case(
        lambda: servers.huge_answer(2 * MIB, stream=False, chunked=False), "chat", {"max_response_bytes": MIB}
    ),
    "refused": Case(None, "chat"),
}
_PARAMS = {"max_tokens": 8, "temperature": 0}


@dataclass
class Recorded:
    """Everything a client recorded for a case, and what the caller got."""

    traces: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    metrics: Any
    outcome: tuple[str, str]


def _recorded(rig: Rig, outcome: tuple[str, str]) -> Recorded:
    return Recorded(
        traces=[t.to_dict() for t in rig.store.all()],
        logs=[e.to_dict() for e in rig.logger.get_logs()],
        metrics=rig.client.get_metrics(),
        outcome=outcome,
    )


def _run_sync(url: str, case: Case) -> Recorded:
    rig = make_rig(url, **case.options)
    try:
        if case.read in ("chat", "twice"):
            for _ in range(2 if case.read == "twice" else 1):
                response, _span = rig.client.chat(MESSAGES, **_PARAMS)
            outcome = ("answer", response.content)
        else:
            stream = rig.client.chat_stream(MESSAGES, **_PARAMS)
            if case.read == "one delta":
                with stream:
                    outcome = ("delta", next(stream))
            else:
                outcome = ("text", "".join(stream))
    except Exception as error:
        outcome = (type(error).__name__, str(error))
    finally:
        rig.client.close()
    return _recorded(rig, outcome)


async def _run_async(url: str, case: Case) -> Recorded:
    rig = make_async_rig(url, **case.options)
    try:
        if case.read in ("chat", "twice"):
            for _ in range(2 if case.read == "twice" else 1):
                response, _span = await rig.client.chat(MESSAGES, **_PARAMS)
            outcome = ("answer", response.content)
        else:
            stream = await rig.client.chat_stream(MESSAGES, **_PARAMS)
            if case.read == "one delta":
                async with stream:
                    outcome = ("delta", await anext(stream))
            else:
                outcome = ("text", "".join([delta async for delta in stream]))
    except Exception as error:
        outcome = (type(error).__name__, str(error))
    finally:
        await rig.client.aclose()
    return _recorded(rig, outcome)


def _both(case: Case) -> tuple[Recorded, Recorded]:
    if case.behaviour is None:
        url = servers.refused_url()
        return _run_sync(url, case), asyncio.run(_run_async(url, case))
    with servers.serve(case.behaviour()) as server:
        return _run_sync(server.url, case), asyncio.run(_run_async(server.url, case))


def _comparable(recorded: Recorded, *, refused: bool) -> Recorded:
    """What may differ between the two transports made equal, and nothing else.

    An exception event's stack trace names the frames it went through (the
    sync or the async module): its last line, the exception itself, is kept.
    A refused connection's message ends with the OS's words, which the two
    httpx transports word differently ("[Errno 111] Connection refused",
    "All connection attempts failed"): they are cut.
    """

    def cut(text: str) -> str:
        if refused and text.startswith("no llama-server answers at"):
            return text.split(" (", 1)[0]
        return text

    for trace in recorded.traces:
        for span in trace["spans"]:
            attrs = span["attributes"]
            if semconv.ERROR_MESSAGE in attrs:
                attrs[semconv.ERROR_MESSAGE] = cut(attrs[semconv.ERROR_MESSAGE])
            for event in span["events"]:
                said = event["attributes"]
                if semconv.EXCEPTION_MESSAGE in said:
                    said[semconv.EXCEPTION_MESSAGE] = cut(said[semconv.EXCEPTION_MESSAGE])
                if semconv.EXCEPTION_STACKTRACE in said:
                    last_line = said[semconv.EXCEPTION_STACKTRACE].splitlines()[-1]
                    said[semconv.EXCEPTION_STACKTRACE] = cut(last_line)
    for entry in recorded.logs:
        prefix, _, rest = entry["message"].partition(" failed: ")
        if rest:
            entry["message"] = f"{prefix} failed: {cut(rest)}"
    recorded.outcome = (recorded.outcome[0], cut(recorded.outcome[1]))
    return recorded


@pytest.mark.parametrize("name", list(CASES))
def test_sync_and_async_record_the_same(name: str) -> None:
    refused = CASES[name].behaviour is None
    sync, concurrent = (_comparable(recorded, refused=refused) for recorded in _both(CASES[name]))
    assert sync.traces, "the sync client recorded nothing"
    assert concurrent.outcome == sync.outcome
    assert concurrent.traces == sync.traces
    assert concurrent.logs == sync.logs
    assert concurrent.metrics == sync.metrics


def test_the_cases_cover_success_failure_and_streams() -> None:
    # Guards the comparison above from comparing nothing: each kind of ending is among the cases.
    sync, _ = _both(CASES["stream cut"])
    (trace,) = sync.traces
    (span,) = trace["spans"]
    assert span["status"] == "error"
    assert span["attributes"][semconv.ERROR_TYPE] == "StreamInterrupted"
    assert span["attributes"][semconv.OBS_PARTIAL_OUTPUT] == "Hello there"
    sync, _ = _both(CASES["cache hit"])
    assert [t["spans"][0]["attributes"][semconv.OBS_CACHE_HIT] for t in sync.traces] == [False, True]
