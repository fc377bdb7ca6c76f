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
