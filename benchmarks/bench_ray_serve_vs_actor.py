"""Ray Serve streaming handles against plain actor streaming generators, for what gallama-ray does with them.

gallama's front needs two things from Ray per model instance: a call that delivers a protocol message to the
instance, and one long stream of packed messages back (see gallama_ray/channel.py). This measures both with
the two APIs Ray offers, on the same cluster, with items the size of a chunk message:

- *stream*: items/s of one long stream, and the driver's (the front's) CPU per item;
- *call*: round-trip latency of one small call (p50), as each request's ``generate`` message takes.

    /path/to/venv-with-ray-serve/bin/python benchmarks/bench_ray_serve_vs_actor.py [--items 5000] [--size 200]

Needs ``ray[serve]`` (not a dependency of gallama-ray, which uses actors only); the figures are in
docs/scaling.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


class Source:
    """What either API hosts: a stream of ``n`` items of ``size`` bytes, and a no-op call."""

    async def stream(self, n: int, size: int):
        payload = b"x" * size
        for _ in range(n):
            yield payload

    async def call(self, data: bytes) -> int:
        return len(data)


async def _measure(stream, call, n: int, calls: int) -> dict[str, float]:
    cpu, start = _cpu(), time.perf_counter()
    count = 0
    async for item in stream(n):
        count += 1
    wall, cpu = time.perf_counter() - start, _cpu() - cpu
    latencies = []
    for _ in range(calls):
        t = time.perf_counter()
        await call()
        latencies.append((time.perf_counter() - t) * 1e6)
    return {"items_s": count / wall, "cpu_us": cpu / count * 1e6, "call_us": statistics.median(latencies)}


async def actor_run(n: int, size: int, calls: int, backpressure: int = -1) -> dict[str, float]:
    import ray

    actor = ray.remote(Source).options(max_concurrency=1000).remote()
    await actor.call.remote(b"warm")

    async def stream(count):
        method = actor.stream.options(_generator_backpressure_num_objects=backpressure)
        async for ref in method.remote(count, size):
            yield await ref

    result = await _measure(stream, lambda: actor.call.remote(b"m" * 64), n, calls)
    ray.kill(actor)
    return result


async def serve_run(n: int, size: int, calls: int) -> dict[str, float]:
    from ray import serve

    handle = serve.run(serve.deployment(Source, max_ongoing_requests=1000).bind(), name="bench", route_prefix=None)
    await handle.call.remote(b"warm")

    async def stream(count):
        async for item in handle.options(stream=True).stream.remote(count, size):
            yield item

    result = await _measure(stream, lambda: handle.call.remote(b"m" * 64), n, calls)
    serve.delete("bench")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", help="an existing Ray cluster (default: a local one started here)")
    parser.add_argument("--items", type=int, default=5000, help="items of the stream")
    parser.add_argument("--size", type=int, default=200, help="bytes per item (a chunk message of a few tokens)")
    parser.add_argument("--calls", type=int, default=300, help="small calls for the latency figure")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.address is None:  # a throw-away local cluster: no token auth (and no token file left in ~/.ray)
        os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray

    ray.init(address=args.address, num_cpus=None if args.address else 4, include_dashboard=False,
             logging_level="ERROR", log_to_driver=False)
    rows = {"actor": asyncio.run(actor_run(args.items, args.size, args.calls)),
            "actor, back-pressured (4)": asyncio.run(actor_run(args.items, args.size, args.calls, 4)),
            "serve": asyncio.run(serve_run(args.items, args.size, args.calls))}
    print(f"Ray {ray.__version__}, {os.cpu_count()} CPUs, {args.items} items of {args.size} B")
    print(f"{'':>26} {'stream items/s':>15} {'driver CPU us/item':>19} {'call p50 us':>12}")
    for kind, r in rows.items():
        print(f"{kind:>26} {r['items_s']:>15.0f} {r['cpu_us']:>19.1f} {r['call_us']:>12.0f}")
    a, s = rows["actor"], rows["serve"]
    print(f"serve/actor: items/s {s['items_s'] / a['items_s']:.2f}, CPU per item {s['cpu_us'] / a['cpu_us']:.2f}x, "
          f"call latency {s['call_us'] / a['call_us']:.2f}x")
    ray.shutdown()


if __name__ == "__main__":
    main()
