"""Function calling: gallama vs xllamacpp's own server (the model's own chat template), same model, same cases.

Cases: benchmarks/tool_call_cases.py (20 per category: simple, multiple, parallel, parallel_multiple,
irrelevance), plus ``response_format`` (the simple cases' tool schemas as ``json_schema`` answers). Each server
runs in its own process; this script is the client, over HTTP, one request at a time, temperature 0.

    python benchmarks/bench_tool_calls.py [--gguf PATH ...] [--targets gallama raw] [--categories simple ...]
        [--limit N] [--max-tokens 200] [--tool-choice auto] [--json-out results.json]

Per category it prints: parsed % (answers that came back as tool calls with JSON arguments), schema-valid %
(of the calls returned, and of the JSON answers in response_format), right-function %, right-arguments %,
abstention % (answers in text only: right for irrelevance, wrong elsewhere) and length % (finish_reason
"length").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tool_call_cases import cases as all_cases  # noqa: E402

CATEGORIES = ["simple", "multiple", "parallel", "parallel_multiple", "irrelevance", "response_format"]


def _valid(arguments: Any, schema: dict) -> bool:
    import jsonschema

    try:
        jsonschema.validate(arguments, schema)
    except jsonschema.ValidationError:
        return False
    return True


def _matches(expected: dict, actual: Any) -> bool:
    if not isinstance(actual, dict):
        return False
    for key, want in expected.items():
        have = actual.get(key)
        if isinstance(want, str):
            if not isinstance(have, str) or want.lower() not in have.lower():
                return False
        elif have != want:
            return False
    return True


def score(case: dict, answer: dict) -> dict[str, Any]:
    """What one answer got right (see the module docstring)."""
    choice = answer["choices"][0]
    message = choice["message"]
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in case["tools"]}
    calls = []
    for call in message.get("tool_calls") or []:
        try:
            arguments = json.loads(call["function"]["arguments"])
        except (TypeError, ValueError):
            arguments = ValueError
        calls.append((call["function"]["name"], arguments))
    parsed = bool(calls) and all(a is not ValueError for _, a in calls)
    valid = [name in schemas and a is not ValueError and _valid(a, schemas[name]) for name, a in calls]
    expected = case["expected"]
    right_fn = bool(expected) and Counter(n for n, _ in calls) == Counter(n for n, _ in expected)
    right_args = right_fn
    if right_fn:
        left = list(calls)
        for name, want in expected:
            hit = next((c for c in left if c[0] == name and _matches(want, c[1])), None)
            if hit is None:
                right_args = False
                break
            left.remove(hit)
    return {"parsed": parsed, "valid": valid, "right_fn": right_fn, "right_args": right_args,
            "abstained": not calls, "length": choice.get("finish_reason") == "length",
            "calls": [[n, a if a is not ValueError else None] for n, a in calls],
            "content": (message.get("content") or "")[:200], "finish_reason": choice.get("finish_reason")}


def score_json(case: dict, answer: dict) -> dict[str, Any]:
    choice = answer["choices"][0]
    text = choice["message"].get("content") or ""
    schema = case["tools"][0]["function"]["parameters"]
    try:
        value = json.loads(text)
        ok = _valid(value, schema)
    except ValueError:
        value, ok = None, False
    return {"parsed": value is not None, "valid": [ok], "right_fn": ok, "right_args": ok and _matches(
        case["expected"][0][1], value), "abstained": False, "length": choice.get("finish_reason") == "length",
        "content": text[:200], "finish_reason": choice.get("finish_reason")}


def run_target(url: str, model: str, selected: dict[str, list[dict]], max_tokens: int, tool_choice: str,
               timeout: float) -> dict[str, list[dict]]:
    import httpx

    results: dict[str, list[dict]] = {}
    with httpx.Client(timeout=timeout) as http:
        for category, items in selected.items():
            for case in items:
                body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": case["prompt"]}],
                                        "max_tokens": max_tokens, "temperature": 0}
                if category == "response_format":
                    schema = case["tools"][0]["function"]["parameters"]
                    body["response_format"] = {"type": "json_schema", "json_schema": {
                        "name": case["tools"][0]["function"]["name"], "schema": schema}}
                else:
                    body.update(tools=case["tools"], tool_choice=tool_choice)
                started = time.perf_counter()
                try:
                    r = http.post(url + "/v1/chat/completions", json=body)
                    answer = r.json() if r.status_code == 200 else None
                    error = None if answer else f"HTTP {r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as exc:
                    answer, error = None, f"{type(exc).__name__}: {exc}"
                if answer is None:
                    row = {"parsed": False, "valid": [], "right_fn": False, "right_args": False, "abstained": False,
                           "length": False, "error": error}
                else:
                    row = (score_json if category == "response_format" else score)(case, answer)
                row["seconds"] = round(time.perf_counter() - started, 2)
                row["prompt"] = case["prompt"]
                results.setdefault(category, []).append(row)
    return results


def table(results: dict[str, list[dict]]) -> list[str]:
    rows = ["| category | n | parsed % | schema-valid % | right fn % | right args % | abstention % | length % |",
            "|---|---|---|---|---|---|---|---|"]

    def pct(part, whole):
        return f"{100 * part / whole:.0f}" if whole else "—"

    for category, items in results.items():
        n = len(items)
        calls = [v for row in items for v in row["valid"]]
        tool_category = category not in ("irrelevance", "response_format")
        rows.append("| " + " | ".join([
            category, str(n),
            pct(sum(r["parsed"] for r in items), n) if category != "irrelevance" else "—",
            pct(sum(calls), len(calls)),
            pct(sum(r["right_fn"] for r in items), n) if category != "irrelevance" else "—",
            pct(sum(r["right_args"] for r in items), n) if category != "irrelevance" else "—",
            pct(sum(r["abstained"] for r in items), n) if category != "response_format" else "—",
            pct(sum(r["length"] for r in items), n)]) + " |")
        del tool_category
    return rows


def start_gallama(gguf: str, threads: int):
    from gallama_core.testing import start_server

    return start_server(["-id", f"model_id={gguf} model_name=bench n_parallel=1 max_seq_len=4096 n_threads={threads}"],
                        log_path=Path(os.environ.get("BENCH_LOG", os.devnull)))


def main() -> None:
    from gallama_core.testing import smollm2_gguf

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", nargs="+", default=None, help="model files (default: SmolLM2-135M)")
    parser.add_argument("--targets", nargs="+", default=["gallama", "raw"], choices=["gallama", "raw"])
    parser.add_argument("--categories", nargs="+", default=CATEGORIES, choices=CATEGORIES)
    parser.add_argument("--limit", type=int, default=None, help="cases per category (default: all 20)")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--tool-choice", default="auto", choices=["auto", "required"])
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2)))
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    every = all_cases()
    every["response_format"] = every["simple"]
    selected = {c: every[c][:args.limit] if args.limit else every[c] for c in args.categories}
    if args.tool_choice == "required":
        selected.pop("irrelevance", None)
    out: dict[str, Any] = {}
    for gguf in args.gguf or [smollm2_gguf()]:
        for target in args.targets:
            if target == "gallama":
                process, url = start_gallama(gguf, args.threads)
            else:
                from bench_llamacpp import start_raw

                process, url = start_raw(gguf, 1, 4096)
            try:
                started = time.perf_counter()
                results = run_target(url, "bench", selected, args.max_tokens, args.tool_choice, args.timeout)
                took = time.perf_counter() - started
            finally:
                process.terminate()
                process.wait(timeout=60)
            name = f"{Path(gguf).name} / {target}"
            out[name] = results
            print(f"\n### {name} (tool_choice {args.tool_choice}, max_tokens {args.max_tokens}, {took:.0f} s)\n")
            print("\n".join(table(results)), flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
