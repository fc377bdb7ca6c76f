"""Work stops when nobody waits for it any more: a client gone during a long prompt, a model removed mid-stream."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from gallama_core.testing import running_server, smollm2_gguf

LOGS = Path(os.environ.get("GALLAMA_TEST_OUTPUT", Path(__file__).parents[2] / "test-output"))
LONG_PROMPT = "Summarise this text. " + " ".join(f"word{i % 97}" for i in range(800))


@pytest.fixture(scope="module")
def one_slot():
    args = ["-id", f"model_id={smollm2_gguf()} model_name=smol n_parallel=1 max_seq_len=4096 n_threads=2"]
    with running_server(args, log_path=LOGS / "robustness-cancel.log") as url:
        yield url


async def _short(http: httpx.AsyncClient) -> float:
    started = time.perf_counter()
    r = await http.post("/v1/chat/completions", json={"model": "smol", "max_tokens": 2,
                                                      "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    return time.perf_counter() - started


@pytest.mark.parametrize("stream", [True, False])
async def test_a_client_gone_during_a_long_prefill_frees_the_slot(one_slot, stream):
    """One slot. Time the long prompt alone; then send it again, leave after 0.5 s, and send a short request: the
    short one must not wait for the abandoned prompt to be processed."""
    body = {"model": "smol", "max_tokens": 1, "stream": stream, "messages": [{"role": "user", "content": LONG_PROMPT}]}
    async with httpx.AsyncClient(base_url=one_slot, timeout=300) as http:
        started = time.perf_counter()
        full = await http.post("/v1/chat/completions", json={**body, "stream": False, "seed": 1,
                                                              "messages": [{"role": "user", "content": uuid.uuid4().hex + LONG_PROMPT}]})
        assert full.status_code == 200
        prefill = time.perf_counter() - started
        assert prefill > 2.0, "the long prompt must take a while for this test to mean anything"
        abandoned = asyncio.ensure_future(http.post("/v1/chat/completions", json={
            **body, "messages": [{"role": "user", "content": uuid.uuid4().hex + LONG_PROMPT}]}))
        await asyncio.sleep(0.5)
        abandoned.cancel()  # the client goes away, its connection closes
        await asyncio.gather(abandoned, return_exceptions=True)
        waited = await _short(http)
    assert waited < prefill * 0.6, (waited, prefill)


async def test_remove_model_ends_its_streams_with_an_error_then_done():
    gguf = smollm2_gguf()
    args = ["-id", f"model_id={gguf} model_name=smol n_parallel=2 max_seq_len=1024 n_threads=1",
            "-id", f"model_id={gguf} model_name=other n_parallel=1 max_seq_len=256 n_threads=1"]
    with running_server(args, log_path=LOGS / "robustness-remove.log") as url:
        body = {"model": "smol", "stream": True, "max_tokens": 400, "temperature": 0,
                "messages": [{"role": "user", "content": "List words."}], "regex_pattern": "(word ){400}"}
        lines: list[str] = []
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        lines.append(line[6:])
                        if len(lines) == 4:
                            removed = await http.post("/remove_model", json={"model_name": "smol"})
                            assert removed.status_code == 200
            assert lines[-1] == "[DONE]"
            error = json.loads(lines[-2])["error"]
            assert error["type"] == "service_unavailable" and "unloaded" in error["message"]
            rows = (await http.get("/list_loaded_models")).json()
            assert [r["model_name"] for r in rows] == ["other"]
            assert (await http.post("/v1/chat/completions", json={"model": "other", "max_tokens": 2, "messages": [
                {"role": "user", "content": "hi"}]})).status_code == 200
