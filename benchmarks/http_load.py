"""A streamed-chat load generator for the HTTP benchmarks, run in separate processes.

The load never shares an interpreter with the server it measures: ``run_load`` starts ``processes`` client
processes (spawned, not forked), each driving its share of the concurrent streams with one asyncio httpx client
through ``POST /v1/chat/completions`` (``stream: true``, usage in the last chunk), exactly as an OpenAI client
does. Each process first sends one unmeasured one-token request per stream (its connections open, the client's
own first-request work done, as in a long-lived client), then all processes start together on a barrier; the
result is the aggregate output tokens/s over the wall time from the first request to the last token, TTFT
percentiles over every request, and the decode pace: the median over streams of the time per token after the
first (the engine's step time as a client sees it, without the fixed latencies of the request's start and end).

    from http_load import run_load
    run_load("http://127.0.0.1:8000", "model", prompts, concurrency=32, max_tokens=256, requests=64, processes=4)
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import statistics
import time
from typing import Any


async def _one(http, url: str, body: dict[str, Any]) -> tuple[float, float, int, float]:
    """(start, time to first content, completion tokens, end) of one streamed request."""
    start = time.perf_counter()
    ttft, tokens = None, 0
    async with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if ttft is None and '"content":"' in line and '"content":""' not in line:
                ttft = time.perf_counter() - start
            if '"usage"' in line:
                usage = json.loads(line[6:]).get("usage") or {}
                tokens = usage.get("completion_tokens") or tokens
            elif '"error"' in line and line.startswith('data: {"error"'):
                raise RuntimeError(line[:300])
    return start, ttft if ttft is not None else time.perf_counter() - start, tokens, time.perf_counter()


def _bodies(model: str, prompts: list[str], max_tokens: int, first: int, count: int, extra: dict) -> list[dict]:
    return [{"model": model, "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
             "max_tokens": max_tokens, "temperature": 0, "stream": True,
             "stream_options": {"include_usage": True}, **extra} for i in range(first, first + count)]


def _client_process(url: str, bodies: list[dict], streams: int, keepalive: bool, barrier, results) -> None:
    import httpx

    async def main():
        limits = httpx.Limits(max_connections=streams + 4,
                              max_keepalive_connections=streams + 4 if keepalive else 0)
        async with httpx.AsyncClient(timeout=1200, limits=limits) as http:
            queue = list(reversed(bodies))
            out = []

            async def lane():
                while queue:
                    out.append(await _one(http, url, queue.pop()))

            warm = {**bodies[0], "max_tokens": 1}
            await asyncio.gather(*[_one(http, url, warm) for _ in range(min(streams, len(bodies)))])
            barrier.wait()
            await asyncio.gather(*[lane() for _ in range(streams)])
            return out

    try:
        results.put(("ok", asyncio.run(main())))
    except Exception as exc:  # reported to the coordinator
        results.put(("error", repr(exc)))


def run_load(url: str, model: str, prompts: list[str], concurrency: int, max_tokens: int, requests: int | None = None,
             processes: int = 1, keepalive: bool = True, extra: dict | None = None) -> dict[str, float]:
    """Drive ``concurrency`` concurrent streams (``requests`` in all, default one per stream) from ``processes``
    separate client processes; aggregate output tokens/s and TTFT percentiles (ms)."""
    requests = requests or concurrency
    processes = max(1, min(processes, concurrency))
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs, first = [], 0
    for p in range(processes):
        streams = concurrency // processes + (1 if p < concurrency % processes else 0)
        count = requests // processes + (1 if p < requests % processes else 0)
        bodies = _bodies(model, prompts, max_tokens, first, count, extra or {})
        first += count
        proc = ctx.Process(target=_client_process, args=(url, bodies, streams, keepalive, barrier, results))
        proc.start()
        procs.append(proc)
    rows = []
    for _ in procs:
        status, value = results.get(timeout=3600)
        if status != "ok":
            for proc in procs:
                proc.kill()
            raise RuntimeError(f"load generator failed: {value}")
        rows.extend(value)
    for proc in procs:
        proc.join()
    wall = max(r[3] for r in rows) - min(r[0] for r in rows)
    ttfts = sorted(r[1] * 1000 for r in rows)
    paces = [1000 * (end - start - ttft) / (tokens - 1) for start, ttft, tokens, end in rows if tokens > 1]
    return {"tokens_per_s": sum(r[2] for r in rows) / wall, "tokens": sum(r[2] for r in rows), "wall_s": wall,
            "ttft_p50_ms": statistics.median(ttfts), "ttft_p99_ms": ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
            "decode_ms_per_token": statistics.median(paces) if paces else float("nan"), "requests": len(rows)}
