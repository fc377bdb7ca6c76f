"""A streamed-chat load generator for the HTTP benchmarks, run in separate processes.

The load never shares an interpreter with the server it measures: ``run_load`` starts ``processes`` client
processes (spawned, not forked), each driving its share of the concurrent streams with one asyncio HTTP client
through ``POST /v1/chat/completions`` (``stream: true``, usage in the last chunk), as an OpenAI client does. Each
process first sends one unmeasured one-token request per stream (its connections open, the client's own
first-request work done, as in a long-lived client), then all processes start together on a barrier; the result
is the aggregate output tokens/s over the wall time from the first request to the last token, TTFT percentiles
over every request, and the decode pace: the median over streams of the time per token after the first (the
engine's step time as a client sees it, without the fixed latencies of the request's start and end).

The client is aiohttp by default. httpx (what the ``openai`` package uses) can be chosen, but it is the load
generator's own bottleneck at tens of streams per process: against a server that does nothing but pace 64 SSE
streams at 11 ms per token (2-core machine), httpx in one process gave a TTFT p50 of 690-1000 ms and 4 processes
80-105 ms, against 22-25 ms for aiohttp in one or four. A load generator that queues its own requests would
charge that to the server, and an in-process raw engine never pays it.

    from http_load import run_load
    run_load("http://127.0.0.1:8000", "model", prompts, concurrency=32, max_tokens=256, requests=64, processes=4)
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import statistics
import threading
import time
from typing import Any, Callable

CLIENTS = ("aiohttp", "httpx")


class _Stream:
    """What one streamed answer's SSE lines say: time to the first content, completion tokens, errors."""

    def __init__(self):
        self.start = time.perf_counter()
        self.ttft, self.tokens = None, 0

    def line(self, line: str) -> None:
        if not line.startswith("data: ") or line == "data: [DONE]":
            return
        if self.ttft is None and '"content":"' in line and '"content":""' not in line:
            self.ttft = time.perf_counter() - self.start
        if '"usage"' in line:
            usage = json.loads(line[6:]).get("usage") or {}
            self.tokens = usage.get("completion_tokens") or self.tokens
        elif '"error"' in line and line.startswith('data: {"error"'):
            raise RuntimeError(line[:300])

    def result(self) -> tuple[float, float, int, float]:
        """(start, time to first content, completion tokens, end)."""
        end = time.perf_counter()
        return self.start, self.ttft if self.ttft is not None else end - self.start, self.tokens, end


async def _one_aiohttp(session, url: str, body: dict[str, Any]) -> tuple[float, float, int, float]:
    stream = _Stream()
    async with session.post(url + "/v1/chat/completions", json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {(await r.read())[:300]!r}")
        async for raw in r.content:  # one line at a time
            stream.line(raw.decode().rstrip("\r\n"))
    return stream.result()


async def _one_httpx(http, url: str, body: dict[str, Any]) -> tuple[float, float, int, float]:
    stream = _Stream()
    async with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            stream.line(line)
    return stream.result()


def _session(client: str, streams: int, keepalive: bool):
    """(async context manager of the connection pool, the function that sends one request through it)."""
    if client == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=streams + 4,
                              max_keepalive_connections=streams + 4 if keepalive else 0)
        return httpx.AsyncClient(timeout=1200, limits=limits), _one_httpx
    import aiohttp

    connector = aiohttp.TCPConnector(limit=streams + 4, force_close=not keepalive)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=1200)), _one_aiohttp


def _bodies(model: str, prompts: list[str], max_tokens: int, first: int, count: int, extra: dict) -> list[dict]:
    return [{"model": model, "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
             "max_tokens": max_tokens, "temperature": 0, "stream": True,
             "stream_options": {"include_usage": True}, **extra} for i in range(first, first + count)]


def _client_process(url: str, bodies: list[dict], streams: int, keepalive: bool, client: str, barriers,
                    results) -> None:
    async def main():
        pool, one = _session(client, streams, keepalive)
        async with pool as http:
            queue = list(reversed(bodies))
            out = []

            async def lane():
                while queue:
                    out.append(await one(http, url, queue.pop()))

            warm = {**bodies[0], "max_tokens": 1}
            await asyncio.gather(*[one(http, url, warm) for _ in range(min(streams, len(bodies)))])
            for barrier in barriers:  # every process warm, (the coordinator's on_ready,) then all start at once
                barrier.wait()
            cpu = time.process_time()
            await asyncio.gather(*[lane() for _ in range(streams)])
            return out, time.process_time() - cpu

    try:
        results.put(("ok", asyncio.run(main())))
    except Exception as exc:  # reported to the coordinator
        results.put(("error", repr(exc)))


def run_load(url: str, model: str, prompts: list[str], concurrency: int, max_tokens: int, requests: int | None = None,
             processes: int = 1, keepalive: bool = True, extra: dict | None = None,
             client: str = "aiohttp", on_ready: Callable[[], None] | None = None) -> dict[str, float]:
    """Drive ``concurrency`` concurrent streams (``requests`` in all, default one per stream) from ``processes``
    separate client processes with ``client`` (``aiohttp`` or ``httpx``); aggregate output tokens/s and TTFT
    percentiles (ms), and ``client_cpu_s``: the CPU time the client processes spent on the measured requests
    (what the load generator takes from the machine it shares with the server). Each process first sends one
    unmeasured one-token request per stream; ``on_ready`` runs after those and before the measured ones (e.g. to
    read the server's counters without the warm-up)."""
    if client not in CLIENTS:
        raise ValueError(f"client must be one of {CLIENTS}")
    requests = requests or concurrency
    processes = max(1, min(processes, concurrency))
    ctx = mp.get_context("spawn")
    parties = processes + (1 if on_ready is not None else 0)
    barriers, results = (ctx.Barrier(parties), ctx.Barrier(parties)), ctx.Queue()
    procs, first = [], 0
    for p in range(processes):
        streams = concurrency // processes + (1 if p < concurrency % processes else 0)
        count = requests // processes + (1 if p < requests % processes else 0)
        bodies = _bodies(model, prompts, max_tokens, first, count, extra or {})
        first += count
        proc = ctx.Process(target=_client_process, args=(url, bodies, streams, keepalive, client, barriers, results))
        proc.start()
        procs.append(proc)
    if on_ready is not None:
        try:
            barriers[0].wait(timeout=1200)
            try:
                on_ready()
            finally:
                barriers[1].wait(timeout=60)
        except threading.BrokenBarrierError:  # a client failed before: its error is in `results`
            for barrier in barriers:
                barrier.abort()
    rows, cpu = [], 0.0
    for _ in procs:
        status, value = results.get(timeout=3600)
        if status != "ok":
            for proc in procs:
                proc.kill()
            raise RuntimeError(f"load generator failed: {value}")
        rows.extend(value[0])
        cpu += value[1]
    for proc in procs:
        proc.join()
    wall = max(r[3] for r in rows) - min(r[0] for r in rows)
    ttfts = sorted(r[1] * 1000 for r in rows)
    paces = [1000 * (end - start - ttft) / (tokens - 1) for start, ttft, tokens, end in rows if tokens > 1]
    return {"tokens_per_s": sum(r[2] for r in rows) / wall, "tokens": sum(r[2] for r in rows), "wall_s": wall,
            "ttft_p50_ms": statistics.median(ttfts), "ttft_p99_ms": ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
            "decode_ms_per_token": statistics.median(paces) if paces else float("nan"), "requests": len(rows),
            "client_cpu_s": cpu}
