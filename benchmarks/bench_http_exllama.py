"""gallama through HTTP (front + engine worker) against the raw batched ExLlama generator (GPU machine only).

    python benchmarks/bench_http_exllama.py --engine v3 --model DIR [--streams 1,8,32,64] [--new-tokens 256]
        [--repeat 3] [--level-seconds 0] [--clients 4] [--client aiohttp|httpx] [--json out.json]

- **raw**: a separate process loads the model with the plugin's own loader and times
  ``generator.generate(prompt=[B prompts], max_new_tokens=N)`` (greedy, EOS ignored): the engine's best batched
  throughput at batch B, with no server at all.
- **gallama**: ``gallama run`` serving the same model (its engine worker is one more process), driven by
  B concurrent streamed chat requests of N tokens from ``--clients`` separate load-generator processes
  (benchmarks/http_load.py; aiohttp, or httpx with ``--client httpx``: httpx is the load generator's own
  bottleneck at tens of streams, see there), the way OpenAI clients drive it. Tokens/s = completion tokens /
  wall time.

Each side also reports what its engine did during the run (the raw generator's ``iterate()`` counted by a wrapper,
gallama's from ``/metrics``' ``gallama_engine_*`` counters): steps, ms per step, mean batch, gallama's own work
between two steps, and the share of the wall time spent inside steps. Same steps but slower ones put a gap in the
engine's process (the GIL); more steps or a lower busy share put it in how the jobs arrive. Each row also prints
the cores the front, the worker and the client processes kept busy during the HTTP runs: the raw side runs on
an otherwise idle machine, and ``--sides ...,rawbusy`` measures the raw generator again beside ``--burn``
spinning processes, to see how much that difference alone slows an engine whose steps are bound by one core.

Both stay loaded and run each concurrency once unmeasured first; each repeat measures raw then gallama (or the
reverse, alternating), and the ratio is the median of the per-pair ratios (the machines' shared CPUs drift
from run to run: see bench_exllama.py), with its interquartile range and a 90% bootstrap interval of that
median.

Beside throughput, each row splits the time the way a stream spends it: TTFT (raw: a one-token ``generate``
of the same B prompts; HTTP: the client's, and the server's from ``/metrics``, from the request's arrival at the
front, with the front's preparation in it; each side's engine lines add the engine's own TTFT, from a job's
submission to its first token, so the rest is the trip between front and worker) and the decode pace, the
time per token after the first (raw: the N-token run less its TTFT, over N - 1; HTTP: per stream, as the
client receives the tokens). A pace ratio near 1 with a lower throughput ratio puts the gap in the fixed
latencies of a request; a pace ratio below 1 puts it in the engine's steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_exllama import load, prompts, quantile, raw_run  # noqa: E402
from http_load import run_load  # noqa: E402

WORDS_PROMPTS = [p.split("\n", 1)[1].split("<|im_end|>")[0] for p in prompts(64)]


def raw_server(args) -> None:
    """--raw-worker: load once, then answer 'raw B' / 'inproc B' lines on stdin with tokens/s of one batched
    generate() (raw: with its TTFT and decode pace), or of B concurrent Backend.generate streams in this
    process (gallama below the seam)."""
    import asyncio

    from bench_exllama import gallama_run as inproc_run

    backend = load(args.engine, args.model, args.cache_size, max(args.streams))
    backend.stop_on_eos = False
    steps = StepCounter(backend.generator)
    texts = prompts(max(args.streams))
    raw_run(args.engine, backend, texts[:2], 16)  # warm-up
    asyncio.run(inproc_run(backend, texts[:2], 16))
    print("ready", flush=True)
    for line in sys.stdin:
        side, b = line.split()
        b = int(b)
        if side == "raw":
            ttft = raw_run(args.engine, backend, texts[:b], 1)
            before = steps.stats()
            elapsed = raw_run(args.engine, backend, texts[:b], args.new_tokens)
            print(json.dumps({"tokens_per_s": b * args.new_tokens / elapsed, "ttft_ms": 1000 * ttft,
                              "decode_ms_per_token": 1000 * (elapsed - ttft) / max(1, args.new_tokens - 1),
                              "engine": engine_delta(before, steps.stats(), elapsed)}), flush=True)
        else:
            before = steps.stats()
            elapsed, tokens = asyncio.run(inproc_run(backend, texts[:b], args.new_tokens))
            print(json.dumps({"tokens_per_s": tokens / elapsed, "engine": engine_delta(before, steps.stats(), elapsed)}),
                  flush=True)


class StepCounter:
    """Counts the raw generator's steps as ``EngineLoop.stats`` does for gallama (same keys; no delivery)."""

    def __init__(self, generator):
        self.steps = self.job_steps = self.admissions = self.jobs = self.first_tokens = 0
        self.seconds = self.first_token_seconds = 0.0
        self._enqueued = False
        self._waiting: dict = {}  # job -> when it was enqueued, until its first token
        iterate, enqueue = generator.iterate, generator.enqueue

        def counted():
            if self._enqueued:  # jobs enqueued since the last step: one admission, as EngineLoop counts them
                self.admissions += 1
                self._enqueued = False
            t0 = time.perf_counter()
            results = iterate()
            t1 = time.perf_counter()
            self.seconds += t1 - t0
            if results:
                self.steps += 1
                self.job_steps += len(results)
            for result in results:
                if result.get("stage") == "streaming" and result.get("job") in self._waiting:
                    self.first_tokens += 1
                    self.first_token_seconds += t1 - self._waiting.pop(result["job"])
            return results

        def enqueue_counted(job, *a, **kw):
            self._enqueued = True
            self.jobs += 1
            self._waiting[job] = time.perf_counter()
            return enqueue(job, *a, **kw)

        generator.iterate, generator.enqueue = counted, enqueue_counted

    def stats(self) -> dict:
        return {"steps": self.steps, "step_seconds": self.seconds, "job_steps": self.job_steps,
                "delivery_seconds": 0.0, "admissions": self.admissions, "jobs": self.jobs, "queue_seconds": 0.0,
                "first_tokens": self.first_tokens, "first_token_seconds": self.first_token_seconds}


#: The engine counters every side reports (``EngineLoop.stats``, ``/metrics``' ``gallama_engine_*_total``).
ENGINE_KEYS = ("steps", "step_seconds", "job_steps", "delivery_seconds", "admissions", "jobs", "queue_seconds",
               "first_tokens", "first_token_seconds")


def engine_delta(before: dict | None, after: dict | None, wall_s: float) -> dict | None:
    """What the engine did during one run: steps, ms per step, mean batch, gallama's ms per step between steps,
    the share of the run's wall time spent inside steps (below 1: the engine waited for work), the groups
    the run's jobs were admitted in (1: all at once), and the engine's own time to first token and wait for a
    running step's end (ms, means over the run's jobs; raw: from ``enqueue``, which never waits)."""
    if before is None or not after:
        return None
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in ENGINE_KEYS}
    n = max(1.0, d["steps"])
    return {"steps": d["steps"], "step_ms": 1000 * d["step_seconds"] / n, "batch": d["job_steps"] / n,
            "delivery_ms": 1000 * d["delivery_seconds"] / n, "busy": d["step_seconds"] / wall_s,
            "admissions": d["admissions"], "ttft_ms": 1000 * d["first_token_seconds"] / max(1.0, d["first_tokens"]),
            "queue_ms": 1000 * d["queue_seconds"] / max(1.0, d["jobs"])}


class DirectWorker:
    """gallama's engine worker driven through RemoteBackend from this process (no front, no HTTP)."""

    def __init__(self, args):
        import asyncio

        from gallama_core.models.registry import BackendRegistry
        from gallama_core.plugin_system.manager import get_plugin_manager
        from gallama_core.plugin_system.registrations import LoadProgress
        from gallama_core.workers.launcher import LocalProcessLauncher

        backend = {"v2": "exllama", "v3": "exllamav3"}[args.engine]
        spec = BackendRegistry(get_plugin_manager()).get(backend)
        settings = spec.settings_model(model_id=args.model, model_name="bench", backend=spec.name, max_seq_len=2048,
                                       cache_size=args.cache_size, cache_quant="FP16",
                                       max_batch_size=max(args.streams))
        self.loop = asyncio.new_event_loop()
        self.worker = self.loop.run_until_complete(LocalProcessLauncher(log_level="warning").launch(settings,
                                                                                                  LoadProgress()))
        self.texts = prompts(max(args.streams))
        self.new_tokens = args.new_tokens

    def run(self, b: int) -> dict:
        import asyncio

        from gallama_core.models.backend import GenerationRequest, SamplingParams

        async def one(text):
            start, first, n = time.perf_counter(), None, 0
            async for chunk in self.worker.backend.generate(GenerationRequest(
                    prompt=text, max_tokens=self.new_tokens, sampling=SamplingParams(temperature=0.0))):
                first = first or time.perf_counter() - start
                n = chunk.completion_tokens or n
            return first, n

        async def all_of():
            t0 = time.perf_counter()
            out = await asyncio.gather(*(one(t) for t in self.texts[:b]))
            return time.perf_counter() - t0, out

        backend = self.worker.backend
        self.loop.run_until_complete(backend.ping())
        before = backend.engine_stats()
        elapsed, out = self.loop.run_until_complete(all_of())
        self.loop.run_until_complete(backend.ping())
        return {"tokens_per_s": sum(n for _, n in out) / elapsed,
                "ttft_p50_ms": 1000 * statistics.median(f for f, _ in out),
                "engine": engine_delta(before, backend.engine_stats(), elapsed)}

    def close(self):
        self.loop.run_until_complete(self.worker.stop())


class PySpy:
    """``py-spy record`` of one process (every thread, without pausing it) until stopped: collapsed stacks, one
    ``thread (tid): name;frame;frame... count`` line per stack, in ``path``. ``view``: "idle" samples every
    thread in any state (running, in a native call, waiting), "gil" only the thread that holds the GIL."""

    def __init__(self, pid: int, path: Path, view: str = "idle", rate: int = 200):
        self.path = path
        self.proc = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking",
                                      "--threads", f"--{view}", "--format", "raw", "--output", str(path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stop(self) -> str:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return "" if self.path.exists() else (err or "no output")[-300:]


def profile_row(b: int, raw_pid: int, url: str, raw_run_, http_run, folder: Path) -> None:
    """One unmeasured run of each side under py-spy: the raw generator's process, then gallama's worker and front."""
    import shutil

    import httpx

    from gallama_core.testing import parent_pid

    if shutil.which("py-spy") is None:
        print("      profile: py-spy is not on PATH, skipped", flush=True)
        return
    rows = httpx.get(url + "/list_loaded_models", timeout=30).json()
    worker_pid = rows[0]["pid"]
    front_pid = parent_pid(worker_pid)  # the front started the worker

    def spied(pids: dict[str, int], run) -> dict[str, str]:
        spies = {f"{name}-{view}": PySpy(pid, folder / f"profile-{b}-{name}-{view}.txt", view)
                 for name, pid in pids.items() for view in ("idle", "gil")}
        time.sleep(1.0)  # attached before the run starts
        run()
        return {name: spy.stop() for name, spy in spies.items()}

    problems = spied({"raw": raw_pid}, raw_run_)
    problems.update(spied({"worker": worker_pid, **({"front": front_pid} if front_pid else {})}, http_run))
    for name, problem in problems.items():
        print(f"      profile {name}: {problem or 'written'}", flush=True)


class Burners:
    """``n`` processes that keep one core busy each (a Python spin loop), while the ``with`` block runs: the CPU
    load a front and its clients put on the machine, without their traffic, for the raw side."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        time.sleep(0.2)  # started and spinning
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            proc.kill()
            proc.wait()


def median_engine(runs: list[dict | None]) -> dict | None:
    """The median of each engine figure over a row's runs (None when the side reported none)."""
    runs = [r for r in runs if r]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]} if runs else None


def median_interval(values: list[float], level: float = 0.90, resamples: int = 4000) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median of ``values`` (seeded: the same pairs give the same
    interval)."""
    import random

    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1 - level) / 2
    return quantile(medians, tail), quantile(medians, 1 - tail)


def server_metrics(url: str) -> tuple[tuple[float, float, float, float], dict]:
    """From ``GET /metrics``: (sum, count) of the front's time-to-first-token histogram (from the request's arrival
    at the front: the server's side of TTFT, without the client's) then of its preparation histogram (arrival to
    hand-off to the engine), and the engine's counters (``gallama_engine_*_total``, summed over instances)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=30).text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    ttft = (sums.get("gallama_time_to_first_token_seconds_sum", 0.0),
            sums.get("gallama_time_to_first_token_seconds_count", 0.0),
            sums.get("gallama_request_preparation_seconds_sum", 0.0),
            sums.get("gallama_request_preparation_seconds_count", 0.0))
    engine = {key: sums[f"gallama_engine_{key}_total"] for key in ENGINE_KEYS if f"gallama_engine_{key}_total" in sums}
    return ttft, engine


def front_means(before: tuple[float, ...], after: tuple[float, ...]) -> tuple[float, float]:
    """The server's mean TTFT and the front's mean preparation, in ms, between two :func:`server_metrics` scrapes."""
    return (1000 * (after[0] - before[0]) / max(1.0, after[1] - before[1]),
            1000 * (after[2] - before[2]) / max(1.0, after[3] - before[3]))


def start_gallama(args):
    from gallama_core.testing import start_server

    backend = {"v2": "exllama", "v3": "exllamav3"}[args.engine]
    entry = (f"model_id={args.model} model_name=bench backend={backend} max_seq_len=2048 "
             f"cache_size={args.cache_size} cache_quant=FP16 max_batch_size={max(args.streams)}")
    return start_server(["-id", entry], log_path=Path(args.log_dir) / f"bench-http-{args.engine}-server.log",
                        timeout=900)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=["v2", "v3"], default="v3")
    ap.add_argument("--model", required=True)
    ap.add_argument("--streams", default="1,8,32,64")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--level-seconds", type=float, default=0.0, help="after --repeat pairs, keep adding pairs (up to "
                    "3 x --repeat) while the level has run for less than this: short levels (few streams) get more "
                    "pairs for the same time, and the median of their noisy pairs a tighter interval")
    ap.add_argument("--clients", type=int, default=4, help="load-generator processes")
    ap.add_argument("--client", choices=["aiohttp", "httpx"], default="aiohttp", help="the load generator's HTTP "
                    "client (httpx: what the openai package uses, slower per request)")
    ap.add_argument("--cache-size", type=int, default=64 * 1024)
    ap.add_argument("--json")
    ap.add_argument("--log-dir", default=os.environ.get("OUT", "."))
    ap.add_argument("--sides", default="raw,http", help="also 'inproc' (Backend.generate in one process), "
                    "'worker' (RemoteBackend to one engine worker, no front): where the HTTP gap comes from; and "
                    "'rawbusy' (the raw generator again, with --burn spinning processes beside it): how much a "
                    "machine as busy as the HTTP side's slows the raw engine itself")
    ap.add_argument("--profile", default="", help="streams (e.g. 64) at which one extra, unmeasured run of each side "
                    "is sampled with py-spy (on PATH): the raw process, and gallama's worker and front; collapsed "
                    "stacks go to --log-dir as profile-S-{raw,worker,front}.txt (see benchmarks/pyspy_top.py)")
    ap.add_argument("--burn", type=int, default=2, help="with the side 'rawbusy': CPU-bound processes that spin "
                    "beside the raw generator (about the cores the HTTP side's front and clients keep busy)")
    ap.add_argument("--raw-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.streams = [int(s) for s in args.streams.split(",")]
    args.profile = {int(s) for s in args.profile.split(",") if s}
    if args.raw_worker:
        raw_server(args)
        return 0

    raw = subprocess.Popen([sys.executable, __file__, "--raw-worker", "--engine", args.engine, "--model", args.model,
                            "--streams", ",".join(map(str, args.streams)), "--new-tokens", str(args.new_tokens),
                            "--cache-size", str(args.cache_size)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert raw.stdout.readline().strip() == "ready", "the raw generator process failed to start"
    gallama, url = start_gallama(args)
    import httpx

    from gallama_core.testing import cpu_seconds

    worker_pid = httpx.get(url + "/list_loaded_models", timeout=30).json()[0]["pid"]

    def cpu_of(*pids: int) -> tuple[float, ...]:
        return tuple(map(cpu_seconds, pids))

    def raw_side(b: int, side: str = "raw") -> dict:
        raw.stdin.write(f"{side} {b}\n")
        raw.stdin.flush()
        return json.loads(raw.stdout.readline())

    direct = DirectWorker(args) if "worker" in args.sides else None

    def gallama_run(b: int) -> dict:
        scraped = []  # the front's counters and the processes' CPU once the clients' warm-up requests are done
        result = run_load(url, "bench", WORDS_PROMPTS, b, args.new_tokens, requests=b,
                          processes=min(args.clients, b), client=args.client,
                          on_ready=lambda: scraped.append((server_metrics(url), cpu_of(gallama.pid, worker_pid))))
        (before, engine_before), (front_cpu, worker_cpu) = scraped[0]
        after, engine_after = server_metrics(url)
        front_now, worker_now = cpu_of(gallama.pid, worker_pid)
        wall = result["wall_s"]  # cores kept busy during the run, by process
        result["cores"] = {"front": (front_now - front_cpu) / wall, "worker": (worker_now - worker_cpu) / wall,
                           "clients": result["client_cpu_s"] / wall}
        result["server_ttft_ms"], result["preparation_ms"] = front_means(before, after)
        result["engine"] = engine_delta(engine_before, engine_after, result["wall_s"])
        return result

    def save(rows: list[dict]) -> None:  # after every row: a run cut short keeps what it measured
        if args.json:
            Path(args.json).write_text(json.dumps({"engine": args.engine, "model": Path(args.model).name,
                                                   "new_tokens": args.new_tokens, "clients": args.clients,
                                                   "client": args.client,
                                                   "rows": rows, "when": time.strftime("%Y-%m-%d %H:%M")}, indent=2))

    try:
        gallama_run(2)  # warm-up of the HTTP path
        rows = []
        for b in args.streams:
            raws, gals, ratios = [], [], []
            extra: dict[str, list[float]] = {}
            engines: dict[str, list[dict | None]] = {}  # per side: the engine's counters of each run
            # unmeasured: the first batch of this size in each process (measured once: 1.3 s TTFT at 8 streams
            # through HTTP in a first pair, against 35 ms in the next ones)
            raw_side(b)
            gallama_run(b)
            if direct is not None:
                direct.run(b)
            level_started, i = time.perf_counter(), 0
            while i < args.repeat or (i < 3 * args.repeat and time.perf_counter() - level_started < args.level_seconds):
                order = ("raw", "gallama") if i % 2 == 0 else ("gallama", "raw")
                i += 1
                pair = {}
                for side in order:
                    pair[side] = raw_side(b) if side == "raw" else gallama_run(b)
                raws.append(pair["raw"])
                gals.append(pair["gallama"])
                ratios.append(pair["gallama"]["tokens_per_s"] / pair["raw"]["tokens_per_s"])
                # diagnosis: the same load below HTTP (in process; through one worker without the front)
                engines.setdefault("raw", []).append(pair["raw"].get("engine"))
                engines.setdefault("http", []).append(pair["gallama"].get("engine"))
                if "inproc" in args.sides:
                    inproc = raw_side(b, "inproc")
                    extra.setdefault("inproc", []).append(inproc["tokens_per_s"] / pair["raw"]["tokens_per_s"])
                    engines.setdefault("inproc", []).append(inproc.get("engine"))
                if "rawbusy" in args.sides:  # control: the raw generator on a machine as busy as the HTTP side's
                    with Burners(args.burn):
                        busy = raw_side(b)
                    extra.setdefault("rawbusy", []).append(busy["tokens_per_s"] / pair["raw"]["tokens_per_s"])
                    engines.setdefault("rawbusy", []).append(busy.get("engine"))
                if direct is not None:
                    w = direct.run(b)
                    extra.setdefault("worker", []).append(w["tokens_per_s"] / pair["raw"]["tokens_per_s"])
                    extra.setdefault("worker_ttft", []).append(w["ttft_p50_ms"])
                    engines.setdefault("worker", []).append(w.get("engine"))
            if b in args.profile:
                profile_row(b, raw.pid, url, lambda: raw_side(b), lambda: gallama_run(b), Path(args.log_dir))
            ci_low, ci_high = median_interval(ratios)
            row = {"streams": b, "raw_tps": statistics.median(r["tokens_per_s"] for r in raws),
                   "gallama_tps": statistics.median(g["tokens_per_s"] for g in gals),
                   "ratio": statistics.median(ratios), "ratio_p25": quantile(ratios, 0.25),
                   "ratio_p75": quantile(ratios, 0.75), "ratio_ci90": [ci_low, ci_high], "ratios": ratios,
                   "raw_ttft_ms": statistics.median(r["ttft_ms"] for r in raws),
                   "ttft_p50_ms": statistics.median(g["ttft_p50_ms"] for g in gals),
                   "ttft_p99_ms": statistics.median(g["ttft_p99_ms"] for g in gals),
                   "server_ttft_ms": statistics.median(g["server_ttft_ms"] for g in gals),
                   "preparation_ms": statistics.median(g["preparation_ms"] for g in gals),
                   "raw_decode_ms": statistics.median(r["decode_ms_per_token"] for r in raws),
                   "http_decode_ms": statistics.median(g["decode_ms_per_token"] for g in gals),
                   "pace_ratio": statistics.median(r["decode_ms_per_token"] / g["decode_ms_per_token"]
                                                   for r, g in zip(raws, gals)),
                   "tokens": gals[-1]["tokens"], "expected_tokens": b * args.new_tokens, "pairs": len(ratios),
                   **{f"{k}_median": statistics.median(v) for k, v in extra.items()},
                   "engine": {side: median_engine(runs) for side, runs in engines.items()},
                   "cores": {k: statistics.median(g["cores"][k] for g in gals) for k in gals[0]["cores"]}}
            rows.append(row)
            save(rows)
            for side, e in row["engine"].items():
                if e:
                    print(f"      engine, {side:6s}: {e['steps']:6.0f} steps of {e['step_ms']:6.2f} ms, mean batch "
                          f"{e['batch']:5.1f}, gallama between steps {e['delivery_ms']:.3f} ms, busy {e['busy']:.3f} "
                          f"of the run, jobs admitted in {e['admissions']:.0f} groups; engine TTFT "
                          f"{e['ttft_ms']:.0f} ms (waiting for a step's end {e['queue_ms']:.1f} ms)", flush=True)
            cores = "  ".join(f"{k} {v:.2f}" for k, v in row["cores"].items())
            print(f"      cores kept busy during the HTTP runs: {cores}", flush=True)
            if extra:
                below = "  ".join(f"{k} {statistics.median(v):.3f}" for k, v in extra.items())
                print(f"      below HTTP, and controls: {below}", flush=True)
            print(f"  {b:3d} streams: raw {row['raw_tps']:8.1f} tok/s  gallama HTTP {row['gallama_tps']:8.1f} tok/s  "
                  f"ratio {row['ratio']:.3f} [IQR {row['ratio_p25']:.3f}-{row['ratio_p75']:.3f}, 90% CI "
                  f"{ci_low:.3f}-{ci_high:.3f}]  TTFT p50 raw {row['raw_ttft_ms']:.0f} / HTTP "
                  f"{row['ttft_p50_ms']:.0f} ms "
                  f"(server's mean {row['server_ttft_ms']:.0f} ms, of it the front's preparation "
                  f"{row['preparation_ms']:.1f} ms; p99 {row['ttft_p99_ms']:.0f} ms)  decode ms/token "
                  f"raw {row['raw_decode_ms']:.2f} / HTTP {row['http_decode_ms']:.2f} (pace ratio "
                  f"{row['pace_ratio']:.3f})  ({row['tokens']}/{row['expected_tokens']} tokens)", flush=True)
    finally:
        if direct is not None:
            direct.close()
        gallama.terminate()
        raw.stdin.close()
        raw.terminate()
        gallama.wait(30)
        raw.wait(30)
    print(f"\ngallama HTTP (front + worker, {args.clients} {args.client} client processes) vs raw batched generator, "
          f"{Path(args.model).name}, {args.new_tokens} tokens per stream, greedy")
    print("| streams | raw tok/s | gallama HTTP tok/s | ratio (median of pairs) | IQR | 90% CI of the median | "
          "TTFT p50 raw / HTTP ms | server's TTFT mean ms | decode ms/token raw / HTTP | pace ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['streams']} | {r['raw_tps']:.1f} | {r['gallama_tps']:.1f} | {r['ratio']:.3f} | "
              f"{r['ratio_p25']:.3f}-{r['ratio_p75']:.3f} | {r['ratio_ci90'][0]:.3f}-{r['ratio_ci90'][1]:.3f} | "
              f"{r['raw_ttft_ms']:.0f} / {r['ttft_p50_ms']:.0f} | {r['server_ttft_ms']:.0f} | "
              f"{r['raw_decode_ms']:.2f} / {r['http_decode_ms']:.2f} | {r['pace_ratio']:.3f} |")
    save(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
