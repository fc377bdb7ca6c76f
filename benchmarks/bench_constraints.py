"""Constrained vs free decoding on the same backend and prompts: tool call (named), JSON schema, regex.

Starts `gallama run` on the model (default: SmolLM2 GGUF with llama.cpp), then for each mode streams the
same prompts one at a time and measures decode tokens/s (completion tokens after the first, over the time
from the first to the last chunk; prompt processing excluded). Prints each mode's ratio to free decoding.

    python benchmarks/bench_constraints.py [--gguf PATH] [--rounds 2]

Goal: every constrained mode >= 0.95x free.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from tool_cases import CASES, TOOLS  # noqa: E402

PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                           "hobbies": {"type": "array", "items": {"type": "string"}}},
          "required": ["name", "age", "hobbies"]}
MODES = {
    "free": lambda tool: {},
    "tool_call": lambda tool: {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": tool}},
                               "parallel_tool_calls": False},
    "json_schema": lambda tool: {"response_format": {"type": "json_schema",
                                                     "json_schema": {"name": "p", "schema": PERSON}}},
    "regex": lambda tool: {"regex_pattern": r"([A-Z][a-z]+ ){5,40}[A-Z][a-z]+\."},
}


def decode_rate(http: httpx.Client, url: str, prompt: str, extra: dict, max_tokens: int) -> tuple[int, float]:
    body = {"model": "bench", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0.7, "seed": 1, "stream": True, "stream_options": {"include_usage": True}, **extra}
    first = last = None
    tokens = 0
    with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and (chunk["choices"][0]["delta"].get("content")
                                       or chunk["choices"][0]["delta"].get("tool_calls")):
                now = time.perf_counter()
                first = first or now
                last = now
    return tokens, (last - first) if first and last else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()
    from gallama_core.testing import running_server, smollm2_gguf

    gguf = args.gguf or smollm2_gguf()
    cases = CASES[:: max(1, len(CASES) // args.prompts)][: args.prompts]
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    with running_server(["-id", f"model_id={gguf} model_name=bench n_parallel=1 max_seq_len=4096"]) as url:
        with httpx.Client(timeout=600) as http:
            decode_rate(http, url, "warm up", {}, 8)
            for _ in range(args.rounds):
                for mode, extra in MODES.items():  # interleaved, so drift hits every mode alike
                    tokens = seconds = 0.0
                    for tool, prompt in cases:
                        n, s = decode_rate(http, url, prompt, extra(tool), args.max_tokens)
                        tokens, seconds = tokens + max(n - 1, 0), seconds + s
                    rates[mode].append(tokens / seconds)
    free = statistics.median(rates["free"])
    print(f"model {Path(gguf).name}, {len(cases)} prompts x {args.rounds} rounds, decode tokens/s (median)")
    print(f"{'mode':<12} {'tok/s':>8} {'ratio':>7}")
    for mode, values in rates.items():
        value = statistics.median(values)
        print(f"{mode:<12} {value:>8.1f} {value / free:>7.3f}")


if __name__ == "__main__":
    main()
