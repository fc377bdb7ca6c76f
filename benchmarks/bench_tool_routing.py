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
    python benchmarks/bench_tool_routing.py --followup [--limit N]

``--followup`` measures the question asked after tool results instead (an agent's loop: call, result, answer): for
every call case, the history holds the expected calls and a result for each ("done": the right decision is to
answer) or, where several calls are expected, only the first ("partial": the right decision is another call).

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


def followup_variants() -> dict[str, tuple[str, list[str], Callable[[str], bool]]]:
    """The questions asked after tool results; ``live`` is the server's."""
    from gallama_core.pipeline.features.function_calling import FOLLOW_UP, ROUTING

    return {
        "live": (FOLLOW_UP.question, list(FOLLOW_UP.choices), FOLLOW_UP.calls),
        "tool-or-answer": ("\n\nIs another tool needed, or do these results answer my question? Say 'tool' or "
                           "'answer'.", ["tool", "answer"], lambda t: t == "tool"),
        "first-question": (ROUTING.question, list(ROUTING.choices), ROUTING.calls),
        "yes-no": ("\n\nIs another tool call still needed to answer my question? Answer yes or no.", ["yes", "no"],
                   lambda t: t == "yes"),
        "answer-or-tool": ("\n\nDo these results answer my question, or is another tool needed? Say 'answer' or "
                           "'tool'.", ["answer", "tool"], lambda t: t == "tool"),
        "answer-now": ("\n\nCan I answer now, or should I call another tool? Say 'answer' or 'tool'.",
                       ["answer", "tool"], lambda t: t == "tool"),
    }


def after_calls(prompt: str, calls: list[tuple[str, dict]]) -> list[dict]:
    """The user's prompt, the assistant's ``calls`` and a result for each, rendered as the pipeline renders
    history for a template without a tool role (SmolLM2's)."""
    import json

    from gallama_core.pipeline.features.function_calling import render_history

    made = [{"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            for i, (name, args) in enumerate(calls)]
    results = [{"role": "tool", "tool_call_id": f"c{i}",
                "content": f"{name} returned: " + ", ".join(f"{k}={v}" for k, v in args.items()) + ": done."}
               for i, (name, args) in enumerate(calls)]
    return render_history([{"role": "user", "content": prompt},
                           {"role": "assistant", "content": None, "tool_calls": made}, *results], tool_role=False)


def situations(category: str, case: dict, followup: bool) -> list[tuple[str, list[dict], bool]]:
    """(column, messages, whether a call is right) for one case: after the user's turn, or after tool results."""
    expected = case["expected"]
    if not followup:
        return [(category, [{"role": "user", "content": case["prompt"]}], bool(expected))]
    if not expected:
        return []
    out = [(f"{category}/done", after_calls(case["prompt"], expected), False)]
    if len(expected) > 1:
        out.append((f"{category}/partial", after_calls(case["prompt"], expected[:1]), True))
    return out


def decide(client, url: str, specs: list[dict], messages: list[dict], question: str, choices: list[str]) -> str:
    from gallama_core.pipeline.tool_calls import tool_prompt

    messages = [dict(m) for m in messages]
    messages[-1]["content"] += question
    body = {"model": "bench", "temperature": 0, "max_tokens": 16,
            "messages": [{"role": "system", "content": tool_prompt(specs, "auto")}, *messages],
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
    parser.add_argument("--followup", action="store_true", help="the question asked after tool results")
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
                    questions = followup_variants() if args.followup else variants(specs)
                    for column, messages, call_is_right in situations(category, case, args.followup):
                        seen[column] += 1
                        for name, (question, choices, calls) in questions.items():
                            if args.variants and name not in args.variants:
                                continue
                            answer = decide(client, url, specs, messages, question, choices)
                            right.setdefault(name, Counter())[column] += calls(answer) == call_is_right
    finally:
        process.terminate()
        process.wait(timeout=60)
    columns = list(seen)
    what = "after tool results" if args.followup else "irrelevance = abstention"
    print(f"\n### {Path(gguf).name}: routing decisions right, per category ({time.perf_counter() - started:.0f} s; "
          f"{what})\n")
    last = "all" if args.followup else "calls, all four"
    print("| variant | " + " | ".join(f"{c} ({seen[c]})" for c in columns) + f" | {last} |")
    print("|---" * (len(columns) + 2) + "|")
    for name, counts in right.items():
        summed = [c for c in columns if args.followup or c != "irrelevance"]
        total = sum(counts[c] for c in summed) / max(1, sum(seen[c] for c in summed))
        print(f"| {name} | " + " | ".join(f"{100 * counts[c] / seen[c]:.0f}%" for c in columns)
              + f" | {100 * total:.0f}% |")


if __name__ == "__main__":
    main()
