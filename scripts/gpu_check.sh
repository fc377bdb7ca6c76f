#!/usr/bin/env bash
# GPU check of the ExLlama backends (issues 6 and 7): install, build, make random-weight models, run the
# plugins' GPU tests, check logits against transformers, drive `gallama run` with the openai client, and
# benchmark gallama against the raw generators. See docs/gpu-testing.md.
#
#   scripts/gpu_check.sh                 # both plugins (ExLlamaV2 then ExLlamaV3)
#   scripts/gpu_check.sh --v2            # ExLlamaV2 only
#   scripts/gpu_check.sh --v3            # ExLlamaV3 only (compares with a v2 bench JSON when one exists)
#   options: --prebuild v2|v3 (once the foreground builds are done, start that engine's JIT build detached,
#            so that a next run on the same, still warm machine finds it built)
#            --no-bench  --no-serve  --no-tests  --v2-json FILE
#            --http-bench-only (of the benchmarks, run only the HTTP one: gallama run vs the raw generator)
#   environment: HTTP_STREAMS=1,8,32,64 HTTP_REPEAT=3 HTTP_SIDES=raw,http HTTP_CLIENT=aiohttp|httpx
#                HTTP_PROFILE=64 (streams at which one extra run of each side is sampled with py-spy: summaries in
#                the log, collapsed stacks in $OUT/profiles.tgz)
#                HTTP_BURN=2 (with HTTP_SIDES=...,rawbusy: spinning processes beside the raw generator, a control)
#                HTTP_LEVEL_SECONDS=0 (after HTTP_REPEAT pairs, more pairs, up to 3x, while a level ran less than this)
#
# Outputs go to $OUT (the device tool's folder) or test-output/gpu; models and builds to $GPU_WORK
# (/tmp/gallama-gpu), reused while the machine stays up.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/test-output/gpu}
WORK=${GPU_WORK:-/tmp/gallama-gpu}
mkdir -p "$OUT" "$WORK"
V2=0; V3=0; PREBUILD=""; BENCH=1; BACKEND_BENCH=1; SERVE=1; TESTS=1; V2_JSON=""
while [ $# -gt 0 ]; do
  case "$1" in
    --v2) V2=1 ;; --v3) V3=1 ;; --prebuild) PREBUILD=$2; shift ;;
    --no-bench) BENCH=0 ;; --no-serve) SERVE=0 ;; --no-tests) TESTS=0 ;; --http-bench-only) BACKEND_BENCH=0 ;;
    --v2-json) V2_JSON=$2; shift ;;
    *) echo "unknown option $1"; exit 2 ;;
  esac
  shift
done
[ $V2 = 0 ] && [ $V3 = 0 ] && { V2=1; V3=1; }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
SUMMARY=$OUT/summary.txt
FAILS=0
say() { echo "=== $(date +%T) $*" | tee -a "$SUMMARY"; }
note() { echo "$*" | tee -a "$SUMMARY"; }
check() {  # check NAME command...: run, record PASS/FAIL
  local name=$1; shift
  if "$@"; then note "PASS $name"; else note "FAIL $name"; FAILS=$((FAILS + 1)); fi
}

# ---------------------------------------------------------------- 1. packages (carried wheels + gallama)
say "install"
if [ -d .whl ] && [ ! -f "$WORK/wheels-installed" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && touch "$WORK/wheels-installed" || { note "FAIL installing carried wheels"; exit 1; }
fi
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH
# py-spy (HTTP_PROFILE) on its own: the bin/ folder of one --target install keeps only some wheels' scripts
if ! command -v py-spy >/dev/null && ls .whl/py_spy-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/pyspy .whl/py_spy-*.whl >/dev/null 2>&1
  export PATH=/tmp/pyspy/bin:$PATH
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade \
  --target /tmp/site . plugins/gallama_exllama plugins/gallama_exllamav3 >"$WORK/pip-gallama.log" 2>&1 \
  || { cat "$WORK/pip-gallama.log"; note "FAIL installing gallama"; exit 1; }
python3 - <<'PY' | tee -a "$SUMMARY"
import importlib.metadata as m, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(), "|",
      ", ".join(f"{d} {m.version(d)}" for d in ("exllamav2", "exllamav3", "llguidance", "transformers", "numpy")))
PY

# ---------------------------------------------------------------- 2. JIT builds (parallel) + models
build() {  # build v2|v3 MAX_JOBS: import the extension, which JIT-builds it once per machine
  local mod=exllamav2; [ "$1" = v3 ] && mod=exllamav3
  MAX_JOBS=$2 python3 -c "import time; t=time.time(); import $mod.ext; print('built $mod in %.0fs' % (time.time()-t))" \
    >"$WORK/build-$1.log" 2>&1
}
JOBS=16; [ $V2 = 1 ] && [ $V3 = 1 ] && JOBS=8
PIDS=""
if [ $V2 = 1 ]; then say "building exllamav2 (MAX_JOBS=$JOBS)"; build v2 $JOBS & PIDS="$PIDS $!"; fi
if [ $V3 = 1 ]; then say "building exllamav3 (MAX_JOBS=$JOBS)"; build v3 $JOBS & PIDS="$PIDS $!"; fi
say "making random-weight models"
python3 scripts/gpu_tools.py make-models --tokenizer .gpu/smollm2-135m-tokenizer --out "$WORK/models" \
  || { note "FAIL making models"; exit 1; }
for p in $PIDS; do wait $p; done
if [ -n "$PREBUILD" ] && [ ! -f "$WORK/build-$PREBUILD.started" ]; then
  touch "$WORK/build-$PREBUILD.started"
  mod=exllamav2; [ "$PREBUILD" = v3 ] && mod=exllamav3
  say "$PREBUILD build started in the background (detached, MAX_JOBS=8)"
  setsid nohup bash -c "MAX_JOBS=8 python3 -c 'import $mod.ext' >$WORK/build-$PREBUILD.log 2>&1" </dev/null >/dev/null 2>&1 &
fi
for v in v2 v3; do [ -f "$WORK/build-$v.log" ] && tail -3 "$WORK/build-$v.log" | tee -a "$SUMMARY"; done
TINY=$WORK/models/llama-tiny
BIG=$WORK/models/llama-1b

run_engine() {  # run_engine v2|v3
  local e=$1 plugin=gallama_exllama backend=exllama serve_extra="max_seq_len=4096 cache_quant=FP16"
  [ "$e" = v3 ] && { plugin=gallama_exllamav3; backend=exllamav3; serve_extra="max_seq_len=4096 cache_size=65536 cache_quant=FP16"; }
  if [ $TESTS = 1 ]; then
    say "$e: plugin GPU tests ($plugin/tests/test_gpu.py on the tiny model)"
    check "$e pytest" env GALLAMA_EXL_TINY="$TINY" python3 -m pytest -q -p no:cacheprovider --import-mode=importlib \
      -o asyncio_mode=strict -rs "plugins/$plugin/tests/test_gpu.py"
    say "$e: logits vs transformers (fp32 reference, same weights)"
    check "$e logits tiny" python3 scripts/gpu_tools.py logits --engine $e --model "$TINY"
    check "$e logits 1b" python3 scripts/gpu_tools.py logits --engine $e --model "$BIG"
  fi
  if [ $SERVE = 1 ]; then
    say "$e: gallama run + openai client (1B shape)"
    local streams=16,32
    check "$e serve" python3 scripts/gpu_tools.py serve-check --engine $e --model "$BIG" --streams $streams \
      --extra "$serve_extra" --log-dir "$OUT"
  fi
  if [ $BENCH = 1 ]; then
    say "$e: benchmark gallama vs raw generator (1B shape)"
    # pairs of runs: the machines' shared CPUs make one run drift 10-30% from the next (see the bench's doc)
    local repeat=9; [ "$e" = v2 ] && repeat=3  # v2 decodes one job at a time: batch 32 takes ~25 s a run
    if [ $BACKEND_BENCH = 1 ]; then
      check "$e bench" python3 benchmarks/bench_exllama.py --engine $e --model "$BIG" --batches 1,8,32 \
        --new-tokens 128 --repeat $repeat --json "$OUT/bench-$e.json"
      cp "$OUT/bench-$e.json" "$WORK/" 2>/dev/null
    fi
    if [ "$e" = v3 ]; then
      say "$e: benchmark through HTTP (front + engine worker, separate client processes) vs raw batched generator"
      check "$e http bench" python3 benchmarks/bench_http_exllama.py --engine $e --model "$BIG" --streams ${HTTP_STREAMS:-1,8,32,64} \
        --new-tokens 256 --repeat ${HTTP_REPEAT:-3} --sides ${HTTP_SIDES:-raw,http} --clients 4 --client ${HTTP_CLIENT:-aiohttp} --json "$OUT/bench-http-$e.json" --log-dir "$OUT" \
        --profile "${HTTP_PROFILE:-}" --burn ${HTTP_BURN:-2} --level-seconds ${HTTP_LEVEL_SECONDS:-0}
      if ls "$OUT"/profile-*.txt >/dev/null 2>&1; then
        python3 benchmarks/pyspy_top.py "$OUT"/profile-*.txt | tee -a "$SUMMARY"
        (cd "$OUT" && tar czf profiles.tgz profile-*.txt && rm -f profile-*.txt)
      fi
    fi
  fi
}

[ $V2 = 1 ] && run_engine v2
[ $V3 = 1 ] && run_engine v3

V2J=${V2_JSON:-$WORK/bench-v2.json}
if [ $BENCH = 1 ] && [ -f "$V2J" ] && [ -f "$WORK/bench-v3.json" ]; then
  python3 - "$V2J" "$WORK/bench-v3.json" <<'PY' | tee -a "$SUMMARY"
import json, sys
v2, v3 = (json.load(open(p)) for p in sys.argv[1:3])
print("\nexllamav3 vs exllama (both gallama backends, same 1B model, same prompts)")
print("| batch | exllama tok/s | exllamav3 tok/s | v3/v2 |")
print("|---:|---:|---:|---:|")
r2 = {r["batch"]: r for r in v2["rows"]}
for r in v3["rows"]:
    a = r2.get(r["batch"])
    if a:
        print(f"| {r['batch']} | {a['gallama_tps']:.1f} | {r['gallama_tps']:.1f} | {r['gallama_tps'] / a['gallama_tps']:.2f} |")
PY
fi
for e in v2 v3; do
  [ -f "$WORK/bench-$e.json" ] && python3 - "$WORK/bench-$e.json" <<'PY' | tee -a "$SUMMARY"
import json, sys
sys.path.insert(0, "benchmarks")
from bench_exllama import print_table
d = json.load(open(sys.argv[1]))
print(f"\n{d['engine']} on {d['device']} ({d['model']}, {d['new_tokens']} new tokens, greedy, FP16 cache)")
print_table(d)
print(f"bandwidth limit {d['bandwidth_limit_tps']:.0f} tok/s ({d['copy_bandwidth_gbs']:.0f} GB/s copy, "
      f"{d['weight_bytes'] / 1e9:.2f} GB weights/token); batch 1: gallama {d['batch1_pct_of_limit']:.1f}%, "
      f"raw {d['batch1_raw_pct_of_limit']:.1f}% of it")
PY
done
say "done: $FAILS failed step(s)"
grep -E "^(PASS|FAIL)" "$SUMMARY" | sort | uniq -c | awk '{print}' >/dev/null
exit $((FAILS > 0))
