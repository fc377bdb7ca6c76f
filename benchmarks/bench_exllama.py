"""gallama's ExLlama backends against their raw generators, on one load of one model (GPU machine only).

    python benchmarks/bench_exllama.py --engine v2 --model DIR [--batches 1,8,32] [--new-tokens 128]
    python benchmarks/bench_exllama.py --engine v3 --model DIR --json out.json

For each batch size B: B distinct prompts, greedy, exactly ``--new-tokens`` new tokens each (EOS ignored on
both sides). "raw" is the engine's own ``generator.generate(prompt=[...])`` (ExLlamaV2DynamicGenerator /
ExLlamaV3 Generator); "gallama" is ``Backend.generate`` for B concurrent requests on the asyncio loop
(engine thread, per-token delivery, chunking), i.e. everything the server adds below HTTP. Aggregate
tokens/s = B x new tokens / wall time.

The GPU machines' CPUs are shared and both engines are CPU-bound at small batches, so one run's speed drifts
by 10-30% from the next. The bench therefore runs ``--repeat`` back-to-back pairs (raw then gallama, then
gallama then raw, ...) and reports the median of the per-pair ratios with its interquartile range, beside
the noise floor: the median change between one raw run and the next (raw against itself).

Also: decode tokens/s at batch 1 against the memory-bandwidth limit = measured device copy bandwidth /
bytes of weights read per token (every weight once per token).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

WORDS = ("river mountain quiet orange engine window silver garden letter winter market thunder paper candle "
         "forest bridge music yellow ocean stone clock whisper castle harbor meadow lantern").split()


def prompts(n: int, words: int = 60) -> list[str]:
    out = []
    for i in range(n):
        body = " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(words))
        out.append(f"<|im_start|>user\nStory {i}: {body}<|im_end|>\n<|im_start|>assistant\n")
    return out


def copy_bandwidth_gbs() -> float:
    import torch

    n = 1 << 30  # 1 GiB
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    a.random_(0, 255)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        start.record()
        b.copy_(a)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    del a, b
    return 2 * n / times[len(times) // 2] / 1e9  # bytes read + written


def weight_bytes(model_dir: str, dtype_bytes: int = 2) -> int:
    """Bytes of weights read per decoded token (safetensors sizes; embeddings read one row, so excluded)."""
    from safetensors import safe_open

    total = 0
    for f in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            for key in st.keys():
                if "embed_tokens" in key:
                    continue
                shape = st.get_slice(key).get_shape()
                n = 1
                for d in shape:
                    n *= d
                total += n * dtype_bytes
    return total


def load(engine: str, model_dir: str, cache_size: int, max_batch: int):
    from gallama_core.plugin_system.registrations import LoadProgress

    if engine == "v2":
        from gallama_exllama.backend import load_exllama
        from gallama_exllama.settings import ExLlamaSettings

        s = ExLlamaSettings(model_id=model_dir, model_name="bench", max_seq_len=2048, cache_size=cache_size,
                            cache_quant="FP16", max_batch_size=max_batch)
        return load_exllama(s, LoadProgress())
    from gallama_exllamav3.backend import load_exllamav3
    from gallama_exllamav3.settings import ExLlamaV3Settings

    s = ExLlamaV3Settings(model_id=model_dir, model_name="bench", max_seq_len=2048, cache_size=cache_size,
                          cache_quant="FP16", max_batch_size=max_batch)
    return load_exllamav3(s, LoadProgress())


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    if len(values) == 1:
        return values[0]
    pos = q * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def print_table(result: dict) -> None:
    """The markdown table of docs/performance.md (also used by scripts/gpu_check.sh on the JSON)."""
    print("| batch | raw tok/s | gallama tok/s | gallama/raw (median of pairs) | IQR | raw run-to-run | pairs |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["rows"]:
        noise = f"{100 * r['raw_run_to_run']:.1f}%" if r.get("raw_run_to_run") is not None else "-"
        print(f"| {r['batch']} | {r['raw_tps']:.1f} | {r['gallama_tps']:.1f} | {r['ratio']:.3f} | "
              f"{r['ratio_p25']:.3f}-{r['ratio_p75']:.3f} | {noise} | {r['pairs']} |")


def raw_run(engine: str, backend, texts: list[str], new_tokens: int) -> float:
    t0 = time.perf_counter()
    if engine == "v2":
        from exllamav2.generator import ExLlamaV2Sampler

        settings = ExLlamaV2Sampler.Settings.greedy()
        backend.generator.generate(prompt=texts, max_new_tokens=new_tokens, gen_settings=settings, stop_conditions=[],
                                   add_bos=backend.add_bos, encode_special_tokens=True, completion_only=True)
    else:
        from exllamav3 import ComboSampler

        backend.generator.generate(prompt=texts, max_new_tokens=new_tokens, sampler=ComboSampler(temperature=0.0),
                                   stop_conditions=[], add_bos=backend.add_bos, encode_special_tokens=True,
                                   completion_only=True)
    return time.perf_counter() - t0


async def gallama_run(backend, texts: list[str], new_tokens: int) -> tuple[float, int]:
    from gallama_core.models.backend import GenerationRequest, SamplingParams

    async def one(text: str) -> int:
        n = 0
        async for chunk in backend.generate(GenerationRequest(prompt=text, max_tokens=new_tokens,
                                                              sampling=SamplingParams(temperature=0.0))):
            if chunk.completion_tokens is not None:
                n = chunk.completion_tokens
        return n

    t0 = time.perf_counter()
    counts = await asyncio.gather(*(one(t) for t in texts))
    return time.perf_counter() - t0, sum(counts)


async def bench(args) -> dict:
    import torch

    backend = load(args.engine, args.model, args.cache_size, max(args.batches))
    backend.stop_on_eos = False
    info = backend.info()
    print(f"loaded {args.engine}: {info}", flush=True)
    # warm-up both paths (kernels, tuning, allocator)
    raw_run(args.engine, backend, prompts(2), 16)
    await gallama_run(backend, prompts(2), 16)
    rows = []
    for b in args.batches:
        texts = prompts(b)
        raw_tps, gal_tps, gal_tokens = [], [], 0
        steps = results = 0
        for i in range(args.repeat):
            for side in (("raw", "gallama") if i % 2 == 0 else ("gallama", "raw")):
                if side == "raw":
                    raw_tps.append(b * args.new_tokens / raw_run(args.engine, backend, texts, args.new_tokens))
                    continue
                backend.engine.iterations = backend.engine.results = 0
                t, gal_tokens = await gallama_run(backend, texts, args.new_tokens)
                gal_tps.append(gal_tokens / t)
                steps += backend.engine.iterations
                results += backend.engine.results
        expected = b * args.new_tokens
        ratios = sorted(g / r for g, r in zip(gal_tps, raw_tps))
        aa = [abs(raw_tps[i + 1] / raw_tps[i] - 1) for i in range(len(raw_tps) - 1)]
        row = {"batch": b, "raw_tps": statistics.median(raw_tps), "gallama_tps": statistics.median(gal_tps),
               "ratio": statistics.median(ratios), "ratio_p25": quantile(ratios, 0.25),
               "ratio_p75": quantile(ratios, 0.75), "raw_run_to_run": statistics.median(aa) if aa else None,
               "pairs": len(ratios), "raw_runs_tps": raw_tps, "gallama_runs_tps": gal_tps,
               "gallama_tokens": gal_tokens, "expected_tokens": expected,
               "gallama_jobs_per_step": results / max(steps, 1)}
        rows.append(row)
        noise = f"{100 * row['raw_run_to_run']:.1f}%" if aa else "-"
        print(f"  batch {b:3d}: raw {row['raw_tps']:8.1f} tok/s  gallama {row['gallama_tps']:8.1f} tok/s  "
              f"ratio {row['ratio']:.3f} [{row['ratio_p25']:.3f}-{row['ratio_p75']:.3f}]  raw run-to-run {noise}  "
              f"({gal_tokens}/{expected} tokens, {row['gallama_jobs_per_step']:.1f} jobs per generator step)",
              flush=True)
    bw = copy_bandwidth_gbs()
    wb = weight_bytes(args.model)
    limit = bw * 1e9 / wb
    b1 = next((r for r in rows if r["batch"] == 1), None)
    result = {"engine": args.engine, "model": Path(args.model).name, "new_tokens": args.new_tokens,
              "device": torch.cuda.get_device_name(), "info": {k: str(v) for k, v in info.items()}, "rows": rows,
              "copy_bandwidth_gbs": bw, "weight_bytes": wb, "bandwidth_limit_tps": limit,
              "batch1_pct_of_limit": (100 * b1["gallama_tps"] / limit) if b1 else None,
              "batch1_raw_pct_of_limit": (100 * b1["raw_tps"] / limit) if b1 else None}
    name = {"v2": "exllama (ExLlamaV2)", "v3": "exllamav3 (ExLlamaV3)"}[args.engine]
    print(f"\n{name} on {result['device']}, {result['model']}, {args.new_tokens} new tokens/request, greedy, FP16 cache")
    print_table(result)
    print(f"copy bandwidth {bw:.0f} GB/s, weights {wb / 1e9:.2f} GB/token -> limit {limit:.0f} tok/s at batch 1; "
          f"gallama batch 1 = {result['batch1_pct_of_limit']:.1f}% of it (raw {result['batch1_raw_pct_of_limit']:.1f}%)")
    if args.profile:
        await profile(backend, args)
    await backend.close()
    return result


async def profile(backend, args) -> None:
    """cProfile of the engine thread + event loop at batch 8: where gallama's own time goes."""
    import cProfile
    import pstats
    import threading

    prof = cProfile.Profile()
    threading.setprofile(lambda *a: None)
    prof.enable()
    await gallama_run(backend, prompts(8), args.new_tokens)
    prof.disable()
    stats = pstats.Stats(prof).sort_stats("tottime")
    print("\nprofile (event-loop thread, batch 8), top 15 by own time:")
    stats.print_stats(15)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=["v2", "v3"], required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=9, help="raw/gallama pairs per batch size")
    ap.add_argument("--cache-size", type=int, default=32 * 1024)
    ap.add_argument("--json")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--switch-interval", type=float, help="sys.setswitchinterval for this run (GIL experiment)")
    args = ap.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
        print(f"GIL switch interval {sys.getswitchinterval()} s")
    result = asyncio.run(bench(args))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
