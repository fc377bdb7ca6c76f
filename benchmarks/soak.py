"""A bounded soak of `gallama run`: streaming clients for N minutes, a share of them invalid, from a separate process.

    python benchmarks/soak.py [--minutes 10] [--clients 16] [--invalid 0.1] [--gguf PATH]

Starts `gallama run` on SmolLM2 (4 slots), then drives it from this process (the server is another one): each
client loops over streamed chat requests of 16-48 tokens; ``--invalid`` of the requests are bad on purpose
(broken JSON, a tool message without its id, bad field types, a wrong content type, oversized max_tokens, an unknown field). At
the end it prints: requests by outcome, 5xx among valid and invalid requests (goal: 0), streams that ended
without ``[DONE]``, latency p50/p99 of valid requests, and the resident memory of the front and its workers at
the start (after a warm-up) and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOPICS = ["llamas", "rivers", "bread", "owls", "trains", "winter", "the sea", "mountains"]


def rss_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def processes(url: str, front_pid: int) -> dict[str, float]:
    rows = httpx.get(url + "/list_loaded_models", timeout=10).json()
    out = {"front": rss_mb(front_pid)}
    for row in rows:
        if row.get("pid"):
            out[f"worker {row['model_name']}"] = rss_mb(row["pid"])
    return out


def invalid_request(rng: random.Random) -> dict:
    kind = rng.randrange(6)
    good = {"model": "smol", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    if kind == 0:
        return {"content": b'{"model": "smol", "messages": [', "headers": {"content-type": "application/json"}}
    if kind == 1:
        return {"json": {**good, "messages": [{"role": "tool", "content": "x"}]}}  # a tool message without its id
    if kind == 2:
        return {"json": {**good, "messages": "not a list"}}
    if kind == 3:
        return {"content": json.dumps(good).encode(), "headers": {"content-type": "text/plain"}}
    if kind == 4:
        return {"json": {**good, "max_tokens": 4294967299}}
    return {"json": {**good, "colour": "blue"}}


async def client(url: str, deadline: float, invalid_share: float, seed: int, stats: dict) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        while time.monotonic() < deadline:
            if rng.random() < invalid_share:
                r = await http.post("/v1/chat/completions", **invalid_request(rng))
                stats["invalid_" + ("5xx" if r.status_code >= 500 else str(r.status_code))] += 1
                continue
            body = {"model": "smol", "stream": True, "max_tokens": rng.randint(16, 48), "temperature": 0.7,
                    "seed": rng.randrange(1 << 30),
                    "messages": [{"role": "user", "content": f"Write about {rng.choice(TOPICS)}."}]}
            started = time.perf_counter()
            done = False
            async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                status = r.status_code
                async for line in r.aiter_lines():
                    if line == "data: [DONE]":
                        done = True
            stats["latency"].append(time.perf_counter() - started)
            if status >= 500:
                stats["valid_5xx"] += 1
            elif status == 200:
                stats["valid_ok"] += 1
                stats["cut_streams"] += 0 if done else 1
            else:
                stats[f"valid_{status}"] += 1


async def soak(url: str, minutes: float, clients: int, invalid: float) -> dict:
    from collections import defaultdict

    stats: dict = defaultdict(int)
    stats["latency"] = []
    deadline = time.monotonic() + minutes * 60
    await asyncio.gather(*[client(url, deadline, invalid, i, stats) for i in range(clients)])
    return stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--invalid", type=float, default=0.1)
    ap.add_argument("--gguf")
    args = ap.parse_args()
    from gallama_core.testing import smollm2_gguf, start_server

    gguf = args.gguf or smollm2_gguf()
    server, url = start_server(["-id", f"model_id={gguf} model_name=smol n_parallel=4 max_seq_len=1024"],
                               log_path=Path(os.devnull))
    try:
        asyncio.run(soak(url, 0.25, 4, 0.0))  # warm-up, then the baseline memory
        before = processes(url, server.pid)
        started = time.monotonic()
        stats = asyncio.run(soak(url, args.minutes, args.clients, args.invalid))
        elapsed = time.monotonic() - started
        after = processes(url, server.pid)
        health = httpx.get(url + "/health").status_code
    finally:
        server.terminate()
        server.wait(60)
    latency = sorted(stats.pop("latency"))
    p99 = latency[min(len(latency) - 1, int(0.99 * len(latency)))] if latency else 0.0
    print(f"soak: {args.clients} streaming clients, {elapsed / 60:.1f} min, {100 * args.invalid:.0f}% invalid requests")
    print("outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(stats.items())))
    print(f"5xx: valid {stats.get('valid_5xx', 0)}, invalid {stats.get('invalid_5xx', 0)}; streams without [DONE]: "
          f"{stats.get('cut_streams', 0)}; /health at the end: {health}")
    if latency:
        print(f"valid request latency: p50 {statistics.median(latency):.2f} s, p99 {p99:.2f} s "
              f"({len(latency)} requests, {len(latency) / elapsed:.1f}/s)")
    for name in before:
        print(f"RSS {name}: {before[name]:.0f} MB -> {after.get(name, 0):.0f} MB "
              f"({after.get(name, 0) - before[name]:+.0f} MB)")
    return 1 if stats.get("valid_5xx") or stats.get("invalid_5xx") or stats.get("cut_streams") else 0


if __name__ == "__main__":
    sys.exit(main())
