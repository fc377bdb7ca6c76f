"""Drive a synchronous generator (ExLlama style: ``enqueue`` / ``cancel`` / ``iterate``) from one engine thread.

ExLlama's own async wrappers run ``generator.iterate()`` on the event loop, which blocks the server's loop
(HTTP, SSE encoding) for every forward pass. Here one daemon thread owns the generator: requests hand jobs
in and cancellations over through a lock-protected inbox, applied between iterations (the generator is not
thread-safe), and each iteration's results go to a per-event-loop outbox. The engine thread wakes an event
loop (``call_soon_threadsafe``) only when that loop has drained its outbox since the last wake-up: while the
loop is busy, later steps' results pile up in the outbox and are delivered by the same wake-up. Every
wake-up costs both threads GIL hand-overs, and the engine's per-step Python (ExLlama samples and detokenizes
in Python) is the bottleneck at small batches, so fewer hand-overs is speed.

A consumer in another process (the engine worker's front) needs no event loop per token at all: ``start()``
hands a job's results to a :class:`StepTarget` on the engine thread itself, once per step for all of that
target's jobs, so the worker writes one message per step from there. Any Python that another thread of the
process runs per step is time the engine thread waits for the GIL (measured with a stand-in engine that does a
fixed amount of work per step: 0.88x a plain loop at batch 64 through the worker's event loop).

Jobs submitted during one pass of the event loop (e.g. a burst of concurrent requests) are handed to the
engine thread together at the end of that pass: the generator then starts them in one batched prefill
instead of admitting them one by one between decode steps (measured: 0.34x the raw generator's throughput
at batch 32 with ExLlamaV3 when each job was handed over on its own).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, AsyncIterator, Callable, Hashable, Protocol

from gallama_core.models.backend import GenerationChunk
from gallama_core.errors import GallamaError

log = logging.getLogger("gallama.engine")

#: Pushed to a job's sink when the engine died or closed: the consumer raises instead of waiting forever.
ENGINE_GONE = "engine-gone"


class JobSink:
    """Where one job's results go, on the event loop that asked for the job: a list and at most one waiter
    (lighter than an ``asyncio.Queue``; this runs once per job and token). ``route``: where the engine thread
    sends them (that loop's outbox)."""

    __slots__ = ("loop", "route", "items", "waiter", "submitted")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = self.route = loop
        self.items: list = []
        self.waiter: asyncio.Future | None = None
        self.submitted: float | None = None  # when the job was submitted, until its first token

    def push(self, item: Any) -> None:
        """Event loop only."""
        self.items.append(item)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def take(self) -> list:
        """Everything that arrived since the last call, waiting for at least one item."""
        while not self.items:
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        items, self.items = self.items, []
        return items


#: What a :class:`StepTarget` receives for a job: a chunk, ``None`` after its last chunk, or the error that ended it.
Delivery = "GenerationChunk | BaseException | None"


class StepTarget(Protocol):
    """Receives, on the engine thread, one step's deliveries for every job started with it (``EngineLoop.start``):
    ``post([(key, delivery), ...])``. It must be quick (the engine waits) and thread-safe (a job that could not
    start is reported from the event loop)."""

    def post(self, deliveries: list[tuple[Hashable, Delivery]]) -> None: ...


class ThreadSink:
    """A job whose results go to a :class:`StepTarget` on the engine thread, as chunks."""

    __slots__ = ("route", "key", "prompt_len", "engine_name", "done", "submitted")

    def __init__(self, target: StepTarget, key: Hashable, prompt_len: int, engine_name: str):
        self.route, self.key, self.prompt_len, self.engine_name = target, key, prompt_len, engine_name
        self.done = False
        self.submitted: float | None = None  # when the job was submitted, until its first token

    def deliveries(self, item: Any) -> list[tuple[Hashable, Delivery]]:
        """One engine result as what the target receives (nothing once the job ended or was cancelled)."""
        if self.done:
            return []
        if item is ENGINE_GONE or isinstance(item, BaseException):
            self.done = True
            return [(self.key, failure(item, self.engine_name))]
        chunk = result_chunk(item, self.prompt_len)
        if not chunk.finish_reason:
            return [(self.key, chunk)] if chunk.text else []
        self.done = True
        return [(self.key, chunk), (self.key, None)]

    def push(self, item: Any) -> None:
        """A job refused before it reached the engine (the engine is closed or failed)."""
        deliveries = self.deliveries(item)
        if deliveries:
            self.route.post(deliveries)


def result_chunk(item: dict, prompt_len: int) -> GenerationChunk:
    """One engine result (``iterate()``'s dict for a job) as a chunk; the last one has the finish reason and
    token counts."""
    if item.get("eos"):
        reason = "length" if item.get("eos_reason") == "max_new_tokens" else "stop"
        return GenerationChunk(text=item.get("text", ""), finish_reason=reason,
                               prompt_tokens=item.get("prompt_tokens", prompt_len),
                               completion_tokens=item.get("new_tokens"))
    return GenerationChunk(text=item.get("text", ""))


def failure(item: Any, engine_name: str) -> GallamaError:
    """The error a consumer sees for ``ENGINE_GONE`` or an exception from the engine."""
    if item is ENGINE_GONE:
        return GallamaError("the model was unloaded while generating")
    error = GallamaError(f"{engine_name} failed: {item}")
    error.__cause__, error.__suppress_context__ = item, True  # as `raise ... from item`
    return error


class Outbox:
    """Results on their way to one event loop. ``scheduled``: a drain is queued on that loop already."""

    __slots__ = ("loop", "lock", "items", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.lock = threading.Lock()
        self.items: list[tuple[JobSink, Any]] = []
        self.scheduled = False

    def post(self, batch: list[tuple[JobSink, Any]]) -> str:
        """Engine thread: add results and wake the loop unless a wake-up is pending already.

        Returns "woke", "queued" (rides on the pending wake-up) or "closed" (the loop is gone)."""
        with self.lock:
            if self.loop.is_closed():  # a pending wake-up will never run: drop, as nobody is waiting
                self.items.clear()
                return "closed"
            self.items += batch
            if self.scheduled:
                return "queued"
            self.scheduled = True
        try:
            self.loop.call_soon_threadsafe(self.drain)
        except RuntimeError:  # that loop is closed: nobody is waiting any more
            return "closed"
        return "woke"

    def drain(self) -> None:
        """Event loop: hand everything that arrived to the jobs' sinks."""
        with self.lock:
            items, self.items = self.items, []
            self.scheduled = False
        for sink, item in items:
            sink.push(item)


class EngineLoop:
    def __init__(self, generator: Any, name: str, on_iteration: Callable[[], None] | None = None):
        self.generator = generator
        self._cv = threading.Condition()
        self._adds: list[tuple[Any, JobSink]] = []
        self._cancels: list[Any] = []
        self._sinks: dict[Any, JobSink] = {}
        self._closed = False
        self.error: BaseException | None = None
        self._on_iteration = on_iteration
        # per event loop: submitted during the current pass, not yet handed over
        self._staged: dict[asyncio.AbstractEventLoop, list[tuple[Any, JobSink]]] = {}
        self._outboxes: dict[asyncio.AbstractEventLoop, Outbox] = {}
        self.iterations = 0  # generator steps run (with results) and results delivered: effective batch size
        self.results = 0
        self.wakeups = 0  # event-loop wake-ups posted (fewer than steps when results piled up)
        self.iterate_s = 0.0  # time spent inside generator.iterate()
        self.deliver_s = 0.0  # after iterate(): routing a step's results and handing them over
        self.admissions = 0  # passes that enqueued new jobs: a burst admitted at once counts 1
        self.jobs = 0  # jobs enqueued into the generator
        self.queue_s = 0.0  # summed over them: from submit() to the generator's enqueue (waiting for a step's end)
        self.first_tokens = 0  # jobs that got their first token
        self.first_token_s = 0.0  # summed over them: from submit() to the step that produced it
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)
        self._thread.start()

    # -------------------------------------------------------------------------------- asyncio side
    def submit(self, job: Any, sink: JobSink | ThreadSink | None = None) -> JobSink | ThreadSink:
        if self._closed or self.error is not None:
            raise RuntimeError(f"the generator is not running: {self.error or 'closed'}")
        loop = asyncio.get_running_loop()
        sink = sink or JobSink(loop)
        sink.submitted = time.perf_counter()
        staged = self._staged.get(loop)
        if staged is None:
            staged = self._staged[loop] = []
            loop.call_soon(self._hand_over, loop)
        staged.append((job, sink))
        return sink

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        staged = self._staged.pop(loop, [])
        with self._cv:
            if self._closed or self.error is not None:
                error = self.error or RuntimeError("the generator is closed")
                for _, sink in staged:
                    sink.push(error)
                return
            self._adds.extend(staged)
            self._cv.notify()

    def cancel(self, job: Any) -> None:
        staged = self._staged.get(asyncio.get_running_loop(), [])
        for i, (other, _) in enumerate(staged):
            if other is job:  # never handed over
                del staged[i]
                return
        with self._cv:
            self._cancels.append(job)
            self._cv.notify()

    async def stream(self, job: Any, prompt_len: int, engine_name: str) -> "AsyncIterator[GenerationChunk]":
        """Submit ``job`` and yield its results as chunks (results that piled up while the consumer was busy
        become one chunk). Closing the iterator before the end cancels the job and frees its cache."""
        sink = self.submit(job)
        done = False
        try:
            while True:
                items = await sink.take()
                text = ""
                for item in items:
                    if item is ENGINE_GONE or isinstance(item, BaseException):
                        if text:
                            yield GenerationChunk(text=text)
                        raise failure(item, engine_name)
                    chunk = result_chunk(item, prompt_len)
                    text += chunk.text
                    if chunk.finish_reason:
                        done = True
                        chunk.text = text
                        yield chunk
                        return
                if text:
                    yield GenerationChunk(text=text)
        finally:
            if not done:
                self.cancel(job)  # client gone or error: free the job's cache pages

    def start(self, job: Any, prompt_len: int, engine_name: str, target: StepTarget,
              key: Hashable) -> Callable[[], None]:
        """Submit ``job`` (from an event loop) with its results going to ``target`` on the engine thread, as
        ``(key, chunk)``, then ``(key, None)`` after the last chunk, or ``(key, error)``. Returns a function that
        cancels the job (nothing more is delivered; the job's cache is freed)."""
        sink = ThreadSink(target, key, prompt_len, engine_name)
        self.submit(job, sink)

        def cancel() -> None:
            if not sink.done:
                sink.done = True
                self.cancel(job)

        return cancel

    def stats(self) -> dict[str, float]:
        """The engine thread's work since it started, for ``Backend.engine_stats``: ``steps`` (generator steps
        that returned results), ``step_seconds`` (time inside ``iterate()``), ``job_steps`` (results, one per
        job a step advanced: ``job_steps / steps`` is the mean batch), ``delivery_seconds`` (this loop's own
        work after each ``iterate()``: routing the step's results and handing them on, which the next step
        waits for) and ``admissions`` (the times new jobs were handed to the generator: jobs that arrive
        together between two steps are admitted at once; a burst of B requests admitted in many groups is
        prefilled over as many steps). Where a request's time to first token goes in the engine: ``jobs`` (jobs
        enqueued into the generator) with ``queue_seconds`` (summed over them: from submission to the enqueue,
        i.e. waiting for the step that was running to end), and ``first_tokens`` (jobs that got a first token)
        with ``first_token_seconds`` (summed: from submission to the end of the step that produced it, prefill
        included)."""
        return {"steps": self.iterations, "step_seconds": self.iterate_s, "job_steps": self.results,
                "delivery_seconds": self.deliver_s, "admissions": self.admissions, "jobs": self.jobs,
                "queue_seconds": self.queue_s, "first_tokens": self.first_tokens,
                "first_token_seconds": self.first_token_s}

    @property
    def active_jobs(self) -> int:
        return len(self._sinks) + len(self._adds) + sum(map(len, self._staged.values()))

    def close(self, timeout: float = 30.0) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout)

    # ------------------------------------------------------------------------------ engine thread
    def _run(self) -> None:
        gen = self.generator
        sinks = self._sinks
        while True:
            with self._cv:
                while not (self._adds or self._cancels or sinks or self._closed):
                    self._cv.wait()
                if self._closed:
                    break
                adds, self._adds = self._adds, []
                cancels, self._cancels = self._cancels, []
            out: dict[Any, list] = {}
            admitted = False
            for job, sink in adds:
                try:
                    gen.enqueue(job)
                    sinks[job] = sink
                    admitted = True
                    self.jobs += 1
                    self.queue_s += time.perf_counter() - sink.submitted
                except Exception as exc:  # refused by the engine (too long for the cache...)
                    out.setdefault(sink.route, []).append((sink, exc))
            self.admissions += admitted
            for job in cancels:
                if sinks.pop(job, None) is not None:
                    try:
                        gen.cancel(job)
                    except Exception:
                        log.exception("cancelling a job failed")
            if sinks:
                t0 = time.perf_counter()
                try:
                    results = gen.iterate()
                except BaseException as exc:  # the generator is unusable now: fail every job, stay failed
                    log.exception("the generator failed")
                    self.error = exc
                    for sink in sinks.values():
                        out.setdefault(sink.route, []).append((sink, exc))
                    sinks.clear()
                    self._flush(out)
                    self._fail_new_jobs(exc)
                    return
                t1 = time.perf_counter()
                self.iterate_s += t1 - t0
                if results:
                    self.iterations += 1
                    self.results += len(results)
                for result in results:
                    job = result.get("job")
                    sink = sinks.get(job)
                    if sink is None:
                        continue
                    if result.get("stage") == "error":
                        sinks.pop(job, None)
                        out.setdefault(sink.route, []).append((sink, result.get("error") or RuntimeError("job failed")))
                        continue
                    if sink.submitted is not None and result.get("stage") == "streaming":  # its first token
                        self.first_tokens += 1
                        self.first_token_s += t1 - sink.submitted
                        sink.submitted = None
                    if result.get("eos"):
                        sinks.pop(job, None)
                    out.setdefault(sink.route, []).append((sink, result))
                if self._on_iteration is not None:
                    self._on_iteration()
                self._flush(out)
                self.deliver_s += time.perf_counter() - t1
            elif out:
                self._flush(out)
        # closed: wake every consumer
        out = {}
        for sink in list(sinks.values()) + [s for _, s in self._adds]:
            out.setdefault(sink.route, []).append((sink, ENGINE_GONE))
        sinks.clear()
        self._flush(out)

    def _fail_new_jobs(self, exc: BaseException) -> None:
        with self._cv:
            adds, self._adds = self._adds, []
        out: dict = {}
        for _, sink in adds:
            out.setdefault(sink.route, []).append((sink, exc))
        self._flush(out)

    def _flush(self, out: dict) -> None:
        for route, batch in out.items():
            if not isinstance(route, asyncio.AbstractEventLoop):  # a StepTarget: delivered here, once a step
                deliveries = [d for sink, item in batch for d in sink.deliveries(item)]
                if deliveries:
                    try:
                        route.post(deliveries)
                    except Exception:
                        log.exception("delivering results failed")
                continue
            loop = route
            box = self._outboxes.get(loop)
            if box is None:
                box = self._outboxes[loop] = Outbox(loop)
            posted = box.post(batch)
            if posted == "woke":
                self.wakeups += 1
            elif posted == "closed":
                del self._outboxes[loop]
