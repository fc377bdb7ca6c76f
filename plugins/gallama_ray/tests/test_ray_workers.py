"""Model instances on a real local Ray cluster (started by the tests): two replicas of SmolLM2 share the load,
a killed replica comes back while its twin serves, features above the Backend seam work unchanged, and the
front leaves no actor behind however it stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
import openai
import pytest

from gallama_core.testing import parent_pid, process_alive, running_server, start_server, wait_until

SMALL = "n_parallel=2 max_seq_len=512 n_threads=1"

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"]}}}


def _instances(url: str) -> list[dict]:
    return httpx.get(url + "/list_loaded_models", timeout=10).json()


def _chat(url: str, model: str = "twin", **extra) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", timeout=120, json={
        "model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "Say hi."}], **extra})


@pytest.fixture(scope="module")
def fleet(gguf, ray_head, ray_env, logs):
    """Two instances of 'twin', each a Ray actor."""
    args = ["-id", f"model_id={gguf} model_name=twin {SMALL}", "-id", f"model_id={gguf} model_name=twin {SMALL}",
            "--ray-address", ray_head]
    with running_server(args, env=ray_env, log_path=logs / "ray-fleet.log", timeout=240) as url:
        wait_until(lambda: all(r["status"] == "ready" for r in _instances(url)), 120, "both replicas to load")
        yield url


def test_instances_are_ray_actors_and_the_front_loads_no_engine(fleet):
    rows = _instances(fleet)
    assert [r["model_name"] for r in rows] == ["twin", "twin"]
    assert all(r["status"] == "ready" and r["location"].startswith("ray node ") for r in rows)
    pids = {r["pid"] for r in rows}
    assert len(pids) == 2
    for pid in pids:  # Ray's worker processes, not children of the front, hosting the engine
        assert "ray" in Path(f"/proc/{pid}/cmdline").read_text()
        assert "xllamacpp" in Path(f"/proc/{pid}/maps").read_text()
    front = int(subprocess.run(["pgrep", "-f", "--", f"--port {fleet.rsplit(':', 1)[1]}"], capture_output=True,
                               text=True).stdout.split()[0])
    assert "xllamacpp" not in Path(f"/proc/{front}/maps").read_text()
    assert all(parent_pid(pid) != front for pid in pids)
    health = httpx.get(fleet + "/health").json()  # replica state and node, as a load balancer sees them
    assert health["status"] == "ok" and [i["status"] for i in health["instances"]] == ["ready", "ready"]
    assert {i["location"] for i in health["instances"]} == {r["location"] for r in rows}


def test_both_replicas_receive_load(fleet):
    before = {r["pid"]: r["served"] for r in _instances(fleet)}
    for _ in range(4):
        r = _chat(fleet)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    served = sorted(r["served"] - before[r["pid"]] for r in _instances(fleet))
    assert served == [2, 2]


def test_features_above_the_backend_seam_work_unchanged(fleet):
    client = openai.OpenAI(base_url=fleet + "/v1", api_key="x", max_retries=0, timeout=300)
    # a streamed chat
    stream = client.chat.completions.create(model="twin", max_tokens=12, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "Name a fruit."}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage.completion_tokens > 0
    # an enforced tool call
    answer = client.chat.completions.create(
        model="twin", max_tokens=60, tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[{"role": "user", "content": "What is the weather in Paris, in celsius?"}])
    call = answer.choices[0].message.tool_calls[0]
    arguments = json.loads(call.function.arguments)
    assert call.function.name == "get_weather" and arguments["unit"] in ("celsius", "fahrenheit")
    assert isinstance(arguments["city"], str)
    # format enforcement
    digits = client.chat.completions.create(model="twin", max_tokens=10, extra_body={"regex_pattern": "[0-9]{4}"},
                                            messages=[{"role": "user", "content": "A year?"}])
    assert len(digits.choices[0].message.content) == 4 and digits.choices[0].message.content.isdigit()
    # mixture of agents: both replicas draft, one aggregates
    single = client.chat.completions.create(model="twin", max_tokens=8, temperature=0,
                                            messages=[{"role": "user", "content": "Name a fruit."}])
    mixed = client.chat.completions.create(
        model="twin", max_tokens=8, temperature=0, messages=[{"role": "user", "content": "Name a fruit."}],
        extra_body={"mixture_of_agents": {"agents": ["twin", "twin"], "aggregator": "twin"}})
    assert mixed.choices[0].message.content and mixed.usage.prompt_tokens > 3 * single.usage.prompt_tokens


def test_a_killed_replica_comes_back_while_its_twin_serves(fleet):
    rows = _instances(fleet)
    victim = rows[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: any(r["status"] != "ready" for r in _instances(fleet)), 10, "the front to notice")
    restarting = next(r for r in _instances(fleet) if r["status"] != "ready")
    assert "Ray actor" in (restarting["error"] or "")
    for _ in range(3):  # new requests go to the live replica
        assert _chat(fleet).status_code == 200
    back = wait_until(lambda: [r for r in _instances(fleet) if r["status"] == "ready" and r["restarts"] == 1
                                and r["pid"] not in (victim, None)], 120, "the killed replica to come back")
    assert back[0]["location"].startswith("ray node ") and not process_alive(victim)
    assert all(_chat(fleet).status_code == 200 for _ in range(2))


def test_a_stream_whose_replica_dies_ends_with_an_error_event_then_done(fleet):
    wait_until(lambda: all(r["status"] == "ready" for r in _instances(fleet)), 120, "both replicas")
    body = {"model": "twin", "stream": True, "max_tokens": 300, "temperature": 0,
            "messages": [{"role": "user", "content": "List words."}], "regex_pattern": "(word ){300}"}
    lines: list[str] = []
    with httpx.stream("POST", fleet + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                lines.append(line[6:])
                if len(lines) == 5:
                    busy = next(row for row in _instances(fleet) if row["active"])
                    os.kill(busy["pid"], signal.SIGKILL)
    assert lines[-1] == "[DONE]"
    error = json.loads(lines[-2])["error"]
    assert error["type"] == "service_unavailable" and "Ray actor" in error["message"]
    wait_until(lambda: all(r["status"] == "ready" for r in _instances(fleet)), 120, "the replica to come back")


def test_removing_a_model_deletes_its_actors(fleet, gguf, named_actors):
    r = httpx.post(fleet + "/add_model", json={"model_id": gguf, "model_name": "extra", "n_parallel": 1,
                                               "max_seq_len": 256, "n_threads": 1})
    assert r.status_code == 200
    wait_until(lambda: any(x["model_name"] == "extra" and x["status"] == "ready" for x in _instances(fleet)), 120,
                "the added model to load")
    assert any(name.startswith("gallama:extra:") for name in named_actors())
    assert _chat(fleet, "extra").status_code == 200
    assert httpx.post(fleet + "/remove_model", json={"model_name": "extra"}).json()["instances"] == 1
    wait_until(lambda: not any(n.startswith("gallama:extra:") for n in named_actors()), 30,
                "the removed model's actor to go")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_the_front_leaves_no_actor_behind(gguf, ray_head, ray_env, logs, named_actors, how):
    process, url = start_server(["-id", f"model_id={gguf} model_name=brief {SMALL}", "--ray-address", ray_head],
                                env={**ray_env, "GALLAMA_HOME_PATH": os.environ.get("GALLAMA_HOME_PATH", "")},
                                log_path=logs / f"ray-brief-{how.name}.log", timeout=240)
    try:
        row = wait_until(lambda: next((r for r in _instances(url) if r["status"] == "ready"), None), 120, "load")
        assert any(n.startswith("gallama:brief:") for n in named_actors())
    finally:
        process.send_signal(how)
        process.wait(timeout=60)
    wait_until(lambda: not any(n.startswith("gallama:brief:") for n in named_actors()), 60,
                "the front's actors to be removed")
    wait_until(lambda: not process_alive(row["pid"]), 30, "the actor's process to exit")
