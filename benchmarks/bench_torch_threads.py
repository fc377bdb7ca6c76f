"""Why the ExLlama backends default to ``cpu_threads=1``: torch's CPU pool beside busy cores (any machine, CPU torch).

    python benchmarks/bench_torch_threads.py [--burn 1] [--ops 400]

Times a loop of small in-place CPU ops that torch splits over its intra-op pool (a 200k-element tensor), in a
thread started after the cap is set, as the engine worker's engine thread is: first with torch's default pool
(one thread per core), then with the plugins' cap (``require_cuda(backend, cpu_threads=1)``, CUDA faked), each
on an idle machine and beside ``--burn`` processes that spin on a core each. A pool waits for its slowest thread
at every op, so one thread that shares a core with a busy process holds every op back by a scheduler slice: on
an H100 machine, ExLlamaV3's decode steps took 2.9x as long beside 3 busy cores with the default pool and 1.17x
with one thread (docs/performance.md).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time


def in_thread(fn):
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--burn", type=int, default=1, help="spinning processes beside the timed loop")
    ap.add_argument("--ops", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import torch

    from gallama_exllamav3.backend import require_cuda

    x = torch.randn(200_000)

    def ops() -> float:  # ms per op pair, median of --repeat timings
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            for _ in range(args.ops):
                x.add_(1.0).mul_(0.999)
            times.append(1000 * (time.perf_counter() - t) / args.ops)
        return statistics.median(times)

    print(f"torch {torch.__version__}, default pool {torch.get_num_threads()} threads, {args.burn} busy core(s) "
          f"beside", flush=True)
    for label in ("default pool", "cpu_threads=1"):
        if label == "cpu_threads=1":
            torch.cuda.is_available = lambda: True  # the cap is what is measured, not the GPU check
            in_thread(lambda: require_cuda("exllamav3", 1))
        in_thread(ops)  # warm-up
        idle = in_thread(ops)
        burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.burn)]
        try:
            time.sleep(0.3)
            busy = in_thread(ops)
        finally:
            for burner in burners:
                burner.kill()
                burner.wait()
        print(f"{label:14s} ({in_thread(torch.get_num_threads)} thread(s) in a new thread): {idle:.3f} ms per op "
              f"pair idle, {busy:.3f} ms beside the busy core(s): {busy / idle:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
