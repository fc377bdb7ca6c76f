"""The engine thread's own cost, without a GPU and without the GPU machines' CPU noise.

    python benchmarks/bench_engine_thread.py [--step-ms 8] [--batches 1,8,32] [--steps 100] [--repeat 5]

The ExLlama backends run the engine's synchronous generator in gallama's engine thread
(``gallama_core.models.engine_thread``) and stream each step's results to asyncio consumers. Here the generator is a
stand-in that does what ExLlama's ``iterate()`` does to the CPU: it holds the GIL for ``--step-ms`` per step
(ExLlamaV3 measured 7.6 / 8.2 / 12 ms per step at batch 1 / 8 / 32 on an H200 machine with a 1.2B model),
giving it up for a moment every few microseconds as torch ops do. "raw" calls ``iterate()`` in a plain loop
(what ``generator.generate`` does); "gallama" runs B concurrent ``EngineLoop.stream`` consumers. The ratio is
raw time / gallama time, median of ``--repeat`` back-to-back pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gallama_core.models.engine_thread import EngineLoop  # noqa: E402


class Job:
    __slots__ = ("steps", "done")

    def __init__(self, steps: int):
        self.steps, self.done = steps, 0


class BusyGenerator:
    """``iterate()`` holds the GIL for ``step_s``, releasing it every ``release_every`` loop turns."""

    def __init__(self, step_s: float, release_every: int = 20):
        self.jobs: list[Job] = []
        self.step_s, self.release_every = step_s, release_every

    def enqueue(self, job: Job) -> None:
        self.jobs.append(job)

    def cancel(self, job: Job) -> None:
        self.jobs.remove(job)

    def iterate(self) -> list[dict]:
        end = time.perf_counter() + self.step_s
        turns = 0
        while time.perf_counter() < end:
            turns += 1
            if turns % self.release_every == 0:
                time.sleep(0)  # releases the GIL, as each torch op does
        out = []
        for job in list(self.jobs):
            job.done += 1
            eos = job.done >= job.steps
            out.append({"job": job, "stage": "streaming", "text": "x", "eos": eos,
                        "eos_reason": "max_new_tokens" if eos else None, "new_tokens": job.done})
            if eos:
                self.jobs.remove(job)
        return out


def raw_run(gen: BusyGenerator, batch: int, steps: int) -> float:
    for _ in range(batch):
        gen.enqueue(Job(steps))
    t0 = time.perf_counter()
    while gen.jobs:
        gen.iterate()
    return time.perf_counter() - t0


async def gallama_run(engine: EngineLoop, batch: int, steps: int) -> float:
    async def one() -> int:
        n = 0
        async for chunk in engine.stream(Job(steps), 1, "bench"):
            n += len(chunk.text)
        return n

    t0 = time.perf_counter()
    counts = await asyncio.gather(*(one() for _ in range(batch)))
    elapsed = time.perf_counter() - t0
    assert sum(counts) == batch * steps, counts
    return elapsed


async def main_async(args) -> list[dict]:
    gen = BusyGenerator(args.step_ms / 1000)
    engine = EngineLoop(gen, "bench")
    rows = []
    try:
        for b in args.batches:
            ratios, raw_t, gal_t = [], [], []
            engine.iterations = engine.wakeups = 0
            for i in range(args.repeat):
                if i % 2 == 0:
                    r = raw_run(gen, b, args.steps)
                    g = await gallama_run(engine, b, args.steps)
                else:
                    g = await gallama_run(engine, b, args.steps)
                    r = raw_run(gen, b, args.steps)
                raw_t.append(r)
                gal_t.append(g)
                ratios.append(r / g)
            row = {"batch": b, "ratio": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                   "overhead_ms_per_step": 1000 * (statistics.median(gal_t) - statistics.median(raw_t)) / args.steps,
                   "wakeups_per_step": engine.wakeups / max(engine.iterations, 1)}
            rows.append(row)
    finally:
        engine.close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step-ms", type=float, default=8.0)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    rows = asyncio.run(main_async(args))
    print(f"engine thread vs a plain iterate() loop: {args.step_ms:g} ms per step, {args.steps} steps, "
          f"median of {args.repeat} pairs, Python {sys.version.split()[0]}")
    print("| batch | gallama/raw | range | gallama overhead per step | wake-ups per step |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['batch']} | {r['ratio']:.3f} | {r['min']:.3f}-{r['max']:.3f} | "
              f"{r['overhead_ms_per_step']:.3f} ms | {r['wakeups_per_step']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
