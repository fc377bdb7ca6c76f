"""Engine workers with real processes and real SmolLM2: one process per model instance, routing, balancing,
crashes, restarts, shutdown, a worker from another Python environment, mixture of agents."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from gallama_core.testing import make_venv, parent_pid, process_alive, running_server, start_server, wait_until

from .conftest import LOGS

ROOT = Path(__file__).parents[2]
SMALL = "n_parallel=2 max_seq_len=512 n_threads=1"


def _instances(url: str) -> list[dict]:
    return httpx.get(url + "/list_loaded_models", timeout=10).json()


def _chat(url: str, model: str, **extra) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", timeout=120, json={
        "model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "Say hi."}], **extra})


@pytest.fixture(scope="module")
def fleet(gguf):
    """Two instances of 'twin' and one of 'solo': three engine workers."""
    args = ["-id", f"model_id={gguf} model_name=twin {SMALL}", "-id", f"model_id={gguf} model_name=twin {SMALL}",
            "-id", f"model_id={gguf} model_name=solo {SMALL}"]
    with running_server(args, log_path=LOGS / "workers-fleet.log") as url:
        yield url


def test_every_instance_is_its_own_worker_process_and_the_front_loads_no_engine(fleet):
    rows = _instances(fleet)
    assert sorted(r["model_name"] for r in rows) == ["solo", "twin", "twin"]
    assert all(r["status"] == "ready" and r["backend"] == "llama_cpp" and r["active"] == 0 for r in rows)
    pids = {r["pid"] for r in rows}
    assert len(pids) == 3
    fronts = {parent_pid(pid) for pid in pids}
    assert len(fronts) == 1 and not (fronts & pids)
    front = fronts.pop()
    for pid in pids:
        assert "gallama_core.workers.server" in Path(f"/proc/{pid}/cmdline").read_text()
        assert "xllamacpp" in Path(f"/proc/{pid}/maps").read_text()
    assert "xllamacpp" not in Path(f"/proc/{front}/maps").read_text()  # the engine lives only in workers


def test_routing_by_name_and_both_twins_receive_load(fleet):
    before = {r["pid"]: r["served"] for r in _instances(fleet)}
    for _ in range(4):
        r = _chat(fleet, "twin")
        assert r.status_code == 200 and r.json()["model"] == "twin"
    r = _chat(fleet, "solo")
    assert r.status_code == 200 and r.json()["model"] == "solo"
    after = {row["pid"]: (row["model_name"], row["served"] - before[row["pid"]]) for row in _instances(fleet)}
    twins = [served for name, served in after.values() if name == "twin"]
    assert sorted(twins) == [2, 2]  # least busy first, then round robin
    assert [served for name, served in after.values() if name == "solo"] == [1]
    missing = _chat(fleet, "nope")
    assert missing.status_code == 404 and "twin" in missing.json()["error"]["message"]


def test_kill_9_of_a_worker(fleet):
    """A twin dies: its twin serves; solo dies: a fast 503; both come back; the other model never fails."""
    failures: list[str] = []
    stop = threading.Event()

    def keep_asking(model: str):
        while not stop.is_set():
            r = _chat(fleet, model)
            if r.status_code != 200:
                failures.append(f"{model}: {r.status_code} {r.text}")

    rows = _instances(fleet)
    twin_pid = next(r["pid"] for r in rows if r["model_name"] == "twin")
    solo_pid = next(r["pid"] for r in rows if r["model_name"] == "solo")

    watcher = threading.Thread(target=keep_asking, args=("solo",))
    watcher.start()
    try:
        os.kill(twin_pid, signal.SIGKILL)
        time.sleep(0.3)
        for _ in range(3):  # the healthy twin answers every time
            assert _chat(fleet, "twin").status_code == 200
        states = {r["pid"]: r["status"] for r in _instances(fleet) if r["model_name"] == "twin"}
        assert "restarting" in states.values() or len(states) == 2
        back = wait_until(lambda: [r for r in _instances(fleet) if r["model_name"] == "twin"
                                    and r["status"] == "ready" and r["pid"] not in (twin_pid, None)
                                    and r["restarts"] == 1], 60, "the killed twin to come back")
        assert not process_alive(twin_pid) and back
    finally:
        stop.set()
        watcher.join()
    assert failures == []  # solo never failed while a twin died and came back

    os.kill(solo_pid, signal.SIGKILL)
    time.sleep(0.3)
    r = _chat(fleet, "solo")
    assert r.status_code == 503  # at once: neither a hang nor an answer after the restart
    error = r.json()["error"]
    assert error["type"] == "service_unavailable" and "SIGKILL" in error["message"]
    health = httpx.get(fleet + "/health").json()
    assert health["status"] == "ok" and health["models"]["solo"] in ("restarting", "ready")
    assert {(i["model_name"], i["location"]) for i in health["instances"] if i["status"] == "ready"} >= {
        ("twin", "local")}
    wait_until(lambda: _chat(fleet, "solo").status_code == 200, 60, "solo to come back")
    assert _chat(fleet, "twin").status_code == 200


def test_a_stream_whose_worker_dies_ends_with_an_error_event_then_done(fleet):
    body = {"model": "solo", "stream": True, "max_tokens": 400, "temperature": 0,
            "messages": [{"role": "user", "content": "List words."}], "regex_pattern": "(word ){400}"}
    pid = next(r["pid"] for r in _instances(fleet) if r["model_name"] == "solo")
    lines = []
    with httpx.stream("POST", fleet + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                lines.append(line[6:])
                if len(lines) == 5:
                    os.kill(pid, signal.SIGKILL)
    assert lines[-1] == "[DONE]"
    error = json.loads(lines[-2])["error"]
    assert error["type"] == "service_unavailable" and "SIGKILL" in error["message"]
    wait_until(lambda: _chat(fleet, "solo").status_code == 200, 60, "solo to come back")


def test_mixture_of_agents_over_workers(fleet):
    client = openai.OpenAI(base_url=fleet + "/v1", api_key="x", max_retries=0, timeout=300)
    single = client.chat.completions.create(model="solo", max_tokens=8, temperature=0,
                                            messages=[{"role": "user", "content": "Name a fruit."}])
    mixed = client.chat.completions.create(
        model="solo", max_tokens=8, temperature=0, messages=[{"role": "user", "content": "Name a fruit."}],
        extra_body={"mixture_of_agents": {"agents": ["twin", "solo"], "aggregator": "solo"}})
    assert mixed.model == "solo" and mixed.choices[0].message.content
    # two drafts of up to 8 tokens each plus the aggregator's answer over a prompt that holds the drafts
    assert mixed.usage.prompt_tokens > 3 * single.usage.prompt_tokens
    assert mixed.usage.completion_tokens > mixed.choices[0].message.content.count(" ")
    stream = client.chat.completions.create(
        model="solo", max_tokens=8, stream=True, messages=[{"role": "user", "content": "Name a fruit."}],
        extra_body={"mixture_of_agents": {"agents": ["twin"], "aggregator": "twin"}})
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="solo", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"mixture_of_agents": {"agents": ["ghost"], "aggregator": "solo"}})


def test_add_and_remove_model_start_and_stop_a_worker(fleet, gguf):
    r = httpx.post(fleet + "/add_model", json={"model_id": gguf, "model_name": "extra", "n_parallel": 1,
                                               "max_seq_len": 256, "n_threads": 1})
    assert r.status_code == 200 and r.json()["models"] == ["extra"]
    loading = httpx.get(fleet + "/health")  # the other models keep serving while one loads
    assert loading.status_code == 200 and loading.json()["models"]["extra"] in ("loading", "ready")
    row = wait_until(lambda: next((x for x in _instances(fleet) if x["model_name"] == "extra"
                                    and x["status"] == "ready"), None), 60, "the added model to load")
    assert httpx.get(fleet + "/health").status_code == 200
    assert _chat(fleet, "extra").status_code == 200
    removed = httpx.post(fleet + "/remove_model", json={"model_name": "extra"})
    assert removed.status_code == 200 and removed.json()["instances"] == 1
    wait_until(lambda: not process_alive(row["pid"]), 15, "the removed model's worker to exit")
    assert "extra" not in [x["model_name"] for x in _instances(fleet)]
    outside = httpx.post(fleet + "/add_model", json={"model_id": "/nonexistent/x.gguf", "model_name": "ghost"})
    assert outside.status_code == 400 and outside.json()["error"]["param"] == "model_id"
    broken = Path(gguf).parent / "broken.gguf"  # inside the model folders: loads, and fails in the worker
    broken.write_bytes(b"not a model")
    bad = httpx.post(fleet + "/add_model", json={"model_id": str(broken), "model_name": "ghost"})
    assert bad.status_code == 200
    failed = wait_until(lambda: next((x for x in _instances(fleet) if x["model_name"] == "ghost"
                                       and x["status"] == "failed"), None), 30, "the bad model to fail")
    assert "is not a GGUF file" in failed["error"]  # the worker's own error text
    httpx.post(fleet + "/remove_model", json={"model_name": "ghost"})


def _start_front(args: list[str], python: str = sys.executable, home: Path | None = None, log_name: str = "front"):
    env = {"GALLAMA_HOME_PATH": str(home)} if home is not None else None
    return start_server(args, env=env, python=python, log_path=LOGS / f"workers-{log_name}.log", timeout=120)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_stopping_the_front_leaves_no_worker(gguf, how):
    process, url = _start_front(["-id", f"model_id={gguf} model_name=a {SMALL}",
                                 "-id", f"model_id={gguf} model_name=b {SMALL}"], log_name=f"stop-{how.name}")
    try:
        pids = [row["pid"] for row in _instances(url)]
        assert len(pids) == 2 and all(process_alive(pid) for pid in pids)
        process.send_signal(how)
        code = process.wait(timeout=30)
        if how != signal.SIGKILL:
            assert code == 0
        wait_until(lambda: not any(process_alive(pid) for pid in pids), 10, "every worker to exit")
    finally:
        if process.poll() is None:
            process.kill()


@pytest.fixture(scope="module")
def core_only_python(tmp_path_factory) -> str:
    """A second virtual environment with gallama-core alone (no llama.cpp backend, no xllamacpp)."""
    return make_venv(tmp_path_factory.mktemp("core-only") / "venv", ["-e", str(ROOT)])


def test_a_worker_runs_in_another_python_environment(gguf, core_only_python, tmp_path):
    """The front's environment has no llama.cpp backend at all; gallama.yaml sends llama_cpp models' workers to an
    environment that has it. Both directions of the split are shown: the front cannot import the engine, the
    model serves."""
    probe = subprocess.run([core_only_python, "-c", "import xllamacpp"], capture_output=True)
    assert probe.returncode != 0
    home = tmp_path / "home"
    home.mkdir()
    (home / "gallama.yaml").write_text(f"backends:\n  llama_cpp:\n    python: {sys.executable}\n"
                                      f"server:\n  model_dirs: [{Path(gguf).parent}]\n")
    (home / "model_config.yaml").write_text(f"nowhere:\n  model_id: {gguf}\n  backend: llama_cpp\n"
                                            "  python: /nonexistent/python\n")
    process, url = _start_front(["-id", f"model_id={gguf} model_name=far backend=llama_cpp {SMALL}"],
                                python=core_only_python, home=home, log_name="second-venv")
    try:
        row = _instances(url)[0]
        assert row["status"] == "ready" and row["backend"] == "llama_cpp"
        assert os.readlink(f"/proc/{row['pid']}/exe") == os.path.realpath(sys.executable) or \
            Path(f"/proc/{row['pid']}/cmdline").read_text().startswith(sys.executable)
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120)
        answer = client.chat.completions.create(model="far", max_tokens=5,
                                                messages=[{"role": "user", "content": "Say hi."}])
        assert answer.choices[0].message.content and answer.usage.completion_tokens > 0
        # a model entry's own `python` works the same; an interpreter that does not exist is a clear failure
        added = httpx.post(url + "/add_model", json={"model_id": "nowhere"})
        assert added.status_code == 200
        failed = wait_until(lambda: next((x for x in _instances(url) if x["model_name"] == "nowhere"
                                           and x["status"] == "failed"), None), 30, "the bad interpreter to fail")
        assert "/nonexistent/python" in failed["error"]
        refused = httpx.post(url + "/add_model", json={"model_id": gguf, "backend": "llama_cpp",
                                                       "python": "/bin/sh"})
        assert refused.status_code == 400  # an interpreter never comes from a request
    finally:
        process.terminate()
        process.wait(timeout=30)
