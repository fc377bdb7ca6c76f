"""The engine thread shared by the ExLlama backends (gallama_core.models.engine_thread), over a fake generator."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from gallama_core.testing import Job, StepGenerator

from gallama_core.models.engine_thread import EngineLoop
from gallama_core.errors import GallamaError


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
        # submitted in one pass, so started together: 12 steps advanced 3 + 7 + 12 jobs
        stats = engine.stats()
        assert stats["steps"] == 12 and stats["job_steps"] == 22
        assert stats["step_seconds"] >= 12 * 0.001 and stats["delivery_seconds"] > 0
        assert stats["admissions"] == 1  # the three jobs went into the generator together
        assert stats["jobs"] == 3 and stats["first_tokens"] == 3
        assert 0 <= stats["queue_seconds"] <= stats["first_token_seconds"]
        assert stats["first_token_seconds"] >= 3 * 0.001  # each waited at least its first step
    finally:
        engine.close()


async def test_a_job_arriving_during_a_step_waits_for_its_end_and_the_counters_show_it():
    gen = StepGenerator(pause=0.08)
    engine = EngineLoop(gen, "fake")
    try:
        first = asyncio.ensure_future(collect(engine, Job(3)))
        await asyncio.sleep(0.03)  # the first job's first step (80 ms) is running
        await collect(engine, Job(2))
        await first
        stats = engine.stats()
        assert stats["jobs"] == 2 and stats["first_tokens"] == 2 and stats["admissions"] == 2
        # the second job waited for the rest of that step before it was enqueued, then for a step of its own
        assert stats["queue_seconds"] >= 0.01
        assert stats["first_token_seconds"] >= stats["queue_seconds"] + 2 * 0.08
    finally:
        engine.close()


async def test_jobs_arriving_between_steps_are_counted_as_separate_admissions():
    gen = StepGenerator(pause=0.01)
    engine = EngineLoop(gen, "fake")
    try:
        first = asyncio.ensure_future(collect(engine, Job(20)))
        await asyncio.sleep(0.05)  # the first job is stepping when the next two arrive, together
        rest = [asyncio.ensure_future(collect(engine, Job(3))) for _ in range(2)]
        await asyncio.gather(first, *rest)
        assert engine.stats()["admissions"] == 2
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


class Steps:
    """A StepTarget that records each post (one per engine step) and the thread it came from."""

    def __init__(self):
        self.posts, self.threads = [], set()
        self.ended = threading.Event()

    def post(self, deliveries):
        self.threads.add(threading.current_thread())
        self.posts.append(deliveries)
        if any(item is None or isinstance(item, BaseException) for _, item in deliveries):
            self.ended.set()

    def of(self, key):
        return [item for post in self.posts for k, item in post if k == key]


async def test_start_hands_each_step_of_every_job_to_the_target_on_the_engine_thread():
    gen = StepGenerator(pause=0.002)
    engine = EngineLoop(gen, "fake")
    steps = Steps()
    try:
        engine.start(Job(3), 7, "Fake", steps, "a")
        engine.start(Job(3), 7, "Fake", steps, "b")  # submitted in the same pass: started together
        assert await asyncio.to_thread(steps.ended.wait, 10)
        for key in ("a", "b"):
            items = steps.of(key)
            assert items[-1] is None and "".join(c.text for c in items[:-1]) == "123"
            assert items[-2].finish_reason == "length" and items[-2].prompt_tokens == 7
        assert len(steps.posts) == 3 and all(len(post) >= 2 for post in steps.posts)  # one post a step, both jobs
        assert steps.threads == gen.threads and threading.current_thread() not in steps.threads
        assert engine.wakeups == 0  # the event loop was never woken for them
    finally:
        engine.close()


async def started_endless_job(key):
    """An engine running one endless job started with ``start``, once its first step was delivered."""
    gen, steps, job = StepGenerator(pause=0.005), Steps(), Job(10**6)
    engine = EngineLoop(gen, "fake")
    cancel = engine.start(job, 3, "Fake", steps, key)
    while not steps.posts:
        await asyncio.sleep(0.005)
    return gen, engine, steps, job, cancel


async def test_start_cancels_and_reports_failures():
    gen, engine, steps, job, cancel = await started_endless_job(1)
    try:
        cancel()
        for _ in range(200):
            if gen.cancelled:
                break
            await asyncio.sleep(0.01)
        count = len(steps.of(1))
        await asyncio.sleep(0.05)
        assert gen.cancelled == [job] and gen.jobs == [] and len(steps.of(1)) == count  # nothing after cancel()
        assert None not in steps.of(1)
    finally:
        engine.close()

    failing = EngineLoop(StepGenerator(fail_at=3), "fake")
    steps = Steps()
    try:
        failing.start(Job(10), 3, "Fake", steps, 2)
        assert await asyncio.to_thread(steps.ended.wait, 10)
        error = steps.of(2)[-1]
        assert isinstance(error, GallamaError) and "out of memory" in str(error)
        assert isinstance(error.__cause__, RuntimeError)
        refused = Steps()
        with pytest.raises(RuntimeError, match="not running"):
            failing.start(Job(1), 3, "Fake", refused, 3)
    finally:
        failing.close()


async def test_closing_the_engine_ends_started_jobs():
    _, engine, steps, _, _ = await started_endless_job("x")
    await asyncio.to_thread(engine.close)
    assert isinstance(steps.of("x")[-1], GallamaError) and "unloaded" in str(steps.of("x")[-1])
