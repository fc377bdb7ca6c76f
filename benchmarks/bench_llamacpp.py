"""gallama (front + engine worker, llama.cpp backend) vs xllamacpp's own server, same model, prompts, settings.

Both are driven over HTTP by the same streamed-chat load generator running in a separate process
(benchmarks/http_load.py), one server at a time, rounds alternating between them; prints output tokens/s and
TTFT (p50) per concurrency and the ratios.

    python benchmarks/bench_llamacpp.py [--gguf PATH] [--max-tokens 64] [--rounds 3] [--concurrency 1 4 8]

Goal: throughput >= 0.97x raw, TTFT p50 overhead <= 5 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_load import run_load  # noqa: E402

PROMPTS = [f"Write a short paragraph about {topic}." for topic in
           ("llamas", "the sea", "mountains", "bread", "rivers", "owls", "winter", "trains")]

RAW_SERVER = textwrap.dedent("""
    import sys, time, json, xllamacpp as xlc
    sys.path.insert(0, {plugin!r})
    from gallama_llamacpp.backend import build_params
    from gallama_llamacpp.gguf_metadata import read_gguf_metadata
    from gallama_llamacpp.settings import LlamaCppSettings
    settings = LlamaCppSettings(model_id={gguf!r}, n_parallel={n_parallel}, max_seq_len={seq})
    params, _ = build_params(settings, read_gguf_metadata({gguf!r}))
    params.endpoint_metrics = False
    server = xlc.Server(params)
    open({url_file!r}, "w").write(server.listening_address)
    while True:
        time.sleep(3600)
""")


def start_raw(gguf: str, n_parallel: int, seq: int):
    plugin = str(Path(__file__).resolve().parents[1] / "plugins" / "gallama_llamacpp")
    import tempfile

    url_file = tempfile.mktemp(suffix=".url")
    proc = subprocess.Popen([sys.executable, "-c", RAW_SERVER.format(plugin=plugin, gguf=gguf, n_parallel=n_parallel,
                                                                      seq=seq, url_file=url_file)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not os.path.exists(url_file) or not open(url_file).read():
        if proc.poll() is not None:
            raise RuntimeError("the raw xllamacpp server exited")
        time.sleep(0.1)
    time.sleep(0.2)
    return proc, open(url_file).read().strip()


def start_gallama(gguf: str, n_parallel: int, seq: int):
    from gallama_core.testing import start_server

    return start_server(["-id", f"model_id={gguf} model_name=bench n_parallel={n_parallel} max_seq_len={seq}"],
                        log_path=Path(os.devnull))


def measure(url: str, concurrency: int, max_tokens: int, requests: int) -> dict:
    """The load comes from a separate client process (benchmarks/http_load.py), never from this interpreter.
    No keep-alive: the raw llama.cpp server closes streamed connections; both sides pay the same connect."""
    run_load(url, "bench", ["warm up"], 1, 4, processes=1, keepalive=False)
    return run_load(url, "bench", PROMPTS, concurrency, max_tokens, requests=max(requests, 2 * concurrency),
                    processes=1, keepalive=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", default=None, help="GGUF file (default: the SmolLM2 test model)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=8, help="requests per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()
    if args.gguf is None:
        from gallama_core.testing import smollm2_gguf

        args.gguf = smollm2_gguf()
    n_parallel, seq = max(args.concurrency), 1024
    rows = {c: {"raw": [], "gallama": []} for c in args.concurrency}
    for round_ in range(args.rounds):
        order = [("raw", start_raw), ("gallama", start_gallama)]
        for name, start in (order if round_ % 2 == 0 else order[::-1]):
            proc, url = start(args.gguf, n_parallel, seq)
            try:
                for c in args.concurrency:
                    rows[c][name].append(measure(url, c, args.max_tokens, args.requests))
            finally:
                proc.terminate()
                proc.wait()
    print(f"model {os.path.basename(args.gguf)}, {args.max_tokens} new tokens, {args.requests} requests x "
          f"{args.rounds} rounds, medians")
    print(f"{'conc':>4} {'raw tok/s':>10} {'gallama tok/s':>14} {'ratio':>6} {'raw TTFT ms':>12} "
          f"{'gallama TTFT ms':>16} {'extra ms':>9}")
    for c, data in rows.items():
        raw_tps = statistics.median(r["tokens_per_s"] for r in data["raw"])
        gal_tps = statistics.median(r["tokens_per_s"] for r in data["gallama"])
        raw_ttft = statistics.median(r["ttft_p50_ms"] for r in data["raw"])
        gal_ttft = statistics.median(r["ttft_p50_ms"] for r in data["gallama"])
        print(f"{c:>4} {raw_tps:>10.1f} {gal_tps:>14.1f} {gal_tps / raw_tps:>6.3f} {raw_ttft:>12.1f} "
              f"{gal_ttft:>16.1f} {gal_ttft - raw_ttft:>9.1f}")


if __name__ == "__main__":
    main()
