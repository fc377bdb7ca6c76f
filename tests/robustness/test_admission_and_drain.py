"""Admission control (429 past a model's queue limit) and draining on SIGTERM, against real `gallama run`
servers on SmolLM2 through real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from gallama_core.testing import running_server, smollm2_gguf, start_server

LOGS = Path(os.environ.get("GALLAMA_TEST_OUTPUT", Path(__file__).parents[2] / "test-output"))
LONG = {"model": "smol", "stream": True, "max_tokens": 300, "temperature": 0,
        "messages": [{"role": "user", "content": "List words."}], "regex_pattern": "(word ){300}"}


@pytest.fixture(scope="module")
def gguf() -> str:
    return smollm2_gguf()


async def test_a_burst_past_the_queue_gets_429s_and_the_admitted_all_finish(gguf):
    args = ["-id", f"model_id={gguf} model_name=smol n_parallel=1 max_queue=2 max_seq_len=512 n_threads=1"]
    with running_server(args, log_path=LOGS / "robustness-admission.log") as url:
        async with httpx.AsyncClient(base_url=url, timeout=300) as http:
            async def one(i: int) -> httpx.Response:
                return await http.post("/v1/chat/completions", json={
                    "model": "smol", "max_tokens": 16, "seed": i,
                    "messages": [{"role": "user", "content": f"Tell me about the number {i}."}]})

            answers = await asyncio.gather(*[one(i) for i in range(12)])
        refused = [r for r in answers if r.status_code == 429]
        admitted = [r for r in answers if r.status_code != 429]
        assert refused and len(admitted) >= 3  # 1 slot + 2 waiting at a time
        for r in refused:
            error = r.json()["error"]
            assert error["type"] == "rate_limit_error" and error["code"] == "queue_full"
            assert int(r.headers["retry-after"]) >= 1
        for r in admitted:
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
        assert httpx.get(url + "/list_loaded_models").json()[0]["active"] == 0


def _front(args: list[str], log_name: str) -> tuple[subprocess.Popen, str]:
    return start_server(args, log_path=LOGS / log_name, timeout=120)


def _stream_lines(url: str, body: dict, out: list, started: threading.Event) -> None:
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
        out.append(r.status_code)
        for line in r.iter_lines():
            if line.startswith("data: "):
                out.append(line[6:])
                started.set()


@pytest.mark.parametrize("timeout, finishes", [(60, True), (1, False)])
def test_sigterm_drains_then_exits_0(gguf, timeout, finishes):
    """In flight when SIGTERM comes: a stream that finishes within --shutdown-timeout ends normally; one that does
    not gets an error event then [DONE]. New connections are refused, the workers stop, the exit code is 0."""
    body = dict(LONG, max_tokens=40, regex_pattern="(word ){40}") if finishes else LONG
    process, url = _front(["-id", f"model_id={gguf} model_name=smol n_parallel=2 max_seq_len=512 n_threads=1",
                           "--shutdown-timeout", str(timeout)], f"robustness-drain-{timeout}.log")
    try:
        worker = httpx.get(url + "/list_loaded_models").json()[0]["pid"]
        lines: list = []
        started = threading.Event()
        client = threading.Thread(target=_stream_lines, args=(url, body, lines, started))
        client.start()
        assert started.wait(60)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.HTTPError):
            httpx.get(url + "/health", timeout=2)  # no longer accepting
        client.join(90)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert lines[0] == 200 and lines[-1] == "[DONE]"
    if finishes:
        last = json.loads(lines[-2])
        assert last["choices"][0]["finish_reason"] == "length"
        assert "".join(json.loads(x)["choices"][0]["delta"].get("content") or "" for x in lines[1:-1]).count("word") == 40
    else:
        error = json.loads(lines[-2])["error"]
        assert error["type"] == "service_unavailable" and "shutting down" in error["message"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{worker}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{worker}").exists()
