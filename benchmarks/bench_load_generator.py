"""The load generator's own floor: http_load.py against a server that does nothing but pace SSE streams.

    python benchmarks/bench_load_generator.py [--streams 8,32,64] [--processes 1,4] [--step-ms 11]
        [--new-tokens 64] [--clients aiohttp,httpx] [--servers null,gallama]

The server here (``--serve PORT``, run as a separate process) is a bare Starlette app on uvicorn: each streamed
chat request gets ``--new-tokens`` content chunks, one every ``--step-ms`` (the first after 5 ms, on a fixed
timetable), then usage
and ``[DONE]``; no engine, no validation, no gallama. Whatever TTFT above 5 ms, and whatever throughput below
``streams x 1000 / step-ms`` tokens/s, a row shows is the load generator's and HTTP's own cost: a raw engine
timed in its own process never pays it, so it must stay small beside the figures the HTTP benchmarks compare
(bench_http_exllama.py, bench_llamacpp.py). Each row is the median of ``--repeat`` runs.

``--servers null,gallama`` also drives ``gallama run`` serving the stand-in engine of ``standin_engine.py`` (one
token per job every ``--step-ms``, no Python work per step) in its engine worker: the same load through the
front, the pipeline and the worker, so the difference from the null server is gallama's own cost, TTFT of a
burst included, on any machine. Each row also gives the CPU time per streamed token of the server's processes
(gallama: front and worker) and of the client processes while they measure: what each takes from a machine
that the server shares with its load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def serve(port: int, step_ms: float) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    def event(data: dict) -> str:
        return "data: " + json.dumps(data, separators=(",", ":")) + "\n\n"

    async def chat(request):
        body = await request.json()
        count = int(body.get("max_tokens") or 16)

        async def chunks():
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(count):  # on a fixed timetable: a late wake-up does not delay the next tokens
                await asyncio.sleep(max(0.0, start + 0.005 + i * step_ms / 1000 - loop.time()))
                yield event({"choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]})
            yield event({"choices": [], "usage": {"completion_tokens": count}})
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def health(request):
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/health", health)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="8,32,64")
    ap.add_argument("--processes", default="1,4", help="load-generator processes")
    ap.add_argument("--clients", default="aiohttp,httpx")
    ap.add_argument("--servers", default="null", help="null, gallama (the stand-in engine behind gallama run)")
    ap.add_argument("--step-ms", type=float, default=11.0)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.step_ms)
        return 0

    from gallama_core.testing import cpu_seconds
    from http_load import run_load

    print(f"load generator against servers that only pace tokens: {args.step_ms:g} ms per token, "
          f"{args.new_tokens} tokens per stream, median of {args.repeat} runs, Python {sys.version.split()[0]}")
    print("| server | client | processes | streams | tok/s | of the pace's | TTFT p50 ms | TTFT p99 ms | "
          "CPU us/token: server (front + worker) | clients |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind in args.servers.split(","):
        server, url = start(kind, args.step_ms)
        pids = server_pids(server, url)
        try:
            for client in args.clients.split(","):
                for processes in (int(p) for p in args.processes.split(",")):
                    for streams in (int(s) for s in args.streams.split(",")):
                        runs = []
                        for _ in range(args.repeat):
                            ready: list[float] = []  # the server's CPU once the clients' warm-up is done
                            run = run_load(url, kind, ["hi"], streams, args.new_tokens,
                                           processes=min(processes, streams), client=client,
                                           on_ready=lambda: ready.append(sum(map(cpu_seconds, pids))))
                            run["server_cpu_s"] = sum(map(cpu_seconds, pids)) - ready[0]
                            runs.append(run)
                        tps = statistics.median(r["tokens_per_s"] for r in runs)
                        ideal = streams * args.new_tokens / ((args.new_tokens - 1) * args.step_ms / 1000 + 0.005)
                        per_token = {k: statistics.median(1e6 * r[k] / r["tokens"] for r in runs)
                                     for k in ("server_cpu_s", "client_cpu_s")}
                        print(f"| {kind} | {client} | {min(processes, streams)} | {streams} | {tps:.0f} | "
                              f"{tps / ideal:.3f} | {statistics.median(r['ttft_p50_ms'] for r in runs):.1f} | "
                              f"{statistics.median(r['ttft_p99_ms'] for r in runs):.1f} | "
                              f"{per_token['server_cpu_s']:.0f} | {per_token['client_cpu_s']:.0f} |", flush=True)
        finally:
            server.terminate()
            server.wait(30)
    return 0


def server_pids(server: subprocess.Popen, url: str) -> list[int]:
    """The server's processes: gallama's front and its engine workers, or the null server."""
    import httpx

    loaded = httpx.get(url + "/list_loaded_models", timeout=30)  # a 404 from the null server
    return [server.pid, *(row["pid"] for row in loaded.json())] if loaded.status_code == 200 else [server.pid]


def start(kind: str, step_ms: float) -> tuple[subprocess.Popen, str]:
    """The null server, or ``gallama run`` serving the stand-in engine as the model ``gallama``."""
    from gallama_core.testing import free_port, start_server, wait_healthy

    if kind == "gallama":
        from bench_ray_chunks import standin_path

        env = {"PYTHONPATH": os.pathsep.join([standin_path(), *filter(None, [os.environ.get("PYTHONPATH")])]),
               "STANDIN_STEP_MS": str(step_ms), "STANDIN_GIL_MS": "0"}
        return start_server(["-id", "model_id=standin backend=standin model_name=gallama max_queue=1000"], env=env)
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--step-ms", str(step_ms)])
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, server, 60)
    return server, url


if __name__ == "__main__":
    sys.exit(main())
