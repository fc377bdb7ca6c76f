"""One log line per request, and Prometheus metrics at /metrics, from a real server."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import openai
import pytest

from gallama_core.testing import running_server, smollm2_gguf

LOGS = Path(os.environ.get("GALLAMA_TEST_OUTPUT", Path(__file__).parents[2] / "test-output"))
MARKER = "zebra-marmalade-7731"


def _metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("log_prompts", [False, True])
def test_request_log_and_metrics(tmp_path, log_prompts):
    log_path = tmp_path / "server.log"
    args = ["-id", f"model_id={smollm2_gguf()} model_name=smol n_parallel=2 max_seq_len=512 n_threads=1",
            "--log-level", "info", *(["--log-prompts"] if log_prompts else [])]
    with running_server(args, log_path=log_path) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        messages = [{"role": "user", "content": f"Say {MARKER}."}]
        # greedy: the token counts below do not depend on a sampled early end
        client.chat.completions.create(model="smol", messages=messages, max_tokens=5, temperature=0)
        stream = client.chat.completions.create(model="smol", messages=messages, max_tokens=6, stream=True,
                                                temperature=0)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        bad = httpx.post(url + "/v1/chat/completions", json={"model": "smol", "messages": [], "max_tokens": 2})
        assert bad.status_code == 400
        text = httpx.get(url + "/metrics").text
    assert _metric(text, "gallama_requests_total", route="/v1/chat/completions", model="smol", status="200") == 2
    assert _metric(text, "gallama_requests_total", route="/v1/chat/completions", status="400") == 1
    assert _metric(text, "gallama_completion_tokens_total", model="smol") == 11
    assert _metric(text, "gallama_prompt_tokens_total", model="smol") > 10
    assert _metric(text, "gallama_time_to_first_token_seconds_count", model="smol") == 2
    # the front's part of it, from the request's arrival to its hand-off to the engine: within the TTFT
    assert _metric(text, "gallama_request_preparation_seconds_count", model="smol") == 2
    assert 0 < _metric(text, "gallama_request_preparation_seconds_sum", model="smol") \
        < _metric(text, "gallama_time_to_first_token_seconds_sum", model="smol")
    # and the engine's: llama.cpp keeps no step counters (its own server batches), so none are shown
    assert "gallama_engine_first_tokens_total" not in text
    assert _metric(text, "gallama_inter_token_latency_seconds_count", model="smol") >= 3
    assert _metric(text, "gallama_model_instances", model="smol", state="ready") == 1
    assert "gallama_requests_in_flight" in text and "gallama_queue_length" in text
    log = log_path.read_text(errors="replace")
    lines = [line for line in log.splitlines() if "POST /v1/chat/completions" in line]
    ok = [line for line in lines if "status=200" in line]
    assert len(ok) == 2
    for line in ok:
        assert re.search(r"request chatcmpl-\w+ .*model=smol tokens=\d+\+[56] ttft=\d+ms duration=\d+ms", line), line
    refused = [line for line in lines if "status=400" in line]
    assert len(refused) == 1 and "error='messages" in refused[0]
    assert (MARKER in log) == log_prompts  # prompts stay out of the log unless asked for


def test_metrics_need_a_key_when_keys_are_set(tmp_path):
    args = ["-id", f"model_id={smollm2_gguf()} model_name=smol n_parallel=1 max_seq_len=256 n_threads=1",
            "--api-key", "sk-k"]
    with running_server(args, log_path=tmp_path / "server.log") as url:
        assert httpx.get(url + "/metrics").status_code == 401
        assert httpx.get(url + "/metrics", headers={"x-api-key": "sk-k"}).status_code == 200
