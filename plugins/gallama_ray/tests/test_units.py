"""The launcher's placement rules and the Ray channel's framing, without a cluster."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from gallama_core.models.settings import ModelSettings
from gallama_core.workers.protocol import new_unpacker, pack
from gallama_ray.channel import ActorSideChannel
from gallama_ray.launcher import actor_options
from gallama_ray.settings import RaySection


def test_gpus_become_ray_gpus_and_the_worker_sees_them_from_zero():
    settings = ModelSettings(model_id="m", model_name="big", gpus=[0, 20, 10], backend="exllamav3")
    options, compacted = actor_options(settings, RaySection())
    assert options["num_gpus"] == 2 and options["num_cpus"] == 1
    assert compacted == {"gpus": [20.0, 10.0]}
    assert "runtime_env" not in options and options["max_restarts"] == 3


def test_per_model_placement_and_the_python_key():
    section = RaySection.model_validate({
        "runtime_env": {"env_vars": {"A": "1"}},
        "models": {"emb": {"num_cpus": 2, "num_gpus": 0.5, "resources": {"h200": 1},
                           "runtime_env": {"env_vars": {"B": "2"}}}}})
    settings = ModelSettings(model_id="m", model_name="emb", python="/opt/venvs/embed/bin/python")
    options, compacted = actor_options(settings, section)
    assert options["num_cpus"] == 2 and options["num_gpus"] == 0.5 and options["resources"] == {"h200": 1}
    assert options["runtime_env"] == {"env_vars": {"B": "2"}, "py_executable": "/opt/venvs/embed/bin/python"}
    assert compacted == {}
    other, _ = actor_options(ModelSettings(model_id="m", model_name="chat"), section)
    assert other["num_gpus"] == 0 and other["runtime_env"] == {"env_vars": {"A": "1"}}


def test_the_section_refuses_unknown_keys_and_bad_counts():
    with pytest.raises(Exception, match="adress"):
        RaySection.model_validate({"adress": "auto"})
    with pytest.raises(Exception, match="num_gpus"):
        RaySection.model_validate({"models": {"m": {"num_gpus": -1}}})


def test_without_an_address_the_plugin_imports_no_ray():
    script = ("import sys, types; from gallama_ray import plugin; from gallama_ray.settings import RaySection; "
              "state = types.SimpleNamespace(plugin_config={'ray': RaySection()}, log_level='info'); "
              "assert plugin.gallama_worker_launcher(state) is None; "
              "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray imported'; "
              "print('ok')")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "GALLAMA_HOME_PATH": "/nonexistent"})
    assert out.stdout.strip() == "ok", out.stderr


def test_ray_address_without_the_plugin_is_a_clear_error(tmp_path):
    out = subprocess.run([sys.executable, "-c", "from gallama_core.cli import main; main()", "run", "--ray-address",
                          "auto", "--port", "1"], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "GALLAMA_HOME_PATH": str(tmp_path), "GALLAMA_PLUGINS": "llama_cpp",
                              "COLUMNS": "200"})
    assert out.returncode == 2
    assert "pip install gallama-ray" in out.stdout + out.stderr


async def test_actor_side_channel_restores_order_and_merges_unread_output():
    channel = ActorSideChannel()
    first, second = pack({"t": "generate", "id": 1}), pack({"t": "cancel", "id": 1})
    channel.feed(1, second)  # arrives first: held until seq 0
    channel.feed(0, first)
    received = []
    async for message in channel:
        received.append(message)
        if len(received) == 2:
            break
    assert [m["t"] for m in received] == ["generate", "cancel"]

    for i in range(5):  # written while nobody reads: one item holds them all
        channel.send_nowait({"t": "chunks", "n": i})
    stream = channel.outgoing()
    data = await anext(stream)
    unpacker = new_unpacker()
    unpacker.feed(data)
    assert [m["n"] for m in unpacker] == [0, 1, 2, 3, 4]
    drained = asyncio.ensure_future(channel.drain())
    await asyncio.sleep(0)
    channel.close()
    assert await anext(stream, None) is None
    await drained


async def test_actor_side_channel_takes_writes_from_another_thread_in_order():
    """The engine thread writes each step itself (``send_packed``), the loop its control messages; the events
    stream carries both, each writer's in its order, and what piled up while the loop was busy as one item."""
    import threading

    channel = ActorSideChannel()

    def engine_thread(first, last):
        for i in range(first, last):
            channel.send_packed(pack({"t": "chunks", "i": i}) + (pack({"t": "end", "i": i}) if i % 50 == 49 else b""))

    stream = channel.outgoing()
    thread = threading.Thread(target=engine_thread, args=(0, 100))
    thread.start()
    thread.join()  # the loop is blocked meanwhile: 100 steps pile up
    channel.send_nowait({"t": "pong", "i": -1})
    unpacker = new_unpacker()
    unpacker.feed(await asyncio.wait_for(anext(stream), 5))
    got = list(unpacker)
    assert len(got) == 103  # all in one item

    thread = threading.Thread(target=engine_thread, args=(100, 200))  # now while the loop reads
    thread.start()
    while len(got) < 205:
        unpacker.feed(await asyncio.wait_for(anext(stream), 5))
        got.extend(unpacker)
    thread.join()
    assert [m["i"] for m in got if m["t"] == "chunks"] == list(range(200))
    assert [m["i"] for m in got if m["t"] == "end"] == [49, 99, 149, 199]
    ends = [n for n, m in enumerate(got) if m["t"] == "end"]
    assert all(got[n - 1] == {"t": "chunks", "i": got[n]["i"]} for n in ends)  # a job's end right after its chunks
    channel.close()
    assert await anext(stream, None) is None


async def test_a_worker_on_a_ray_actor_streams_an_engine_thread_backend_through_generate_into():
    from gallama_core.models.backend import Backend, GenerationRequest
    from gallama_core.models.engine_thread import EngineLoop
    from gallama_core.testing import Job, StepGenerator
    from gallama_core.workers.protocol import request_to_wire
    from gallama_core.workers.server import WorkerService

    class Threaded(Backend):
        def __init__(self):
            super().__init__("threaded", "m", 1024, None)
            self.engine = EngineLoop(StepGenerator(pause=0.001), "threaded")

        async def generate(self, request):
            raise AssertionError("an engine-thread backend streams through generate_into")
            yield  # pragma: no cover

        def generate_into(self, request, target, key):
            return self.engine.start(Job(request.max_tokens), 3, "threaded", target, key)

    backend, channel = Threaded(), ActorSideChannel()
    service = WorkerService(backend, channel)
    assert service.direct is not None  # the actor's channel takes the engine thread's writes
    inbox: asyncio.Queue = asyncio.Queue()
    serving = asyncio.ensure_future(service.serve(inbox))
    for job_id, tokens in ((1, 4), (2, 12)):
        inbox.put_nowait({"t": "generate", "id": job_id,
                          "request": request_to_wire(GenerationRequest(prompt="x", max_tokens=tokens))})
    unpacker, text, ended = new_unpacker(), {1: "", 2: ""}, set()
    stream = channel.outgoing()
    while ended != {1, 2}:
        unpacker.feed(await asyncio.wait_for(anext(stream), 5))
        for message in unpacker:
            if message["t"] == "chunks":
                for job_id, chunks in message["jobs"]:
                    text[job_id] += "".join(chunk.get("text", "") for chunk in chunks)
            elif message["t"] == "end":
                ended.add(message["id"])
    assert text == {1: "1234", 2: "123456789012"}
    assert backend.engine.wakeups == 0  # no event-loop pass per step
    inbox.put_nowait({"t": "shutdown"})
    await asyncio.wait_for(serving, 5)
    channel.close()
    await asyncio.to_thread(backend.engine.close)
