"""Where does the engine thread lose time against the raw generator? (GPU machine; diagnosis, not a goal.)

    python benchmarks/probe_engine_thread.py --engine v3 --model DIR [--batches 1,8,32] [--repeat 3]

One model load; for each batch size, variants run interleaved, ``--repeat`` times each:

- ``raw``: ``generator.generate`` on the main thread (the reference of bench_exllama.py);
- ``raw-thread``: the same call on a worker thread while the main thread's asyncio loop waits for it (the
  cost of a second thread alone);
- ``gallama``: ``Backend.generate`` through the engine thread as shipped (results that pile up while the
  event loop is busy share one wake-up);
- ``per-step``: as shipped, but every generator step wakes the event loop (the earlier delivery);
- ``gallama@1ms`` / ``gallama@20ms``: as shipped under ``sys.setswitchinterval`` 1 ms / 20 ms (default 5 ms).

Prints tokens/s (best and median), ratio to raw, ms inside ``iterate()`` per step and wake-ups per step.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import bench_exllama as bench


def per_step_post(self, batch):  # the delivery before the outbox: one wake-up per step and loop
    with self.lock:
        self.items += batch
        self.scheduled = True
    try:
        self.loop.call_soon_threadsafe(self.drain)
    except RuntimeError:
        return "closed"
    return "woke"


async def run_variant(name: str, backend, engine: str, texts: list[str], new_tokens: int) -> dict:
    from gallama_core.models import engine_thread

    stats = {}
    if name == "raw":
        t = bench.raw_run(engine, backend, texts, new_tokens)
        return {"s": t, "tokens": len(texts) * new_tokens}
    if name == "raw-thread":
        t = await asyncio.to_thread(bench.raw_run, engine, backend, texts, new_tokens)
        return {"s": t, "tokens": len(texts) * new_tokens}
    eng = backend.engine
    eng.iterations = eng.results = eng.wakeups = 0
    eng.iterate_s = 0.0
    original_post, original_interval = engine_thread.Outbox.post, sys.getswitchinterval()
    if name == "per-step":
        engine_thread.Outbox.post = per_step_post
    if "@" in name:
        sys.setswitchinterval(float(name.split("@")[1].rstrip("ms")) / 1000)
    try:
        t, tokens = await bench.gallama_run(backend, texts, new_tokens)
    finally:
        engine_thread.Outbox.post = original_post
        sys.setswitchinterval(original_interval)
    steps = max(eng.iterations, 1)
    stats.update(s=t, tokens=tokens, ms_per_step=1000 * eng.iterate_s / steps, wakeups_per_step=eng.wakeups / steps,
                 wall_ms_per_step=1000 * t / steps)
    return stats


async def main_async(args) -> None:
    backend = bench.load(args.engine, args.model, args.cache_size, max(args.batches))
    backend.stop_on_eos = False
    bench.raw_run(args.engine, backend, bench.prompts(2), 16)
    await bench.gallama_run(backend, bench.prompts(2), 16)
    variants = args.variants.split(",")
    for b in args.batches:
        texts = bench.prompts(b)
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for _ in range(args.repeat):
            for v in variants:
                runs[v].append(await run_variant(v, backend, args.engine, texts, args.new_tokens))
        raw_best = max(r["tokens"] / r["s"] for r in runs["raw"]) if "raw" in runs else None
        print(f"\nbatch {b}: {args.new_tokens} new tokens each, {args.repeat} runs per variant")
        print(f"{'variant':14s} {'best tok/s':>10s} {'median':>8s} {'vs raw':>7s} {'iterate ms/step':>16s} "
              f"{'wall ms/step':>13s} {'wake-ups/step':>14s}")
        for v, rs in runs.items():
            tps = [r["tokens"] / r["s"] for r in rs]
            best = max(tps)
            extra = ""
            if "ms_per_step" in rs[0]:
                extra = (f"{statistics.median(r['ms_per_step'] for r in rs):16.2f} "
                         f"{statistics.median(r['wall_ms_per_step'] for r in rs):13.2f} "
                         f"{statistics.median(r['wakeups_per_step'] for r in rs):14.2f}")
            ratio = f"{best / raw_best:7.3f}" if raw_best else "      -"
            print(f"{v:14s} {best:10.1f} {statistics.median(tps):8.1f} {ratio} {extra}", flush=True)
    await backend.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=["v2", "v3"], required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache-size", type=int, default=32 * 1024)
    ap.add_argument("--variants", default="raw,raw-thread,gallama,per-step,gallama@1ms,gallama@20ms")
    args = ap.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    t0 = time.perf_counter()
    asyncio.run(main_async(args))
    print(f"\nprobe took {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
