"""An ExLlama-shaped generator for tests of the engine thread (gallama_core.models.engine_thread) and of the
engine worker's step messages: ``enqueue`` / ``cancel`` / ``iterate``, no engine."""

from __future__ import annotations

import threading
import time


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
