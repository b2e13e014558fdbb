"""The load generator's throughput next to raw `httpx.AsyncClient` sending the same requests at once.

Starts the embedded llama-server (SmolLM2-135M, 2 slots) and sends the same
load both ways, in interleaved rounds (the order flips every round, so
neither side always runs on a warmer server):

- loadgen: `obs.loadgen.run_load_async` through `AsyncInstrumentedClient`,
  every request a span, a metrics record and a log entry, written into a
  temporary SQLite file by a BatchProcessor (as `python -m obs.loadgen` does);
- raw: CONCURRENCY asyncio workers on one `httpx.AsyncClient`, the same
  bodies in the same order; a streamed answer is read line by line, each
  `data:` line decoded (what any client must do to get the text), up to
  `[DONE]` (read past it, the connection is reused, and llama-server may
  already have closed it: "Server disconnected without sending a response").

Each round sends REQUESTS requests with `max_tokens` 16 and `ignore_eos`
(every answer the same length) at concurrency CONCURRENCY, streamed and not.
Reported per mode: each side's median requests/s (answered requests; failed
ones, timeouts say, are counted apart) and output tokens/s, the
median of the per-round ratios loadgen / raw (the headline: both sides of a
round share the machine's momentary load), and the CPU time this process
spent per request on each side (its threads included: the SQLite writer's
too), since the model runs in another process and a busy machine makes the
wall-clock ratio noisy. Goal: at least 95% of raw
throughput. Both run twice: with the model on every core (the embedded
server's default), where the client's CPU is taken from the model's
threads; and with the model on one thread less, as on a machine with a core
(or a GPU) to spare.

    python -m benchmarks bench_loadgen
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx

from obs.llm.async_client import AsyncInstrumentedClient
from obs.llm.llama.server import start_embedded_server
from obs.loadgen import DEFAULT_PROMPTS, LoadConfig, run_load_async
from obs.storage.exporter import SqliteExporter
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.processors import BatchProcessor
from obs.trace.tracer import Tracer

CONCURRENCY = 4
REQUESTS = 16
ROUNDS = 5
TARGET = 0.95
_PARAMS = {"temperature": 0, "seed": 1, "ignore_eos": True}
_MAX_TOKENS = 16


def _config(url: str, stream: bool) -> LoadConfig:
    return LoadConfig(url, concurrency=CONCURRENCY, requests=REQUESTS, stream=stream, max_tokens=_MAX_TOKENS,
                      params=_PARAMS)  # fmt: skip


async def _raw_round(url: str, config: LoadConfig) -> tuple[float, int, int]:
    """The load with raw httpx: (seconds, output tokens, failed requests)."""
    chat_url = url + "/v1/chat/completions"
    headers = {"Content-Type": "application/json"}
    next_index, tokens, failed = 0, 0, 0

    async def one(http: httpx.AsyncClient, index: int) -> int:
        body = {"messages": config.messages(index), **config.body_params()}
        if not config.stream:
            response = await http.post(chat_url, content=json.dumps(body).encode(), headers=headers)
            response.raise_for_status()
            return int(response.json()["usage"]["completion_tokens"])
        body.update(stream=True, stream_options={"include_usage": True})
        used = 0
        payload = json.dumps(body).encode()
        async with http.stream("POST", chat_url, content=payload, headers=headers) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line == "data: [DONE]":
                    break
                if not line.startswith("data: "):
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    used = int(chunk["usage"]["completion_tokens"])
        return used

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal next_index, tokens, failed
        while next_index < REQUESTS:
            index, next_index = next_index, next_index + 1
            try:
                used = await one(http, index)  # not `tokens += await ...`: that reads `tokens` first
            except httpx.HTTPError:
                failed += 1
            else:
                tokens += used

    # The instrumented client's default timeout, so both sides give up on a silent server alike.
    async with httpx.AsyncClient(timeout=60.0) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(CONCURRENCY)))
        return time.perf_counter() - started, tokens, failed


async def _loadgen_round(config: LoadConfig, tracer: Tracer) -> tuple[float, int, int]:
    """The load through the load generator: (seconds, output tokens, failed requests)."""
    result = await run_load_async(config, client_factory=lambda: AsyncInstrumentedClient(config.url,
                                                                                         tracer=tracer))
    summary = result.summary
    return result.elapsed_s, summary.output_tokens, summary.errors


Round = tuple[float, int, int, float]


def _cpu_timed(make: Callable[[], Coroutine[Any, Any, tuple[float, int, int]]]) -> Round:
    """(seconds, output tokens, failed requests, CPU ms of this process per request) of one round."""
    cpu = time.process_time()
    seconds, tokens, failed = asyncio.run(make())
    return seconds, tokens, failed, (time.process_time() - cpu) * 1000.0 / REQUESTS


def _compare(url: str, stream: bool, tracer: Tracer) -> None:
    config = _config(url, stream)
    asyncio.run(_raw_round(url, config))  # warm both paths (and the server's prompt cache)
    asyncio.run(_loadgen_round(config, tracer))
    raw: list[Round] = []
    gen: list[Round] = []
    for index in range(ROUNDS):
        order = ((raw, lambda: _raw_round(url, config)), (gen, lambda: _loadgen_round(config, tracer)))
        for into, make in order if index % 2 == 0 else order[::-1]:
            into.append(_cpu_timed(make))
    # Throughput counts answered requests: a request that failed (a timeout) is no capacity.
    raw_rps = [(REQUESTS - f) / s for s, _, f, _ in raw]
    gen_rps = [(REQUESTS - f) / s for s, _, f, _ in gen]
    raw_tps = statistics.median(t / s for s, t, _, _ in raw)
    gen_tps = statistics.median(t / s for s, t, _, _ in gen)
    raw_cpu = statistics.median(c for _, _, _, c in raw)
    gen_cpu = statistics.median(c for _, _, _, c in gen)
    raw_failed, gen_failed = sum(r[2] for r in raw), sum(g[2] for g in gen)
    ratio = statistics.median(g / r for g, r in zip(gen_rps, raw_rps, strict=True))
    mode = "streamed" if stream else "not streamed"
    print(f"  {mode}: {REQUESTS} requests at concurrency {CONCURRENCY}, {ROUNDS} rounds each, interleaved")
    print(f"    raw httpx.AsyncClient  median {statistics.median(raw_rps):6.2f} requests/s "
          f"{raw_tps:7.1f} output tokens/s (range {min(raw_rps):.2f}-{max(raw_rps):.2f}), "
          f"CPU {raw_cpu:.2f} ms/request, {raw_failed} failed")
    print(f"    obs.loadgen            median {statistics.median(gen_rps):6.2f} requests/s "
          f"{gen_tps:7.1f} output tokens/s (range {min(gen_rps):.2f}-{max(gen_rps):.2f}), "
          f"CPU {gen_cpu:.2f} ms/request, {gen_failed} failed")
    print(f"    ratio {ratio:.1%} of raw throughput (median of per-round ratios); goal >= {TARGET:.0%}: "
          f"{'PASS' if ratio >= TARGET else 'FAIL'}")  # fmt: skip


def main() -> None:
    """Start the embedded server; compare both ways, streamed and not, model on every core and one less."""
    cores = os.cpu_count() or 2
    settings = [(None, f"model on every core ({cores})")]
    if cores > 1:
        settings.append((cores - 1, f"model on {cores - 1} thread(s), a core left to the client"))
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteTraceStore(str(Path(tmp) / "obs.db"))
        tracer = Tracer(processors=[BatchProcessor(SqliteExporter(store), schedule_delay_s=1.0)],
                        service_name="bench-loadgen")
        try:
            for threads, label in settings:
                with start_embedded_server(port=0, threads=threads) as server:
                    print(f"embedded llama-server at {server.url}, {label}; prompts: the "
                          f"{len(DEFAULT_PROMPTS)} built-in ones in turn")
                    for stream in (True, False):
                        _compare(server.url, stream, tracer)
        finally:
            tracer.shutdown(30.0)
            print(f"  ({len(store)} traces written to the temporary SQLite file)")
            store.close()


if __name__ == "__main__":
    main()
