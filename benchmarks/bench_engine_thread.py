"""The engine thread's own cost, without a GPU and without the GPU machines' CPU noise.

    python benchmarks/bench_engine_thread.py [--step-ms 8] [--batches 1,8,32] [--steps 100] [--repeat 5]

The ExLlama backends run the engine's synchronous generator in gallama's engine thread
(``gallama_core.models.engine_thread``) and stream each step's results to asyncio consumers. Here the generator is a
stand-in that does what ExLlama's ``iterate()`` does to the CPU: a fixed amount of Python work per step, which
takes ``--step-ms`` alone (ExLlamaV3 measured 7.6 / 8.2 / 12 ms per step at batch 1 / 8 / 32 on an H200 machine
with a 1.2B model), giving the GIL up for a moment every few microseconds as torch ops do; a step that has to
wait for the GIL takes longer. "raw" calls ``iterate()`` in a plain loop (what ``generator.generate`` does);
"gallama" runs B concurrent ``EngineLoop.stream`` consumers. The ratio is raw time / gallama time, median of
``--repeat`` back-to-back pairs.

``--worker`` compares instead B concurrent streams of the same stand-in in this process (``Backend.generate``)
with the same streams through an engine worker process (``RemoteBackend`` over the worker protocol): the cost of
the process boundary; and the worker against the plain loop (raw). Every side does the work calibrated in this
process. The stand-in is registered for the worker through a throw-away distribution (a dist-info with an entry
point in a temp folder on ``PYTHONPATH``); nothing is installed. ``--launcher ray`` puts the worker on a Ray
actor instead (gallama-ray; a local Ray head on loopback is started and stopped), and ``--no-direct`` gives the
stand-in no ``generate_into``, so the worker streams it with one task per job on its event loop (the path
before the engine thread wrote its steps itself).

``--http`` measures what ``bench_http_exllama.py`` measures on a GPU, with the stand-in: ``gallama run`` serving
it (front + worker), B streams through HTTP from 4 load-generator processes, against the plain loop, with the
engine's counters from ``/metrics`` (steps, time per step, mean batch, gallama's work between steps, busy share).
``--prefill-ms`` adds Python work for each new job's prompt, one job after another, as ExLlamaV3 runs one prefill
pass per job: the raw side's TTFT is then a burst's whole prefill, as on the GPU. ``--build-ms`` adds Python work per
request on the worker's event loop before its job reaches the engine thread (ExLlama tokenizes and builds the ``Job``
there), which competes with the engine thread for the GIL during a burst.
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
    __slots__ = ("steps", "done", "prefilled")

    def __init__(self, steps: int):
        self.steps, self.done, self.prefilled = steps, 0, False


class BusyGenerator:
    """``iterate()`` does a fixed amount of Python work per step (``step_s`` when it runs alone), giving the GIL
    up every ``release_every`` loop turns as torch ops do. Fixed work, not fixed time: a step that has to wait
    for the GIL takes longer, as an engine's does."""

    def __init__(self, step_s: float, release_every: int = 20, turns: int | None = None, prefill_s: float = 0.0):
        self.jobs: list[Job] = []
        self.step_s, self.release_every = step_s, release_every
        self.turns = turns or max(self._timed_turns(step_s) for _ in range(3))
        #: Python work for each new job's prompt, one job after another (ExLlamaV3 runs one prefill pass per job)
        self.prefill_turns = self.turns_for(prefill_s)

    def turns_for(self, seconds: float) -> int:
        """Loop turns that take ``seconds`` alone, at this generator's calibration."""
        return int(self.turns * seconds / self.step_s) if self.step_s else 0

    def _timed_turns(self, step_s: float) -> int:
        end, turns = time.perf_counter() + step_s, 0
        while time.perf_counter() < end:
            turns += 1
            if turns % self.release_every == 0:
                time.sleep(0)
        return turns

    def enqueue(self, job: Job) -> None:
        self.jobs.append(job)

    def cancel(self, job: Job) -> None:
        self.jobs.remove(job)

    def work(self, turns: int) -> None:
        for turn in range(1, turns + 1):
            time.perf_counter()  # the calibration's work per turn
            if turn % self.release_every == 0:
                time.sleep(0)  # releases the GIL, as each torch op does

    def iterate(self) -> list[dict]:
        for job in self.jobs:
            if not job.prefilled:
                self.work(self.prefill_turns)
                job.prefilled = True
        self.work(self.turns)
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
    gen.iterate()
    gen.first_step_s = time.perf_counter() - t0  # every job's first token: the raw side's TTFT
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
    gen = BusyGenerator(args.step_ms / 1000, prefill_s=args.prefill_ms / 1000)
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


PLUGIN = """
import os, sys
sys.path.insert(0, {bench_dir!r})
from bench_engine_thread import BusyGenerator, Job
from gallama_core import hookimpl
from gallama_core.models.backend import Backend
from gallama_core.models.engine_thread import EngineLoop
from gallama_core.models.settings import ModelSettings
from gallama_core.pipeline.chat_template import CHATML_TEMPLATE, ChatTemplate
from gallama_core.plugin_system.registrations import BackendSpec


class Busy(Backend):
    def __init__(self, settings):
        super().__init__("busy", settings.served_name, 1 << 16, ChatTemplate(CHATML_TEMPLATE))
        self.engine = EngineLoop(BusyGenerator(float(os.environ["BUSY_STEP_MS"]) / 1000,
                                               turns=int(os.environ["BUSY_TURNS"]),
                                               prefill_s=float(os.environ.get("BUSY_PREFILL_MS", 0)) / 1000), "busy")
        self.build_turns = self.engine.generator.turns_for(float(os.environ.get("BUSY_BUILD_MS", 0)) / 1000)

    async def generate(self, request):
        async for chunk in self.engine.stream(Job(request.max_tokens), 1, "busy"):
            yield chunk

    def generate_into(self, request, target, key):  # what the worker uses, as with the ExLlama backends
        self.engine.generator.work(self.build_turns)  # building the job on the worker's event loop (tokenizer, Job)
        return self.engine.start(Job(request.max_tokens), 1, "busy", target, key)

    def engine_stats(self):
        return self.engine.stats()


if os.environ.get("BUSY_DIRECT") == "0":
    Busy.generate_into = None


@hookimpl
def gallama_backends():
    return [BackendSpec(name="busy", settings_model=ModelSettings, load=lambda s, p: Busy(s))]
"""


def register_busy_backend(args) -> BusyGenerator:
    """Make the stand-in a ``busy`` backend for this process and the ones it starts (a throw-away dist-info with
    an entry point, on PYTHONPATH); returns a plain generator calibrated here (every side does that amount of
    work per step)."""
    import os
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="gallama-busy-"))
    (folder / "gallama_busy_plugin.py").write_text(PLUGIN.format(bench_dir=str(Path(__file__).resolve().parent)))
    info = folder / "gallama_busy-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gallama-busy\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[gallama]\nbusy = gallama_busy_plugin\n")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])
    plain = BusyGenerator(args.step_ms / 1000, prefill_s=args.prefill_ms / 1000)
    os.environ["BUSY_STEP_MS"] = str(args.step_ms)
    os.environ["BUSY_PREFILL_MS"] = str(args.prefill_ms)
    os.environ["BUSY_BUILD_MS"] = str(args.build_ms)
    os.environ["BUSY_TURNS"] = str(plain.turns)
    os.environ["BUSY_DIRECT"] = "0" if args.no_direct else "1"
    sys.path.insert(0, str(folder))
    return plain


def http_main(args) -> list[dict]:
    """``gallama run`` serving the stand-in, B streams through HTTP from 4 load-generator processes, against the
    plain loop; the engine's counters from /metrics, read once the clients' warm-up is done."""
    from bench_http_exllama import engine_delta, front_means, server_metrics
    from http_load import run_load

    from gallama_core.testing import start_server

    plain = register_busy_backend(args)
    proc, url = start_server(["-id", "model_id=busy model_name=bench backend=busy"])
    rows = []
    try:
        run_load(url, "bench", ["hello"], 4, 4, processes=2)  # the front's first-request work
        for b in args.batches:
            runs = []
            for _ in range(args.repeat):
                raw = raw_run(plain, b, args.steps)
                scraped = []
                r = run_load(url, "bench", ["hello"], b, args.steps, processes=min(4, b),
                             on_ready=lambda: scraped.append(server_metrics(url)))
                (before, engine_before), (after, engine_after) = scraped[0], server_metrics(url)
                e = engine_delta(engine_before, engine_after, r["wall_s"])
                server_ttft, preparation = front_means(before, after)
                runs.append({"ratio": r["tokens_per_s"] / (b * args.steps / raw), "ttft": r["ttft_p50_ms"],
                             "raw_ttft": 1000 * plain.first_step_s,
                             "server_ttft": server_ttft, "preparation": preparation, "engine_ttft": e["ttft_ms"],
                             "steps": e["steps"], "step_vs_raw": (raw / args.steps) / (e["step_ms"] / 1000),
                             "mean_batch": e["batch"], "delivery_ms": e["delivery_ms"], "busy": e["busy"],
                             "admissions": e["admissions"]})
            rows.append({"batch": b, **{k: statistics.median(run[k] for run in runs) for k in runs[0]}})
    finally:
        proc.terminate()
        proc.wait(30)
    return rows


async def worker_main(args) -> list[dict]:
    import os

    from gallama_core.models.backend import GenerationRequest
    from gallama_core.models.settings import ModelSettings
    from gallama_core.plugin_system.registrations import LoadProgress
    from gallama_core.workers.launcher import LocalProcessLauncher

    from bench_http_exllama import engine_delta

    plain = register_busy_backend(args)
    import gallama_busy_plugin

    settings = ModelSettings(model_id="busy", backend="busy")
    local = gallama_busy_plugin.Busy(settings)
    head = None
    if args.launcher == "ray":
        from bench_ray_chunks import start_head
        from gallama_ray.launcher import RayLauncher
        from gallama_ray.settings import RaySection

        head = start_head(dict(os.environ))
        env_vars = {k: os.environ[k] for k in ("PYTHONPATH", "BUSY_STEP_MS", "BUSY_TURNS", "BUSY_DIRECT",
                                             "BUSY_PREFILL_MS", "BUSY_BUILD_MS")}
        launcher = RayLauncher(head[0], RaySection(runtime_env={"env_vars": env_vars}), log_level="warning")
    else:
        launcher = LocalProcessLauncher(log_level="warning")
    worker = await launcher.launch(settings, LoadProgress())

    async def drive(backend, b: int) -> float:
        async def one() -> int:
            n = 0
            async for chunk in backend.generate(GenerationRequest(prompt="x", max_tokens=args.steps)):
                n += len(chunk.text)
            return n

        t0 = time.perf_counter()
        counts = await asyncio.gather(*(one() for _ in range(b)))
        assert sum(counts) == b * args.steps, counts
        return time.perf_counter() - t0

    remote = worker.backend

    async def engine_now() -> dict:
        await remote.ping()
        return remote.engine_stats()

    rows = []
    try:
        for b in args.batches:
            ratios, vs_raw, step_ratio, delivery = [], [], [], []
            for i in range(args.repeat):
                sides = (local, remote) if i % 2 == 0 else (remote, local)
                times = {}
                for side in sides:
                    before = await engine_now() if side is remote else None
                    times[id(side)] = await drive(side, b)
                    if side is remote:  # the worker's engine: time per step, and gallama's between steps
                        engine = engine_delta(before, await engine_now(), times[id(side)])
                raw = raw_run(plain, b, args.steps)
                ratios.append(times[id(local)] / times[id(remote)])
                vs_raw.append(raw / times[id(remote)])
                step_ratio.append(1000 * (raw / args.steps) / engine["step_ms"])
                delivery.append(engine["delivery_ms"])
            rows.append({"batch": b, "ratio": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                         "worker_vs_raw": statistics.median(vs_raw), "step_vs_raw": statistics.median(step_ratio),
                         "delivery_ms": statistics.median(delivery)})
    finally:
        await worker.stop()
        local.engine.close()
        if head is not None:
            import subprocess

            subprocess.run([head[1], "stop", "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step-ms", type=float, default=8.0)
    ap.add_argument("--prefill-ms", type=float, default=0.0,
                    help="Python work per new job's prompt, jobs one after another (ExLlamaV3: one pass per job)")
    ap.add_argument("--build-ms", type=float, default=0.0,
                    help="with --http/--worker: Python work per request on the worker's event loop before the job "
                         "reaches the engine thread (ExLlama: tokenizing, building the Job)")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--worker", action="store_true", help="in process vs through an engine worker process")
    ap.add_argument("--launcher", choices=["local", "ray"], default="local", help="with --worker: where it runs")
    ap.add_argument("--no-direct", action="store_true", help="with --worker: no generate_into (one task per job)")
    ap.add_argument("--http", action="store_true", help="gallama run (front + worker) through HTTP vs the plain loop, "
                    "as bench_http_exllama.py measures ExLlamaV3 on a GPU")
    args = ap.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.http:
        rows = http_main(args)
        print(f"gallama run through HTTP (4 load-generator processes) vs a plain loop: {args.step_ms:g} ms per step, "
              f"{args.prefill_ms:g} ms per new job's prompt, {args.build_ms:g} ms per request on the worker's loop, "
              f"{args.steps} tokens per stream, median of {args.repeat} runs, Python {sys.version.split()[0]}")
        print("| streams | HTTP/raw | TTFT p50 ms (raw's) | server's TTFT mean: front's preparation / engine's TTFT ms | "
              "engine steps | its steps: raw's ms / its ms | mean batch | gallama between steps | busy | admitted in |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['batch']} | {r['ratio']:.3f} | {r['ttft']:.0f} ({r['raw_ttft']:.0f}) | {r['server_ttft']:.1f}: "
                  f"{r['preparation']:.1f} / {r['engine_ttft']:.1f} | {r['steps']:.0f} | {r['step_vs_raw']:.3f} | "
                  f"{r['mean_batch']:.1f} | {r['delivery_ms']:.3f} ms | {r['busy']:.3f} | {r['admissions']:.0f} |")
        return 0
    worker = args.worker
    rows = asyncio.run(worker_main(args) if worker else main_async(args))
    what = (f"engine worker ({args.launcher}, {'one task per job' if args.no_direct else 'engine thread writes'}) "
            "vs in process") if worker else "engine thread vs a plain iterate() loop"
    print(f"{what}: {args.step_ms:g} ms per step, {args.steps} steps, median of {args.repeat} pairs, "
          f"Python {sys.version.split()[0]}")
    print("| batch | " + ("worker/in-process | range | worker/raw | worker's steps: raw's ms / its ms | "
                          "gallama between steps |" if worker else
                         "gallama/raw | range | gallama overhead per step | wake-ups per step |"))
    print("|---:|---:|---:|---:|---:|" + ("---:|" if worker else ""))
    for r in rows:
        extra = f" {r['worker_vs_raw']:.3f} | {r['step_vs_raw']:.3f} | {r['delivery_ms']:.3f} ms |" if worker else \
            f" {r['overhead_ms_per_step']:.3f} ms | {r['wakeups_per_step']:.2f} |"
        print(f"| {r['batch']} | {r['ratio']:.3f} | {r['min']:.3f}-{r['max']:.3f} |{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
