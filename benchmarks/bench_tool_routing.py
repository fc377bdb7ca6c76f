"""The routing pass of ``tool_choice: "auto"``: which question makes a model call when a tool applies and answer in
text when none does.

For every case of benchmarks/tool_call_cases.py (tools offered; a call is right in four categories, text in
``irrelevance``) and every routing variant, this sends the routing pass's own prompt through gallama's HTTP API
(from this separate process, one request at a time, temperature 0): the tools described in the system prompt
exactly as the pipeline does (``tool_prompt(tools, "auto")``), the user's turn with the variant's question
appended, the answer constrained to the variant's words (``regex_pattern``, as the pipeline's choice grammar).
It prints, per variant and category, how often the decision was right: "call" in the four call categories,
"text" in ``irrelevance`` (the abstention rate). ``live`` is the question the server asks today.

    python benchmarks/bench_tool_routing.py [--gguf PATH] [--limit N] [--variants live tool-first ...]

A variant that wins here is then checked through the whole pipeline with benchmarks/bench_tool_calls.py.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tool_call_cases import cases as all_cases  # noqa: E402


def variants(specs: list[dict]) -> dict[str, tuple[str, list[str], Callable[[str], bool]]]:
    """name -> (question appended to the user's turn, the allowed answers, whether an answer means "call")."""
    from gallama_core.pipeline.features.function_calling import ROUTING

    names = [s["name"] for s in specs]
    listed = "; ".join(f"{s['name']}: {s['description']}" for s in specs)
    return {
        "live": (ROUTING.question, list(ROUTING.choices), ROUTING.calls),
        "answer-first": ("\n\nShould I answer directly, or use a tool? Say 'answer' or 'tool'.", ["answer", "tool"],
                         lambda t: t == "tool"),
        "tool-first": ("\n\nShould I use a tool, or answer directly? Say 'tool' or 'answer'.", ["tool", "answer"],
                       lambda t: t == "tool"),
        "name-or-none": ("\n\nWhich tool should I use for this? Say the tool's name, or 'none' if no tool fits.",
                         names + ["none"], lambda t: t != "none"),
        "yes-no": ("\n\nCan one of the tools do what I asked? Answer yes or no.", ["yes", "no"],
                   lambda t: t == "yes"),
        "listed-name-or-none": (f"\n\n(Tools: {listed}.) Which of these tools does what I asked? Say its name, or "
                                "'none' if none does.", names + ["none"], lambda t: t != "none"),
    }


def decide(client, url: str, specs: list[dict], prompt: str, question: str, choices: list[str]) -> str:
    from gallama_core.pipeline.tool_calls import tool_prompt

    body = {"model": "bench", "temperature": 0, "max_tokens": 16,
            "messages": [{"role": "system", "content": tool_prompt(specs, "auto")},
                         {"role": "user", "content": prompt + question}],
            "regex_pattern": "(" + "|".join(re.escape(c) for c in choices) + ")"}
    response = client.post(url + "/v1/chat/completions", json=body, timeout=300)
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"].strip()


def main() -> None:
    import httpx

    from gallama_core.testing import smollm2_gguf, start_server

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", default=None, help="model file (default: SmolLM2-135M)")
    parser.add_argument("--limit", type=int, default=None, help="cases per category (default: all 20)")
    parser.add_argument("--variants", nargs="+", default=None, help="variant names (default: all)")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2)))
    args = parser.parse_args()

    gguf = args.gguf or smollm2_gguf()
    process, url = start_server(["-id", f"model_id={gguf} model_name=bench n_parallel=1 max_seq_len=4096 "
                                        f"n_threads={args.threads}"],
                                log_path=Path(os.environ.get("BENCH_LOG", os.devnull)))
    right: dict[str, Counter] = {}
    seen: Counter = Counter()
    started = time.perf_counter()
    try:
        with httpx.Client() as client:
            for category, items in all_cases().items():
                for case in items[:args.limit]:
                    specs = [{"name": t["function"]["name"], "description": t["function"]["description"],
                              "parameters": t["function"]["parameters"]} for t in case["tools"]]
                    seen[category] += 1
                    for name, (question, choices, calls) in variants(specs).items():
                        if args.variants and name not in args.variants:
                            continue
                        answer = decide(client, url, specs, case["prompt"], question, choices)
                        right.setdefault(name, Counter())[category] += calls(answer) == bool(case["expected"])
    finally:
        process.terminate()
        process.wait(timeout=60)
    categories = list(seen)
    print(f"\n### {Path(gguf).name}: routing decisions right, per category ({time.perf_counter() - started:.0f} s; "
          "irrelevance = abstention)\n")
    print("| variant | " + " | ".join(f"{c} ({seen[c]})" for c in categories) + " | calls, all four |")
    print("|---" * (len(categories) + 2) + "|")
    for name, counts in right.items():
        call_cases = sum(seen[c] for c in categories if c != "irrelevance")
        call_right = sum(counts[c] for c in categories if c != "irrelevance")
        print(f"| {name} | " + " | ".join(f"{100 * counts[c] / seen[c]:.0f}%" for c in categories)
              + f" | {100 * call_right / max(1, call_cases):.0f}% |")


if __name__ == "__main__":
    main()
