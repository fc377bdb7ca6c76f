"""The front's own CPU time per request, with a stand-in engine (no model, any machine).

    python benchmarks/bench_front_request.py [--requests 300] [--max-tokens 1] [--rounds 3]

``gallama run`` serves the stand-in engine of ``standin_engine.py`` (one token per job every 2 ms) in its engine
worker; a separate client process sends streamed chat requests one after another, and the front's CPU time
(user + system, from ``/proc``) is divided by the number of requests. This is the serial cost of admitting a
request: HTTP, validation, prompt rendering, hooks, the worker round trip and SSE. In a burst of B requests the
last one waits for the B - 1 before it (the TTFT through HTTP at 64 streams in docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

BODY = {"model": "standin", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "system", "content": "You are helpful."},
                     {"role": "user", "content": "Story: " + " ".join(["river mountain quiet orange engine"] * 12)}]}


def client(url: str, requests: int, max_tokens: int, pid: int, out) -> None:
    import httpx

    from gallama_core.testing import cpu_seconds

    body = {**BODY, "max_tokens": max_tokens}

    async def main() -> tuple[float, float]:
        async with httpx.AsyncClient(timeout=60) as http:
            async def one():
                async with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
                    async for _ in r.aiter_lines():
                        pass

            for _ in range(20):  # warm-up
                await one()
            cpu, wall = cpu_seconds(pid), time.perf_counter()
            for _ in range(requests):
                await one()
            return (cpu_seconds(pid) - cpu) / requests, (time.perf_counter() - wall) / requests

    out.put(asyncio.run(main()))


def main() -> int:
    import multiprocessing as mp

    from bench_ray_chunks import standin_path
    from gallama_core.testing import start_server

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--max-tokens", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    env = {"PYTHONPATH": os.pathsep.join([standin_path(), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "STANDIN_STEP_MS": "2", "STANDIN_GIL_MS": "0"}
    proc, url = start_server(["-id", "model_id=standin backend=standin model_name=standin max_queue=1000"], env=env)
    try:
        rows = []
        for _ in range(args.rounds):
            queue = mp.get_context("spawn").Queue()
            p = mp.get_context("spawn").Process(target=client, args=(url, args.requests, args.max_tokens, proc.pid,
                                                                     queue))
            p.start()
            rows.append(queue.get(timeout=600))
            p.join()
    finally:
        proc.terminate()
        proc.wait(30)
    cpu = statistics.median(r[0] for r in rows)
    wall = statistics.median(r[1] for r in rows)
    print(f"front CPU per streamed request ({args.max_tokens} token(s)): {1000 * cpu:.2f} ms "
          f"(median of {args.rounds} rounds of {args.requests}; wall per request {1000 * wall:.2f} ms), "
          f"Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
