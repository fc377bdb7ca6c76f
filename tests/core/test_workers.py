"""The front ⇄ engine-worker protocol, the worker service and RemoteBackend, over a real socket pair (the
worker side runs in this process with the echo backend; tests/e2e/test_workers.py covers real processes)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from fake_backend import EchoBackend

from gallama_core.errors import InvalidRequestError
from gallama_core.models.backend import GenerationRequest
from gallama_core.models.settings import ModelSettings
from gallama_core.plugin_system.registrations import LoadProgress
from gallama_core.workers import protocol
from gallama_core.workers.client import WorkerConnection, WorkerLoadError, WorkerLost, RemoteBackend
from gallama_core.workers.launcher import gpu_placement
from gallama_core.workers.server import Outbox, run_worker


class Recorder(EchoBackend):
    remote_methods = ("shout",)

    def __init__(self, settings):
        super().__init__(settings)
        self.colour = "blue"
        self.cancelled = asyncio.Event()

    async def shout(self, text, times):
        return {"text": text.upper() * times, "pair": (1, 2)}

    async def generate(self, request):
        if request.prompt == "forever":
            try:
                while True:
                    await asyncio.sleep(0.01)
                    yield type(self).chunk("x")
            finally:
                self.cancelled.set()
        else:
            async for chunk in super().generate(request):
                yield chunk

    @staticmethod
    def chunk(text):
        from gallama_core.models.backend import GenerationChunk

        return GenerationChunk(text=text)


async def _pair(loader):
    """A worker (run_worker in a task) and the front's connection to it."""
    front, worker = socket.socketpair()
    worker_channel = await protocol.Channel.open(worker)
    task = asyncio.create_task(run_worker(worker_channel, loader))
    connection = WorkerConnection(await protocol.Channel.open(front), "m")
    return connection, task


async def _ready(loader=None):
    backends = []

    def load(name, settings, progress):
        progress.update("half", 0.5)
        backend = Recorder(ModelSettings(model_id=settings["model_id"]))
        backends.append(backend)
        return backend

    connection, task = await _pair(loader or load)
    seen = []
    meta = await connection.handshake({"backend": "echo", "settings": {"model_id": "m"}},
                                      LoadProgress(lambda m, f: seen.append((m, f))))
    return connection, task, meta, backends, seen


async def test_handshake_carries_metadata_and_progress():
    connection, task, meta, backends, seen = await _ready()
    assert seen == [("half", 0.5)]
    assert meta["model_name"] == "m" and meta["kind"] == "chat" and meta["max_seq_len"] == 64
    assert meta["chat_template"]["source"].startswith("{% for message")
    assert meta["attributes"]["colour"] == "blue"
    assert meta["methods"] == ["shout"]
    await connection.shutdown()
    assert await asyncio.wait_for(task, 5) == 0


async def test_remote_backend_streams_calls_and_reads_attributes():
    connection, task, meta, backends, _ = await _ready()
    remote = RemoteBackend(connection, meta)
    chunks = [c async for c in remote.generate(GenerationRequest(prompt="one two three"))]
    assert "".join(c.text for c in chunks) == "one two three"
    assert chunks[-1].finish_reason == "stop" and chunks[-1].completion_tokens == 3
    assert remote.colour == "blue" and remote.chat_template is not None
    assert await remote.shout("ab", 2) == {"text": "ABAB", "pair": [1, 2]}
    with pytest.raises(AttributeError):
        remote.nothing_here
    await remote.ping()
    assert remote.engine_stats() is None  # an engine without batched steps has no counters
    await remote.close()
    assert await asyncio.wait_for(task, 5) == 0


async def test_errors_before_the_first_chunk_keep_their_status():
    connection, task, meta, _, _ = await _ready()
    remote = RemoteBackend(connection, meta)
    with pytest.raises(InvalidRequestError) as info:
        async for _ in remote.generate(GenerationRequest(prompt="TOO LONG")):
            pass
    assert info.value.status_code == 400 and info.value.code == "context_length_exceeded"
    await remote.close()
    await task


async def test_closing_the_stream_cancels_the_job_in_the_worker():
    connection, task, meta, backends, _ = await _ready()
    remote = RemoteBackend(connection, meta)
    stream = remote.generate(GenerationRequest(prompt="forever"))
    assert (await anext(stream)).text.startswith("x")
    await stream.aclose()
    await asyncio.wait_for(backends[0].cancelled.wait(), 5)
    await remote.close()
    await task


async def test_a_lost_worker_fails_open_streams_and_new_requests():
    connection, task, meta, _, _ = await _ready()
    remote = RemoteBackend(connection, meta)
    stream = remote.generate(GenerationRequest(prompt="forever"))
    await anext(stream)
    task.cancel()  # the worker side vanishes: its socket closes
    connection.abort("the engine worker was killed by SIGKILL")
    with pytest.raises(WorkerLost) as info:
        while True:
            await anext(stream)
    assert info.value.status_code == 503 and "SIGKILL" in info.value.message
    with pytest.raises(WorkerLost):
        await anext(remote.generate(GenerationRequest(prompt="x")))


async def test_load_failure_reports_the_workers_own_text():
    def load(name, settings, progress):
        raise FileNotFoundError("GGUF file not found: /nowhere.gguf")

    connection, task = await _pair(load)
    with pytest.raises(WorkerLoadError, match="GGUF file not found: /nowhere.gguf"):
        await connection.handshake({"backend": "echo", "settings": {}}, LoadProgress())
    assert await task == 1


async def test_outbox_merges_what_piles_up_into_one_message():
    sent = []

    class FakeChannel:
        def send_nowait(self, message):
            sent.append(message)

        async def drain(self):
            pass

    outbox = Outbox(FakeChannel())
    for i in range(10):  # produced while the writer had no chance to run (the front is behind)
        outbox.chunk(7, {"text": str(i)})
    outbox.chunk(7, {"text": "", "finish_reason": "stop", "completion_tokens": 11})
    outbox.control({"t": "end", "id": 7})
    writer = asyncio.create_task(outbox.run())
    await asyncio.sleep(0.01)
    writer.cancel()
    assert sent[0] == {"t": "chunks", "jobs": [[7, [{"text": "0123456789", "finish_reason": "stop",
                                                      "completion_tokens": 11}]]]}
    assert sent[1] == {"t": "end", "id": 7} and len(sent) == 2


def test_merge_keeps_a_finished_chunk_last_of_its_group():
    merged = protocol.merge_wire_chunks([{"text": "a"}, {"text": "b", "finish_reason": "stop"}, {"text": "c"}])
    assert merged == [{"text": "ab", "finish_reason": "stop"}, {"text": "c"}]


def test_requests_and_errors_round_trip():
    request = GenerationRequest(prompt="p", max_tokens=3, stop=["x"], grammar="start: /a/")
    request.sampling.temperature = 0.5
    back = protocol.request_from_wire(protocol.request_to_wire(request) | {"future_field": 1})
    assert back == request
    error = protocol.error_from_wire(protocol.error_to_wire(InvalidRequestError("bad", param="messages", code="c")))
    assert (error.status_code, error.error_type, error.param, error.code) == (400, "invalid_request_error",
                                                                              "messages", "c")
    assert protocol.error_to_wire(RuntimeError("boom"))["status"] == 500


@pytest.mark.parametrize("gpus, draft, parent, devices, placed", [
    (None, None, None, None, {}),
    ([20, 15, 0], None, None, "0,1", {"gpus": [20, 15]}),
    ([0, 20], None, None, "1", {"gpus": [20]}),
    ([0, 20], None, "4,6", "6", {"gpus": [20]}),
    ([0, 0, 10], [0, 5, 0], None, "1,2", {"gpus": [0, 10], "draft_gpus": [5, 0]}),
])
def test_gpu_placement(gpus, draft, parent, devices, placed):
    settings = ModelSettings(model_id="m", gpus=gpus, draft_gpus=draft)
    assert gpu_placement(settings, parent) == (devices, placed)


def test_gpu_placement_beyond_the_visible_gpus_is_an_error():
    with pytest.raises(WorkerLoadError, match="CUDA_VISIBLE_DEVICES=3"):
        gpu_placement(ModelSettings(model_id="m", gpus=[0, 10]), "3")


async def test_backend_attributes_override_the_backend_class_defaults():
    """``concurrency`` and ``special_tokens`` have class-level defaults on Backend: the worker's values must win."""
    def load(name, settings, progress):
        backend = Recorder(ModelSettings(model_id="m"))
        backend.concurrency, backend.special_tokens = 6, ["<|im_end|>"]
        return backend

    connection, task, meta, _, _ = await _ready(load)
    remote = RemoteBackend(connection, meta)
    assert remote.concurrency == 6 and remote.special_tokens == ["<|im_end|>"]
    await remote.close()
    await task


class Threaded(EchoBackend):
    """An engine-thread backend, as the ExLlama ones: the worker must stream through ``generate_into``."""

    def __init__(self, settings):
        super().__init__(settings)
        from gallama_core.models.engine_thread import EngineLoop
        from gallama_core.testing import StepGenerator

        self.gen = StepGenerator(pause=0.002)
        self.engine = EngineLoop(self.gen, "threaded")

    def engine_stats(self):
        return self.engine.stats()

    async def generate(self, request):
        raise AssertionError("the worker streams through generate_into")
        yield  # pragma: no cover

    def generate_into(self, request, target, key):
        from gallama_core.testing import Job

        if "TOO LONG" in request.prompt:
            raise InvalidRequestError("the prompt is too long", code="context_length_exceeded")
        return self.engine.start(Job(request.max_tokens), 5, "Threaded", target, key)

    async def close(self):
        await asyncio.to_thread(self.engine.close)


async def _collect(remote, request):
    return [chunk async for chunk in remote.generate(request)]


async def test_a_backend_with_generate_into_streams_cancels_and_fails_through_the_worker():
    backends = []

    def load(name, settings, progress):
        backends.append(Threaded(ModelSettings(model_id="m")))
        return backends[0]

    connection, task, meta, _, _ = await _ready(load)
    assert "generate_into" not in meta["attributes"]
    remote = RemoteBackend(connection, meta)
    results = await asyncio.gather(*(_collect(remote, GenerationRequest(prompt="x", max_tokens=n)) for n in (3, 12)))
    assert ["".join(c.text for c in chunks) for chunks in results] == ["123", "123456789012"]
    assert [chunks[-1].finish_reason for chunks in results] == ["length", "length"]
    assert results[1][-1].completion_tokens == 12 and results[1][-1].prompt_tokens == 5
    assert backends[0].engine.wakeups == 0  # the worker's event loop was not woken per step
    assert remote.engine_stats() is None  # not asked yet
    await remote.ping()  # the answer carries the engine's counters
    stats = remote.engine_stats()
    assert stats["job_steps"] == 3 + 12 and 12 <= stats["steps"] <= 13
    assert stats["step_seconds"] >= 12 * 0.002 and stats["delivery_seconds"] > 0  # each step sleeps 2 ms

    with pytest.raises(InvalidRequestError) as info:
        await _collect(remote, GenerationRequest(prompt="TOO LONG", max_tokens=3))
    assert info.value.code == "context_length_exceeded"

    stream = remote.generate(GenerationRequest(prompt="x", max_tokens=10**6))
    await anext(stream)
    await stream.aclose()  # the front's cancel reaches the engine: the job is cancelled, its slot freed
    for _ in range(200):
        if backends[0].gen.cancelled:
            break
        await asyncio.sleep(0.01)
    assert len(backends[0].gen.cancelled) == 1 and backends[0].gen.jobs == []
    await remote.close()
    assert await asyncio.wait_for(task, 5) == 0


async def test_streams_open_when_the_front_stops_a_worker_end_with_the_unload_not_its_exit_code():
    """A worker told to stop cancels its jobs silently and exits with 0: the open streams say the model is being
    unloaded (the front's own doing), not that the worker exited."""
    front, worker = socket.socketpair()
    worker_channel = await protocol.Channel.open(worker)
    task = asyncio.create_task(run_worker(worker_channel, lambda *_: Threaded(ModelSettings(model_id="m"))))
    connection = WorkerConnection(await protocol.Channel.open(front), "m")
    meta = await connection.handshake({"backend": "echo", "settings": {"model_id": "m"}}, LoadProgress())

    async def exit_code_zero():
        return "the engine worker (pid 1) exited with code 0"

    connection.explain_loss = exit_code_zero
    remote = RemoteBackend(connection, meta)
    stream = remote.generate(GenerationRequest(prompt="x", max_tokens=10**6))
    await anext(stream)
    await remote.close()
    assert await asyncio.wait_for(task, 5) == 0
    worker_channel.close()  # as the worker process's exit closes its end
    with pytest.raises(WorkerLost, match="being unloaded"):
        async for _ in stream:
            pass


class EndsAtOnce(EchoBackend):
    """A backend whose engine ends a job before ``generate_into`` has returned (llama.cpp refusing a prompt)."""

    def generate_into(self, request, target, key):
        target.post([(key, InvalidRequestError("refused at once"))] if "REFUSE" in request.prompt
                    else [(key, None)])
        return lambda: None


async def test_a_job_that_ends_before_generate_into_returns_leaves_no_cancel_function_behind():
    from gallama_core.workers.server import WorkerService

    front, worker = socket.socketpair()
    channel = await protocol.Channel.open(worker)
    reader = await protocol.Channel.open(front)
    service = WorkerService(EndsAtOnce(ModelSettings(model_id="m")), channel)
    service._start(1, protocol.request_to_wire(GenerationRequest(prompt="x")))
    service._start(2, protocol.request_to_wire(GenerationRequest(prompt="REFUSE")))
    assert service.direct == {}  # both ended: nothing to cancel on shutdown, nothing kept per finished job
    got = []
    async for message in reader:
        got.append(message)
        if len(got) == 2:
            break
    assert [m["t"] for m in got] == ["end", "error"] and got[1]["error"]["message"] == "refused at once"
    channel.close()
    reader.close()


async def _writer_scenario():
    """Messages written from another thread while the socket is full wait, in order, and all arrive whole."""
    import threading

    front, worker = socket.socketpair()
    worker.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    channel = await protocol.Channel.open(worker)
    reader = await protocol.Channel.open(front)
    big = "x" * 300_000  # far more than the socket holds: most of it waits for the loop to send

    def from_a_thread():
        for i in range(20):
            channel.send_packed(protocol.pack({"t": "n", "i": i, "pad": big if i % 5 == 0 else ""}))

    thread = threading.Thread(target=from_a_thread)
    thread.start()
    channel.send_nowait({"t": "n", "i": -1, "pad": ""})
    got = []

    async def read_all():
        async for message in reader:
            got.append(message)
            if len(got) == 21:
                return

    await asyncio.wait_for(read_all(), 10)
    thread.join()
    await asyncio.wait_for(channel.drain(), 5)
    channel.close()
    reader.close()
    return got


def _check_writer_order(got):
    from_thread = [m["i"] for m in got if m["i"] >= 0]
    assert from_thread == list(range(20)) and len(got) == 21
    assert all(len(m["pad"]) == (300_000 if m["i"] >= 0 and m["i"] % 5 == 0 else 0) for m in got)


async def test_socket_writer_keeps_order_across_threads_and_a_full_socket():
    _check_writer_order(await _writer_scenario())


def test_socket_writer_on_uvloop():
    """The engine worker runs on uvloop where it is installed (gallama-core depends on it)."""
    uvloop = pytest.importorskip("uvloop")
    _check_writer_order(uvloop.run(_writer_scenario()))
