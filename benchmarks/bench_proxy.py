"""What the recording proxy adds to a call, next to the same call made directly to the server behind it.

`python -m obs.proxy` runs in its own process (recording into a temporary
SQLite file, as a user runs it) in front of a server; the same requests go,
with the same raw httpx client, to each, interleaved (the order flips every
round, so neither side always runs on a warmer server):

1. Time to the first token (the first `data:` line with text) of a streamed
   chat of `max_tokens` 1; the total time to the end of a streamed chat of
   `max_tokens` 16; and a non-streamed chat's total time. The client reads
   each answer to the end of its body (past `[DONE]`, as the AsyncOpenAI
   client does), so its connection to each side is kept and used again (a
   client that stops at `[DONE]`, as the synchronous OpenAI client does,
   leaves the connection unusable, and its every call opens a new one).
   Each in rounds of
   its own: the first token, whose per-round differences spread over several
   milliseconds where the model takes every core, needs hundreds of rounds
   for an interval narrower than its target, and calls that end at their
   first token fit four times as many rounds in the same time (the proxy's
   path to the first token is the same whatever follows it). Headline: the
   median of the per-round differences (both calls of a round share the
   machine's momentary load). Target: at
   most 2 ms or 2% added, whichever is larger. Each call starts 30 ms after
   the previous one ended, on both sides: the proxy records a call after
   its answer is relayed, so a call sent back to back would also wait for
   the previous call's recording (the proxy's CPU per call, below, counts it).
   The totals are compared twice: as they are, and with the time
   llama-server says it computed (`timings.prompt_ms + predicted_ms`, in
   every answer) taken out of each call. What is left is the time outside
   the model (HTTP, relaying, the client), where the proxy's own cost lands,
   without the model's variation from call to call (tens of milliseconds on
   a busy machine). Where the model takes every core the proxy can also slow
   the model itself; the tokens/s comparison (2.) shows that.
2. Streamed chat, `max_tokens` 64: tokens per second from request to
   `[DONE]`. Headline: the median of the per-round ratios. Target: the proxy
   keeps at least 97% of the direct rate.

Verdicts come from a 95% interval of that median (between two order
statistics of the rounds, so no distribution is assumed): PASS when all of
it meets the target, FAIL when none of it does, and NOT MEASURABLE HERE
when it straddles the target, or when the per-round differences (ratios)
spread between their quartiles over more than four times the margin the
target allows: other work on the machine then moves single calls by more
than the proxy does. Rounds go on in batches while there is no verdict,
until a time budget runs out, or until each comparison either has a
verdict or spreads too widely for one (more rounds do not narrow a spread).

Three servers, each named in its verdicts:

- a scripted llama-server stand-in (`benchmarks/llama_standin.py`: the
  bytes llama-server streams, 64 chunks 5 ms apart, the first after 20 ms):
  the proxy's cost isolated from model noise, measured to well under a
  millisecond;
- the embedded llama-server (SmolLM2-135M) on one thread per core (what
  llama.cpp chooses by default), where every CPU millisecond the proxy
  spends is taken from the model's threads, which wait for each other at
  every layer;
- the same on one thread less, as on a machine with a core or a GPU to
  spare, where what is measured is the proxy itself next to a real model.

Also printed: the proxy process's CPU time per streamed event (from /proc),
recording included: the steadier figure on a noisy machine. Where HAProxy is
installed (`apt-get install haproxy`), it relays the same calls as a third
side of every latency round, for comparison only (no verdict): an HTTP
reverse proxy written in C that records nothing, what a relay costs on this
machine at the least. With `OBS_BENCH_BASELINE=REV` (a git revision), the
proxy of that build relays the same calls as one more side of every latency
round, and each measure is also printed as this build's difference from it,
round by round (no verdict): how a change moves the figures, under the same
load.

    python -m benchmarks proxy
    OBS_BENCH_BASELINE=HEAD~1 python -m benchmarks proxy
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

from benchmarks._baseline import BASELINE_ENV, baseline_rev, baseline_tree
from benchmarks._process import cpu_seconds, stop, wait_healthy
from obs.llm.llama.server import find_free_port, start_embedded_server

ADDED_ABS_MS = 2.0
ADDED_REL = 0.02
STREAM_TARGET = 0.97
CONFIDENCE = 0.95
MIN_ROUNDS = 30
BATCH = 10  # rounds between two looks at the verdict
FEWEST_ROUNDS = 6  # a comparison out of time still runs these
WARMUP = 3
# Seconds each comparison may take before its verdict is given as it stands (model-free, real model).
STANDIN_BUDGET_S = 60.0
MODEL_BUDGET_S = 120.0
STANDIN_FIRST_MS = 20.0
STANDIN_INTERVAL_MS = 5.0
# Each call starts this long after the previous one ended, on both sides: the proxy records a call once
# its answer is relayed, and a call sent back to back would wait for that (its CPU is reported apart).
GAP_S = 0.03

_T = TypeVar("_T")
_ROOT = Path(__file__).resolve().parents[1]
_MESSAGES = [{"role": "user", "content": "Name three colours."}]
_SHORT = {"messages": _MESSAGES, "max_tokens": 16, "temperature": 0, "seed": 1, "ignore_eos": True}
_LONG = {**_SHORT, "max_tokens": 64}


class _Proxy:
    """`python -m obs.proxy` in a child process, recording into a temporary file; of this build, or of the
    build in `root` (an exported revision, `benchmarks/_baseline.py`), named `name`."""

    def __init__(self, upstream: str, folder: str, root: Path = _ROOT, name: str = "bench") -> None:
        self.port = find_free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = name
        env = {k: v for k, v in os.environ.items() if k != "OBS_DB_PATH"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "obs.proxy", "--upstream", upstream, "--port", str(self.port),
             "--db", str(Path(folder) / f"{name}.db"), "--service-name", "bench-proxy"],
            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        wait_healthy(self.process, self.url, "python -m obs.proxy", 30.0)

    def stop(self) -> None:
        stop(self.process)


class _HAProxy:
    """HAProxy in HTTP mode in front of `upstream`, for comparison: connections kept and reused, each piece
    of an answer passed on at once (`option http-no-delay`), nothing recorded."""

    def __init__(self, upstream: str, folder: str) -> None:
        host, port = httpx.URL(upstream).host, httpx.URL(upstream).port
        self.port = find_free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = Path(folder) / "haproxy.cfg"
        config.write_text(
            "defaults\n    mode http\n    timeout connect 5s\n    timeout client 120s\n"
            "    timeout server 120s\n    http-reuse always\n    option http-no-delay\n"
            f"frontend relay\n    bind 127.0.0.1:{self.port}\n    default_backend model\n"
            f"backend model\n    server upstream {host}:{port}\n"
        )
        self.process = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)  # fmt: skip
        wait_healthy(self.process, self.url, "haproxy", 10.0)

    @staticmethod
    @contextmanager
    def maybe(upstream: str, folder: str) -> Iterator[_HAProxy | None]:
        """One in front of `upstream` where haproxy is installed, else None."""
        if shutil.which("haproxy") is None:
            yield None
            return
        relay = _HAProxy(upstream, folder)
        try:
            yield relay
        finally:
            stop(relay.process)


@contextmanager
def _standin() -> Iterator[str]:
    """The scripted llama-server stand-in in a child process; its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.llama_standin", "--port", "0",
         "--first-ms", str(STANDIN_FIRST_MS), "--interval-ms", str(STANDIN_INTERVAL_MS)],
        cwd=_ROOT, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        line = process.stdout.readline().decode() if process.stdout else ""
        if not line.startswith("listening on "):
            raise RuntimeError(f"the llama-server stand-in did not start: {line!r}")
        yield line.split()[-1]
    finally:
        stop(process)


def _retrying(call: Callable[[], _T]) -> _T:
    """`call()`, once more if the server closed a kept-alive connection before answering.

    llama-server may close a connection after a stream without saying so; the
    OpenAI client retries such a request too. Both sides get the same treatment.
    """
    try:
        return call()
    except httpx.RemoteProtocolError:
        return call()


def _server_ms(answer: dict[str, object]) -> float:
    """The ms llama-server says it computed for an answer (`timings.prompt_ms + predicted_ms`), or NaN."""
    timings = answer.get("timings")
    if not isinstance(timings, dict):
        return math.nan
    return float(timings.get("prompt_ms", math.nan)) + float(timings.get("predicted_ms", math.nan))


def _stream(client: httpx.Client, url: str, body: bytes) -> tuple[float, float, int, int, float]:
    """(ms to the first token, ms to [DONE], completion tokens, server-sent events, ms the server says it
    computed) of one streamed chat."""

    def once() -> tuple[float, float, int, int, float]:
        time.sleep(GAP_S)
        started = time.perf_counter()
        first: float | None = None
        tokens = events = 0
        server_ms = math.nan
        headers = {"Content-Type": "application/json"}
        with client.stream("POST", url, content=body, headers=headers) as response:
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                events += 1
                if line == "data: [DONE]":
                    continue  # read on to the body's end, as AsyncOpenAI does: the connection is kept
                chunk = json.loads(line[6:])
                choices = chunk.get("choices")
                if first is None and choices and choices[0].get("delta", {}).get("content"):
                    first = time.perf_counter()
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                if "timings" in chunk:
                    server_ms = _server_ms(chunk)
        done = time.perf_counter()
        assert first is not None and tokens > 0, "the stream brought no token"
        return (first - started) * 1000.0, (done - started) * 1000.0, tokens, events, server_ms

    return _retrying(once)


def _post_ms(client: httpx.Client, url: str, body: bytes) -> tuple[float, float]:
    """(milliseconds of one non-streamed chat, its body read; ms the server says it computed)."""

    def once() -> tuple[float, float]:
        time.sleep(GAP_S)
        started = time.perf_counter()
        response = client.post(url, content=body, headers={"Content-Type": "application/json"})
        elapsed = (time.perf_counter() - started) * 1000.0
        response.raise_for_status()
        return elapsed, _server_ms(response.json())

    return _retrying(once)


# -- verdicts -------------------------------------------------------------------------------------


def median_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """A distribution-free interval holding the median with `confidence`: two order statistics of `values`."""
    ordered = sorted(values)
    n = len(ordered)
    k = 0  # the interval [ordered[k], ordered[n - 1 - k]]; k = 0 is the whole range
    for candidate in range(1, n // 2):
        # The median lies between the (candidate+1)-th and the (n-candidate)-th smallest values when
        # more than `candidate` of the n values fall on each side of it: Binomial(n, 1/2) odds.
        inside = sum(math.comb(n, i) for i in range(candidate + 1, n - candidate)) / 2**n
        if inside < confidence:
            break
        k = candidate
    return ordered[k], ordered[n - 1 - k]


def _spread(values: list[float]) -> float:
    """The distance between the first and third quartiles."""
    quartiles = statistics.quantiles(values, n=4)
    return quartiles[2] - quartiles[0]


def _added_verdict(differences: list[float], base_ms: float) -> tuple[str | None, float]:
    """(PASS, FAIL or None when no verdict can be given here, the target in ms)."""
    allowed = max(ADDED_ABS_MS, ADDED_REL * base_ms)
    if _spread(differences) > 4 * allowed:
        return None, allowed  # other work moves single calls by far more than the target: no verdict
    low, high = median_interval(differences)
    if high <= allowed:
        return "PASS", allowed
    if low > allowed:
        return "FAIL", allowed
    return None, allowed


def _ratio_verdict(ratios: list[float]) -> str | None:
    if _spread(ratios) > 4 * (1.0 - STREAM_TARGET):
        return None
    low, high = median_interval(ratios)
    if low >= STREAM_TARGET:
        return "PASS"
    if high < STREAM_TARGET:
        return "FAIL"
    return None


def _undecided(spread: float, limit: float, unit: str, target: str) -> str:
    if spread > limit:
        what = "ratios" if unit == "%" else "differences"
        return (f"NOT MEASURABLE HERE (per-round {what} spread over {spread:.1f}{unit} "
                "between quartiles: other work on the machine, not the proxy, decides single calls)")
    return f"NOT MEASURABLE HERE (the interval straddles {target})"


def _rounds(direct: Callable[[], _T], proxied: Callable[[], _T], budget_s: float,
            decided: Callable[[list[_T], list[_T]], bool],
            *others: Callable[[], _T]) -> tuple[list[_T], ...]:  # fmt: skip
    """Interleaved rounds (each round starts one side later than the one before): until decided, checked
    every BATCH, or out of time. One list per side: direct, proxied, then `others` (for comparison)."""
    sides = (direct, proxied, *others)
    results: tuple[list[_T], ...] = tuple([] for _ in sides)
    a, b = results[0], results[1]
    started = time.monotonic()
    while True:
        first = len(a) % len(sides)
        for index in [*range(first, len(sides)), *range(first)]:
            results[index].append(sides[index]())
        if len(a) >= FEWEST_ROUNDS and time.monotonic() - started > budget_s:
            return results  # a machine this busy gets its verdict (or none) from the rounds there were
        if len(a) >= MIN_ROUNDS and len(a) % BATCH == 0 and decided(a, b):
            return results


def _line(label: str, direct: list[float], proxied: list[float], setting: str, base_ms: float) -> str:
    """Print and return one comparison; the target's 2% is of `base_ms` (the direct call's median time)."""
    d, p = statistics.median(direct), statistics.median(proxied)
    differences = [x - y for x, y in zip(proxied, direct, strict=True)]
    added = statistics.median(differences)
    low, high = median_interval(differences)
    verdict, allowed = _added_verdict(differences, base_ms)
    shown = verdict or _undecided(_spread(differences), 4 * allowed, " ms", f"{allowed:.2f} ms")
    print(f"  {label:<28} direct {d:8.2f} ms   proxy {p:8.2f} ms   added {added:+7.3f} ms "
          f"({added / base_ms:+.2%}), 95% interval {low:+.3f} to {high:+.3f} ms")  # fmt: skip
    print(f"  {'':<28} target at most {allowed:.2f} ms (the larger of 2 ms and 2%): {shown}")
    return (f"{label}: added {added:+.3f} ms ({added / base_ms:+.1%}; {low:+.3f} to {high:+.3f}), {shown} "
            f"({setting})")


def _cpu_line(pid: int, cpu0: float | None, events: list[int]) -> str | None:
    cpu1 = cpu_seconds(pid)
    if cpu0 is None or cpu1 is None or not events:
        return None
    cpu_ms = (cpu1 - cpu0) * 1000.0
    # Per server-sent event: one a token, and the role, finish and usage events and [DONE] around them.
    return (f"proxy process CPU: {cpu_ms * 1000.0 / sum(events):.0f} us per streamed event "
            f"({cpu_ms / len(events):.1f} ms a call of {sum(events) / len(events):.0f} events; "
            "recording included)")


# -- the comparisons ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Measures:
    """What one kind of latency round measures on each side: `call(client, base URL)` gives one value per
    label; `outside` maps a measure with the server's computing time taken out to the one it comes from;
    `relays_shown` are the measures for which HAProxy's and the baseline's own figures are printed too
    (every measure is printed as this build's difference from the baseline)."""

    title: str
    labels: tuple[str, ...]
    outside: dict[int, int]
    call: Callable[[httpx.Client, str], tuple[float, ...]]
    relays_shown: frozenset[int] = frozenset()


def _first_token(client: httpx.Client, base: str) -> tuple[float, ...]:
    return (_stream(client, base + "/v1/chat/completions", _FIRST_BODY)[0],)


def _streamed(client: httpx.Client, base: str) -> tuple[float, ...]:
    _, total, _, _, server_ms = _stream(client, base + "/v1/chat/completions", _STREAM_BODY)
    return total, total - server_ms


def _plain(client: httpx.Client, base: str) -> tuple[float, ...]:
    total, server_ms = _post_ms(client, base + "/v1/chat/completions", _PLAIN_BODY)
    return total, total - server_ms


_STREAMED = {"stream": True, "stream_options": {"include_usage": True}}
_FIRST_BODY = json.dumps({**_SHORT, **_STREAMED, "max_tokens": 1}).encode()
_STREAM_BODY = json.dumps({**_SHORT, **_STREAMED}).encode()
_PLAIN_BODY = json.dumps(_SHORT).encode()
_LATENCY = (
    _Measures("a streamed chat of max_tokens 1", ("stream: time to first token",), {}, _first_token,
              relays_shown=frozenset({0})),
    _Measures("a streamed chat of max_tokens 16", ("stream: total", "stream: total outside the model"),
              {1: 0}, _streamed),
    _Measures("a non-streamed chat of max_tokens 16",
              ("non-streamed: total", "non-streamed: total outside the model"), {1: 0}, _plain),
)  # fmt: skip


def _settled(differences: list[float], base_ms: float) -> bool:
    """Whether more rounds are of no use to a comparison: it has a verdict, or its per-round differences
    spread too widely for one (a property of the machine's load that more rounds do not narrow)."""
    if any(math.isnan(d) for d in differences):
        return True  # a server that does not report its timings: nothing to wait for
    verdict, allowed = _added_verdict(differences, base_ms)
    return verdict is not None or _spread(differences) > 4 * allowed


def bench_latency(
    client: httpx.Client, server: str, proxy: _Proxy, setting: str, budget_s: float, spare_core: bool = True,
    reference: _HAProxy | None = None, baseline: _Proxy | None = None,
) -> list[str]:
    """Time to first token and total time, streamed and not, direct against through the proxy.

    Each kind of call goes in rounds of its own (`_LATENCY`), each with
    `budget_s`: the time to first token, the measure that needs the most
    rounds where the model takes every core, from streams that end there.
    The totals are also compared with the time llama-server says it computed
    taken out of each call (`timings.prompt_ms + predicted_ms`): the time
    outside the model, which is all the proxy can add to when it does not slow
    the model itself, without the model's own variation from call to call.
    `spare_core=False` (the model on every core, where the proxy does slow
    it): only the measures as they are decide when the rounds may stop.
    `reference` (HAProxy) relays the same calls in every round, for comparison;
    so does `baseline` (the proxy of another build), and each measure is also
    given as this build's difference from it, round by round.
    """
    lines: list[str] = []
    for measures in _LATENCY:
        lines += _latency_rounds(client, measures, server, proxy, setting, budget_s, spare_core, reference,
                                 baseline)  # fmt: skip
    return lines


def _latency_rounds(
    client: httpx.Client, measures: _Measures, server: str, proxy: _Proxy, setting: str, budget_s: float,
    spare_core: bool, reference: _HAProxy | None, baseline: _Proxy | None,
) -> list[str]:
    """One kind of latency round (`measures`), until every measure is settled or `budget_s` runs out."""
    outside = measures.outside

    def side(base: str) -> Callable[[], tuple[float, ...]]:
        return lambda: measures.call(client, base)

    def base_ms(direct: list[tuple[float, ...]], index: int) -> float:
        return statistics.median(r[outside.get(index, index)] for r in direct)

    def settled(direct: list[tuple[float, ...]], proxied: list[tuple[float, ...]], index: int) -> bool:
        differences = [p[index] - x[index] for p, x in zip(proxied, direct, strict=True)]
        return _settled(differences, base_ms(direct, index))

    def decided(direct: list[tuple[float, ...]], proxied: list[tuple[float, ...]]) -> bool:
        # Each measure as it is; with a core to spare, a total may be settled outside the model instead.
        instead = {raw: o for o, raw in outside.items()}
        return all(settled(direct, proxied, index)
                   or (spare_core and index in instead and settled(direct, proxied, instead[index]))
                   for index in range(len(measures.labels)) if index not in outside)  # fmt: skip

    others = [side(relay.url) for relay in (reference, baseline) if relay is not None]
    for _ in range(WARMUP):
        for warm in (side(server), side(proxy.url), *others):
            warm()
    direct, proxied, *compared = _rounds(side(server), side(proxy.url), budget_s, decided, *others)
    print(f"{measures.title}: {len(direct)} rounds, interleaved")
    lines = []
    for index, label in enumerate(measures.labels):
        d, p = [r[index] for r in direct], [r[index] for r in proxied]
        if any(math.isnan(x) for x in d + p):
            continue  # a server that does not report its timings
        if index in outside and not spare_core:
            label += " (the model slowed too: see the total)"
        lines.append(_line(label, d, p, setting, base_ms(direct, index)))
        shown = index in measures.relays_shown
        if reference is not None and shown:
            lines.append(_compared_line("HAProxy (C, records nothing): " + label, d,
                                        [r[index] for r in compared[0]], setting))  # fmt: skip
        if baseline is not None:
            before = [r[index] for r in compared[-1]]
            if shown:
                lines.append(_compared_line(f"the proxy at {baseline.name}: {label}", d, before, setting))
            lines.append(_compared_line(f"this build against {baseline.name}: {label}", before, p, setting))
    return lines


def _compared_line(label: str, direct: list[float], relayed: list[float], setting: str) -> str:
    """Print and return what a relay given for comparison adds (its median and 95% interval, no verdict)."""
    differences = [x - y for x, y in zip(relayed, direct, strict=True)]
    added = statistics.median(differences)
    low, high = median_interval(differences)
    print(f"  {label}: added {added:+.3f} ms, 95% interval {low:+.3f} to {high:+.3f} ms (for comparison)")
    return f"{label}: added {added:+.3f} ms ({low:+.3f} to {high:+.3f}), for comparison ({setting})"


def bench_stream(
    client: httpx.Client, server: str, proxy: _Proxy, setting: str, budget_s: float
) -> list[str]:
    """Streamed tokens per second through the proxy against direct, and the proxy's CPU per event."""
    body = json.dumps({**_LONG, "stream": True, "stream_options": {"include_usage": True}}).encode()
    events: list[int] = []

    def rate(base: str) -> Callable[[], float]:
        def run() -> float:
            _, total, tokens, sent, _ = _stream(client, base + "/v1/chat/completions", body)
            if base == proxy.url:
                events.append(sent)
            return tokens / (total / 1000.0)
        return run

    for _ in range(2):
        rate(server)()
        rate(proxy.url)()
    events.clear()
    cpu0 = cpu_seconds(proxy.process.pid)

    def decided(direct: list[float], proxied: list[float]) -> bool:
        return _ratio_verdict([p / d for p, d in zip(proxied, direct, strict=True)]) is not None

    direct_rates, proxied_rates = _rounds(rate(server), rate(proxy.url), budget_s, decided)
    cpu = _cpu_line(proxy.process.pid, cpu0, events)
    ratios = [x / y for x, y in zip(proxied_rates, direct_rates, strict=True)]
    ratio = statistics.median(ratios)
    low, high = median_interval(ratios)
    verdict = _ratio_verdict(ratios) or _undecided(100 * _spread(ratios), 400 * (1.0 - STREAM_TARGET), "%",
                                                   f"{STREAM_TARGET:.0%}")  # fmt: skip
    dm, pm = statistics.median(direct_rates), statistics.median(proxied_rates)
    print(f"streamed chat, 64 tokens per answer, {len(ratios)} streams each, interleaved")
    print(f"  direct  median {dm:7.1f} tokens/s (range {min(direct_rates):.1f}-{max(direct_rates):.1f})")
    print(f"  proxy   median {pm:7.1f} tokens/s (range {min(proxied_rates):.1f}-{max(proxied_rates):.1f})")
    print(f"  ratio {ratio:.2%} (median of per-round ratios, 95% interval {low:.2%} to {high:.2%}; ratio of "
          f"medians {pm / dm:.2%}); target >= {STREAM_TARGET:.0%}: {verdict}")  # fmt: skip
    lines = [f"streamed tokens/s: {ratio:.2%} of direct ({low:.2%} to {high:.2%}), target >= "
             f"{STREAM_TARGET:.0%}: {verdict} ({setting})"]  # fmt: skip
    if cpu is not None:
        print(f"  {cpu}")
        lines.append(f"{cpu} ({setting})")
    return lines


def _compare(server: str, setting: str, budget_s: float, spare_core: bool = True,
             baseline: tuple[str, Path] | None = None) -> list[str]:  # fmt: skip
    """Both comparisons against `server`; `baseline` (revision, its exported tree) adds its proxy."""
    with tempfile.TemporaryDirectory() as folder, _HAProxy.maybe(server, folder) as reference:
        proxy = _Proxy(server, folder)
        before = _Proxy(server, folder, baseline[1], baseline[0]) if baseline is not None else None
        try:
            print(f"server at {server}, python -m obs.proxy at {proxy.url}"
                  + (f", HAProxy at {reference.url}" if reference is not None else "")
                  + (f", the proxy at {before.name}: {before.url}" if before else ""))  # fmt: skip
            with httpx.Client(timeout=120) as client:
                return (bench_latency(client, server, proxy, setting, budget_s, spare_core, reference, before)
                        + bench_stream(client, server, proxy, setting, budget_s))
        finally:
            proxy.stop()
            if before is not None:
                before.stop()


def main() -> None:
    """Run both comparisons against the stand-in, then the model on every core and on one less; verdicts."""
    cores = os.cpu_count() or 1
    summary: list[str] = []
    if shutil.which("haproxy") is None:
        print("(HAProxy is not installed: no comparison with a relay written in C; `apt-get install haproxy` "
              "adds one)")  # fmt: skip
    rev = baseline_rev()
    with tempfile.TemporaryDirectory() as exported:
        baseline = (rev, baseline_tree(rev, exported)) if rev is not None else None
        if rev is not None:
            print(f"(the proxy at {rev} ({BASELINE_ENV}) relays the same calls in every latency round)")
        print(f"\n## scripted llama-server stand-in: {STANDIN_FIRST_MS:g} ms to the first token, then one "
              f"every {STANDIN_INTERVAL_MS:g} ms (proxy cost isolated from model noise)")
        with _standin() as url:
            summary += _compare(url, "stand-in, proxy cost isolated from model noise", STANDIN_BUDGET_S,
                                baseline=baseline)  # fmt: skip
        settings = [(cores, f"llama-server on {cores} thread(s), one per core of this machine (llama.cpp's "
                            "default is one per physical core)")]
        if cores > 1:
            settings.append((cores - 1, f"llama-server on {cores - 1} thread(s): a core left for the proxy"))
        for threads, title in settings:
            with start_embedded_server(port=0, threads=threads) as server:
                print(f"\n## {title}")
                summary += _compare(server.url, f"model on {threads} of {cores} cores", MODEL_BUDGET_S,
                                    spare_core=threads < cores, baseline=baseline)  # fmt: skip
    print("\n## verdicts")
    for line in summary:
        print(f"  {line}")


if __name__ == "__main__":
    main()
