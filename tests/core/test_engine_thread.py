"""The engine thread shared by the ExLlama backends (gallama_core.models.engine_thread), over a fake generator."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gallama_core.models.engine_thread import EngineLoop
from gallama_core.errors import GallamaError


class Job:
    def __init__(self, steps: int):
        self.steps, self.done = steps, 0


class StepGenerator:
    """ExLlama-shaped: enqueue / cancel / iterate, one result per job per step, ``pause`` seconds a step."""

    def __init__(self, pause: float = 0.0, fail_at: int | None = None):
        self.jobs: list[Job] = []
        self.pause, self.fail_at, self.steps = pause, fail_at, 0
        self.cancelled: list[Job] = []
        self.threads: set[threading.Thread] = set()

    def enqueue(self, job: Job) -> None:
        self.jobs.append(job)

    def cancel(self, job: Job) -> None:
        self.jobs.remove(job)
        self.cancelled.append(job)

    def iterate(self) -> list[dict]:
        self.threads.add(threading.current_thread())
        self.steps += 1
        if self.fail_at is not None and self.steps >= self.fail_at:
            raise RuntimeError("CUDA error: out of memory")
        time.sleep(self.pause)
        out = []
        for job in list(self.jobs):
            job.done += 1
            eos = job.done >= job.steps
            out.append({"job": job, "stage": "streaming", "text": str(job.done % 10), "eos": eos,
                        "eos_reason": "max_new_tokens" if eos else None, "new_tokens": job.done})
            if eos:
                self.jobs.remove(job)
        return out


async def collect(engine: EngineLoop, job: Job) -> list:
    return [chunk async for chunk in engine.stream(job, 3, "Fake")]


async def test_results_that_pile_up_share_one_wake_up_and_one_chunk():
    """While the event loop is busy, the engine's later steps ride on the pending wake-up: 10 steps, 1 wake-up."""
    gen = StepGenerator(pause=0.002)
    engine = EngineLoop(gen, "fake")
    try:
        job = Job(10)
        stream = engine.stream(job, 3, "Fake")
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)  # submit; the hand-over runs at the end of this pass
        await asyncio.sleep(0)
        deadline = time.monotonic() + 30
        while engine.iterations < 10 and time.monotonic() < deadline:
            time.sleep(0.01)  # the loop is busy (blocked) while the engine runs all 10 steps
        chunk = await first
        rest = [c async for c in stream]
        assert rest == []
        assert chunk.text == "1234567890" and chunk.finish_reason == "length" and chunk.completion_tokens == 10
        assert engine.iterations == 10 and engine.wakeups == 1
        assert threading.current_thread() not in gen.threads
    finally:
        engine.close()


async def test_a_free_loop_gets_every_step_as_it_comes():
    gen = StepGenerator(pause=0.05)
    engine = EngineLoop(gen, "fake")
    try:
        chunks = await collect(engine, Job(5))
        assert "".join(c.text for c in chunks) == "12345"
        assert len(chunks) >= 3  # streamed as the steps come, not all at the end
        assert chunks[-1].finish_reason == "length" and chunks[-1].prompt_tokens == 3
    finally:
        engine.close()


async def test_concurrent_jobs_each_get_their_own_text():
    gen = StepGenerator(pause=0.001)
    engine = EngineLoop(gen, "fake")
    try:
        results = await asyncio.gather(*(collect(engine, Job(n)) for n in (3, 7, 12)))
        texts = ["".join(c.text for c in chunks) for chunks in results]
        assert texts == ["123", "1234567", "123456789012"]
        assert engine.active_jobs == 0
    finally:
        engine.close()


async def test_closing_the_stream_early_cancels_the_job():
    gen = StepGenerator(pause=0.005)
    engine = EngineLoop(gen, "fake")
    try:
        job = Job(10**6)
        stream = engine.stream(job, 3, "Fake")
        await stream.__anext__()
        await stream.aclose()
        for _ in range(200):
            if gen.cancelled:
                break
            await asyncio.sleep(0.01)
        assert gen.cancelled == [job] and gen.jobs == []
    finally:
        engine.close()


async def test_a_failing_generator_fails_its_jobs_and_refuses_new_ones():
    gen = StepGenerator(fail_at=3)
    engine = EngineLoop(gen, "fake")
    try:
        with pytest.raises(GallamaError, match="out of memory"):
            await collect(engine, Job(10))
        with pytest.raises(RuntimeError, match="not running"):
            await collect(engine, Job(1))
    finally:
        engine.close()


async def test_closing_the_engine_ends_waiting_streams():
    gen = StepGenerator(pause=0.005)
    engine = EngineLoop(gen, "fake")
    stream = engine.stream(Job(10**6), 3, "Fake")
    await stream.__anext__()
    await asyncio.to_thread(engine.close)
    with pytest.raises(GallamaError, match="unloaded"):
        async for _ in stream:
            pass



def test_an_outbox_whose_loop_closed_with_a_wake_up_pending_drops_results():
    """The loop closed before running the pending drain: later results are dropped, not kept forever."""
    from gallama_core.models.engine_thread import JobSink, Outbox

    loop = asyncio.new_event_loop()
    box = Outbox(loop)
    sink = JobSink(loop)
    assert box.post([(sink, {"text": "a"})]) == "woke"
    assert box.post([(sink, {"text": "b"})]) == "queued"  # rides on the pending wake-up
    loop.close()  # the drain never ran
    assert box.post([(sink, {"text": "c"})]) == "closed"
    assert box.items == [] and sink.items == []
