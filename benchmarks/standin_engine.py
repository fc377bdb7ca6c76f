"""A stand-in engine for measuring gallama's own cost through HTTP on any machine (used by bench_front.py).

Registered as the backend ``standin`` through a throw-away distribution that bench_front.py writes to a temp
folder (a dist-info with an entry point, put on PYTHONPATH for the server and its workers): nothing is installed.
It decodes like a batched engine: every ``step_ms`` one token ("tok ") for every active job, until each job's
``max_tokens``; the step itself holds the GIL for ``gil_ms`` (an engine's Python work per step).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

from gallama_core import hookimpl
from gallama_core.models.backend import Backend, GenerationChunk
from gallama_core.models.settings import ModelSettings
from gallama_core.pipeline.chat_template import CHATML_TEMPLATE, ChatTemplate
from gallama_core.plugin_system.registrations import BackendSpec

STEP_MS = float(os.environ.get("STANDIN_STEP_MS", "16"))
GIL_MS = float(os.environ.get("STANDIN_GIL_MS", "1"))


class StandIn(Backend):
    def __init__(self, settings):
        super().__init__("standin", settings.served_name, 1 << 16, ChatTemplate(CHATML_TEMPLATE))
        self._jobs: list[list] = []  # [loop, queue, remaining, produced]
        self._lock = threading.Lock()
        threading.Thread(target=self._engine, daemon=True).start()

    def _engine(self) -> None:
        while True:
            start = time.perf_counter()
            while time.perf_counter() - start < GIL_MS / 1000:  # Python work of one engine step (GIL held)
                pass
            with self._lock:
                jobs = list(self._jobs)
            for job in jobs:
                loop, queue, remaining, produced = job
                job[2] -= 1
                job[3] += 1
                done = job[2] <= 0
                loop.call_soon_threadsafe(queue.put_nowait, (done, job[3]))
                if done:
                    with self._lock:
                        self._jobs.remove(job)
            time.sleep(max(0.0, STEP_MS / 1000 - (time.perf_counter() - start)))

    async def generate(self, request):
        queue: asyncio.Queue = asyncio.Queue()
        job = [asyncio.get_running_loop(), queue, request.max_tokens or 16, 0]
        with self._lock:
            self._jobs.append(job)
        try:
            while True:
                items = [await queue.get()]
                while not queue.empty():  # steps that piled up while this loop was busy: one chunk
                    items.append(queue.get_nowait())
                done, produced = items[-1]
                if done:
                    yield GenerationChunk(text="tok " * len(items), finish_reason="length", prompt_tokens=10,
                                          completion_tokens=produced)
                    return
                yield GenerationChunk(text="tok " * len(items))
        finally:
            with self._lock:
                if job in self._jobs:
                    self._jobs.remove(job)


@hookimpl
def gallama_backends():
    return [BackendSpec(name="standin", settings_model=ModelSettings, load=lambda s, p: StandIn(s))]
