"""What a token chunk costs through a Ray actor against a local engine worker (the figures in docs/scaling.md).

Both runs host the same stand-in engine (``standin_engine.py``: no model, one token per job per step), so what
is measured is the path between engine and front, not decoding:

1. **Transport** (this process plays the front: it launches the worker with the launcher ``gallama run`` would
   use, the core's local one or gallama-ray's, and streams from its ``RemoteBackend``):
   - *max chunks/s*: one stream, an engine with no step time (the transport is the only limit; when the front
     falls behind, the worker merges tokens into fewer chunks, so tokens/s and chunks/s differ);
   - *front CPU per chunk*: streams at a fixed pace (``--step-ms``), the front's CPU time (its event loop and
     the Ray driver's threads) divided by the chunks it received; this is what bounds the streams a front serves.
2. **HTTP** (``--http``): ``gallama run`` with and without ``--ray-address``, streamed chats from separate
   client processes (``http_load.py``) at several concurrency levels, printing the ratio ray/local.

    python benchmarks/bench_ray_chunks.py                 # starts a local Ray head on loopback, then stops it
    python benchmarks/bench_ray_chunks.py --http --concurrency 8 32
    python benchmarks/bench_ray_chunks.py --address 10.0.0.5:6379   # a worker on a real cluster's node

Needs gallama-ray (and Ray) installed in this interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def standin_path() -> str:
    """A folder holding the stand-in engine and a dist-info registering it as the backend ``standin``."""
    folder = Path(tempfile.mkdtemp(prefix="gallama-standin-"))
    shutil.copy(HERE / "standin_engine.py", folder / "standin_engine.py")
    info = folder / "gallama_standin-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gallama-standin\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[gallama]\nstandin = standin_engine\n")
    return str(folder)


def start_head(env: dict[str, str]) -> tuple[str, str]:
    from gallama_core.testing import free_port

    port, temp = free_port(), tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray = str(Path(sys.executable).parent / "ray")
    subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=8",
                    "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                   check=True, env=env, stdout=subprocess.DEVNULL, timeout=120)
    return f"127.0.0.1:{port}", ray


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _items(worker) -> int:
    """Ray only: the stream items the front has read (each carries the chunks of one or more engine steps)."""
    return getattr(getattr(worker, "channel", None), "items_received", 0)


async def _stream(backend, tokens: int) -> int:
    from gallama_core.models.backend import GenerationRequest

    chunks = 0
    async for _ in backend.generate(GenerationRequest(prompt="x", max_tokens=tokens)):
        chunks += 1
    return chunks


async def transport(kind: str, address: str | None, folder: str, step_ms: float, streams: int,
                    tokens: int) -> dict[str, float]:
    from gallama_core.models.settings import ModelSettings
    from gallama_core.plugin_system.registrations import LoadProgress

    os.environ["STANDIN_GIL_MS"] = "0"
    env_vars = {"PYTHONPATH": folder, "STANDIN_GIL_MS": "0"}
    if kind == "local":
        from gallama_core.workers.launcher import LocalProcessLauncher

        launcher = LocalProcessLauncher(log_level="warning")
    else:
        from gallama_ray.launcher import RayLauncher
        from gallama_ray.settings import RaySection

        launcher = RayLauncher(address, RaySection(), log_level="warning")  # its runtime_env is set per run
    results = {}
    for label, step, n, count in (("max", 0.0, 1, tokens * 4), ("paced", step_ms, streams, tokens)):
        os.environ["STANDIN_STEP_MS"] = env_vars["STANDIN_STEP_MS"] = str(step)
        if kind == "ray":
            launcher.section = launcher.section.model_copy(update={"runtime_env": {"env_vars": dict(env_vars)}})
        settings = ModelSettings(model_id="standin", model_name=f"standin-{label}", backend="standin")
        worker = await launcher.launch(settings, LoadProgress())
        try:
            await _stream(worker.backend, 8)  # warm
            cpu, start = _cpu(), time.perf_counter()
            items = _items(worker)
            chunks = sum(await asyncio.gather(*(_stream(worker.backend, count) for _ in range(n))))
            wall, cpu = time.perf_counter() - start, _cpu() - cpu
        finally:
            await worker.stop()
        items = _items(worker) - items
        if label == "max":
            results.update(max_tokens_s=n * count / wall, max_chunks_s=chunks / wall, max_us_per_chunk=wall / chunks * 1e6)
        else:
            results.update(paced_chunks=chunks, paced_chunks_s=chunks / wall, cpu_us_per_chunk=cpu / chunks * 1e6,
                           paced_items_s=items / wall, cpu_us_per_item=cpu / items * 1e6 if items else 0.0)
    return results


def http(address: str, folder: str, concurrency: list[int], tokens: int, step_ms: float) -> None:
    from http_load import run_load

    from gallama_core.testing import start_server

    home = Path(tempfile.mkdtemp(prefix="gallama-home-"))
    (home / "gallama.yaml").write_text(
        "ray:\n  runtime_env: {env_vars: {PYTHONPATH: %r, STANDIN_STEP_MS: %r, STANDIN_GIL_MS: '0'}}\n"
        % (folder, str(step_ms)))
    env = {**os.environ, "PYTHONPATH": folder, "GALLAMA_HOME_PATH": str(home), "STANDIN_STEP_MS": str(step_ms),
           "STANDIN_GIL_MS": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    model = ["-id", "model_id=standin backend=standin model_name=standin"]
    rows = {}
    for kind, extra in (("local", []), ("ray", ["--ray-address", address])):
        process, url = start_server(model + extra, env=env, timeout=240)
        try:
            for c in concurrency:
                run_load(url, "standin", ["hi"], concurrency=c, max_tokens=16, requests=c, processes=min(4, c))
                rows[kind, c] = run_load(url, "standin", ["hi"], concurrency=c, max_tokens=tokens, requests=2 * c,
                                         processes=min(4, c))
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(f"\nHTTP, streamed chat, {tokens} tokens per request, engine step {step_ms:g} ms "
          f"({1000 / step_ms:.0f} tok/s per stream at most)")
    print(f"{'streams':>8} {'local tok/s':>12} {'ray tok/s':>10} {'ratio':>6} {'TTFT p50 local':>15} {'ray':>8}")
    for c in concurrency:
        local, ray = rows["local", c], rows["ray", c]
        print(f"{c:>8} {local['tokens_per_s']:>12.0f} {ray['tokens_per_s']:>10.0f} "
              f"{ray['tokens_per_s'] / local['tokens_per_s']:>6.3f} {local['ttft_p50_ms']:>12.1f} ms "
              f"{ray['ttft_p50_ms']:>5.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", help="an existing Ray cluster (default: start a local head, stop it after)")
    parser.add_argument("--step-ms", type=float, default=2.0, help="engine step for the paced run (default 2 ms)")
    parser.add_argument("--streams", type=int, default=8, help="concurrent streams of the paced run")
    parser.add_argument("--tokens", type=int, default=500, help="tokens per stream")
    parser.add_argument("--http", action="store_true", help="also measure through gallama run's HTTP API")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--http-step-ms", type=float, default=16.0, help="engine step of the HTTP runs")
    parser.add_argument("--http-tokens", type=int, default=128)
    args = parser.parse_args()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if args.address is None:  # our own loopback head: no token auth, whatever ~/.ray holds
        os.environ["RAY_AUTH_MODE"] = "disabled"
    folder = standin_path()
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [folder, os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, folder)
    address, ray = args.address, None
    if address is None:
        address, ray = start_head(dict(os.environ))
    try:
        rows = {kind: asyncio.run(transport(kind, address, folder, args.step_ms, args.streams, args.tokens))
                for kind in ("local", "ray")}
        print(f"Transport, engine to front ({os.cpu_count()} CPUs here; Ray at {address})")
        print(f"{'':>7} {'max tok/s':>10} {'max chunks/s':>13} {'us/chunk':>9} | {args.streams} streams at "
              f"{args.step_ms:g} ms: {'chunks/s':>9} {'front CPU us/chunk':>19}")
        for kind, r in rows.items():
            print(f"{kind:>7} {r['max_tokens_s']:>10.0f} {r['max_chunks_s']:>13.0f} {r['max_us_per_chunk']:>9.0f} | "
                  f"{'':>24}{r['paced_chunks_s']:>9.0f} {r['cpu_us_per_chunk']:>19.1f}")
        local, remote = rows["local"], rows["ray"]
        print(f"ray, paced: {remote['paced_items_s']:.0f} stream items/s "
              f"({remote['paced_chunks_s'] / max(remote['paced_items_s'], 1):.1f} chunks per item), front CPU "
              f"{remote['cpu_us_per_item']:.0f} us per item")
        print(f"ray/local: max chunks/s {remote['max_chunks_s'] / local['max_chunks_s']:.3f}, front CPU per chunk "
              f"{remote['cpu_us_per_chunk'] / local['cpu_us_per_chunk']:.2f}x")
        if args.http:
            http(address, folder, args.concurrency, args.http_tokens, args.http_step_ms)
    finally:
        import ray as ray_module

        ray_module.shutdown()
        if ray is not None:
            subprocess.run([ray, "stop", "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
