"""Model instances: each one started by a worker launcher and supervised, and routing a request's ``model`` to
the least busy ready instance.

An instance's life: ``loading`` → ``ready``; when its worker dies, ``restarting`` (in-flight requests fail with
a 503 or an in-band error, new ones go to a healthy twin or get a fast 503) → ``ready`` again, with a backoff
between tries; after ``max_restarts`` failures in a row it is ``failed`` with the reason. A model that fails
its first load is ``failed`` at once with the worker's own error text (a bad path does not get better).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal

from gallama_core.errors import (GallamaError, InvalidRequestError, ModelNotFoundError, QueueFullError,
                                 ServiceUnavailableError)
from gallama_core.request_notes import note
from gallama_core.models.backend import Backend
from gallama_core.models.registry import BackendRegistry
from gallama_core.models.settings import ModelSettings
from gallama_core.plugin_system.registrations import LoadProgress

if TYPE_CHECKING:
    from gallama_core.workers.launcher import Worker, WorkerLauncher

log = logging.getLogger("gallama.models")

Status = Literal["loading", "ready", "restarting", "failed"]

#: Requests that may wait for a slot of one instance when its entry sets no ``max_queue``.
DEFAULT_MAX_QUEUE = 64
#: Failed instances kept for /list_loaded_models.
MAX_FAILED_KEPT = 8


@dataclass
class RestartPolicy:
    """How the front restarts a worker that died."""

    max_restarts: int = 5          # failures in a row before the instance is marked failed
    backoff_s: float = 0.5         # first wait; doubles per failure in a row
    max_backoff_s: float = 30.0
    stable_s: float = 60.0         # a worker that served this long resets the count

    def delay(self, failures: int) -> float:
        return min(self.max_backoff_s, self.backoff_s * 2 ** max(0, failures - 1))


@dataclass
class ModelInstance:
    settings: ModelSettings
    status: Status = "loading"
    backend: Backend | None = None
    error: str | None = None
    active: int = 0
    served: int = 0
    restarts: int = 0
    #: Started with the server (``gallama run``), as opposed to ``/add_model`` later.
    initial: bool = False
    progress: str | None = None
    worker: "Worker | None" = None
    created: int = field(default_factory=lambda: int(time.time()))
    #: What the instance serves, remembered from its first load (known before a restart completes).
    known_kind: str | None = None

    @property
    def name(self) -> str:
        return self.settings.served_name

    @property
    def kind(self) -> str | None:
        """What the model serves; unknown (None) until it has loaded once."""
        return self.backend.kind if self.backend is not None else self.known_kind

    @property
    def admission_limit(self) -> int:
        """Requests this instance takes at once: its engine's concurrency plus ``max_queue`` waiting."""
        slots = getattr(self.backend, "concurrency", None) or 1
        waiting = self.settings.max_queue if self.settings.max_queue is not None else DEFAULT_MAX_QUEUE
        return slots + waiting

    @property
    def pid(self) -> int | None:
        return self.worker.pid if self.worker is not None else None

    @property
    def location(self) -> str | None:
        """Where its worker runs (``local``, a Ray node...); None while it has none."""
        return self.worker.location if self.worker is not None else None

    def describe(self) -> dict:
        """One row of ``/list_loaded_models``."""
        return {"model_name": self.name, "backend": self.settings.backend, "kind": self.kind, "status": self.status,
                "pid": self.pid, "location": self.location,
                "active": self.active, "served": self.served, "restarts": self.restarts, "progress": self.progress,
                "error": self.error, "model_id": self.settings.model_id}


class ModelManager:
    """Owns every model instance of the server.

    Name resolution: exact name, then case-insensitive. When ``strict_names`` is off and exactly one model of
    the wanted kind is loaded, any unknown name is served by it (so clients written for another model name
    just work, as with llama.cpp's own server); with several candidates an unknown name is a 404 that lists
    what is loaded.
    """

    def __init__(self, registry: BackendRegistry, launcher: "WorkerLauncher", strict_names: bool = False,
                 progress_factory: Callable[[str], LoadProgress] | None = None,
                 restart_policy: RestartPolicy | None = None):
        self.registry = registry
        self.launcher = launcher
        self.strict_names = strict_names
        self.restart_policy = restart_policy or RestartPolicy()
        self.instances: list[ModelInstance] = []
        self._progress_factory = progress_factory or (lambda name: LoadProgress(
            lambda message, fraction: log.info("%s: %s", name, message)))
        self._tasks: dict[int, asyncio.Task] = {}
        self._first_load: dict[int, asyncio.Future] = {}

    # ------------------------------------------------------------------------------------------ loading
    def start_loading(self, settings: ModelSettings, initial: bool = False) -> ModelInstance:
        # Failed instances are kept to show why (in /list_loaded_models), but do not pile up: a new load of the
        # same name replaces them, and only the last few failures are kept.
        failed = [i for i in self.instances if i.status == "failed"]
        for old in [i for i in failed if i.name == settings.served_name] + failed[:-MAX_FAILED_KEPT]:
            if old in self.instances:
                self.instances.remove(old)
                self._first_load.pop(id(old), None)
        instance = ModelInstance(settings, initial=initial)
        self.instances.append(instance)
        loop = asyncio.get_running_loop()
        self._first_load[id(instance)] = loop.create_future()
        self._tasks[id(instance)] = loop.create_task(self._supervise(instance))
        return instance

    def _progress(self, instance: ModelInstance) -> LoadProgress:
        shown = self._progress_factory(instance.name)

        def update(message: str, fraction: float | None) -> None:
            instance.progress = message + (f" ({fraction:.0%})" if fraction is not None else "")
            shown.update(message, fraction)

        return LoadProgress(update)

    def _first_load_done(self, instance: ModelInstance) -> None:
        future = self._first_load.get(id(instance))
        if future is not None and not future.done():
            future.set_result(instance.status)

    async def _supervise(self, instance: ModelInstance) -> None:
        from gallama_core.workers.client import WorkerLoadError

        policy, failures = self.restart_policy, 0
        try:
            while instance in self.instances:
                started = time.perf_counter()
                try:
                    worker = await self.launcher.launch(instance.settings, self._progress(instance))
                except WorkerLoadError as exc:
                    if instance.restarts == 0 and instance.status == "loading":
                        instance.status, instance.error = "failed", str(exc)
                        log.error("model %r failed to load with backend %s: %s", instance.name,
                                  instance.settings.backend, exc)
                        return
                    reason = f"restart failed: {exc}"
                else:
                    if instance not in self.instances:  # removed while loading
                        await worker.stop()
                        return
                    instance.worker, instance.backend = worker, worker.backend
                    instance.known_kind = worker.backend.kind
                    instance.status, instance.error, instance.progress = "ready", None, None
                    log.info("model %r ready (%s, pid %s, %.1fs)", instance.name, instance.settings.backend,
                             worker.pid, time.perf_counter() - started)
                    self._first_load_done(instance)
                    reason = await worker.wait()
                    instance.backend = instance.worker = None
                    if instance not in self.instances:
                        return
                    if time.perf_counter() - started > policy.stable_s:
                        failures = 0
                failures += 1
                instance.error = reason
                if failures > policy.max_restarts:
                    instance.status = "failed"
                    log.error("model %r: %s; gave up after %d restarts", instance.name, reason, policy.max_restarts)
                    return
                instance.status = "restarting"
                delay = policy.delay(failures)
                log.error("model %r: %s; restarting in %.1fs (try %d of %d)", instance.name, reason, delay, failures,
                          policy.max_restarts)
                await asyncio.sleep(delay)
                instance.restarts += 1
        finally:
            self._first_load_done(instance)
            self._tasks.pop(id(instance), None)

    async def wait_loaded(self) -> None:
        """Until every instance has finished its first load (ready or failed)."""
        await asyncio.gather(*[asyncio.shield(f) for f in self._first_load.values()], return_exceptions=True)

    async def refresh_engine_stats(self, timeout: float = 1.0) -> None:
        """Ask each ready instance's engine worker for its engine counters (``Backend.engine_stats``), so that
        ``/metrics`` shows them as of now; a worker that does not answer within ``timeout`` keeps its last ones."""
        pings = [asyncio.ensure_future(instance.backend.ping(timeout)) for instance in self.instances
                 if instance.status == "ready" and hasattr(instance.backend, "ping")]
        if not pings:
            return
        done, late = await asyncio.wait(pings, timeout=timeout)
        for ping in late:
            ping.cancel()
        for ping in done:
            if not ping.cancelled():
                ping.exception()  # retrieved: a lost worker is the supervisor's to report, not /metrics'

    async def _stop(self, instance: ModelInstance) -> None:
        task = self._tasks.pop(id(instance), None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        worker, instance.worker, instance.backend = instance.worker, None, None
        if worker is not None:
            await worker.stop()
        self._first_load.pop(id(instance), None)

    async def remove(self, name: str) -> int:
        doomed = [i for i in self.instances if i.name == name]
        if not doomed:
            raise ModelNotFoundError(f"model {name!r} is not loaded")
        for instance in doomed:
            self.instances.remove(instance)
        await asyncio.gather(*[self._stop(i) for i in doomed])
        return len(doomed)

    def fail_in_flight(self, reason: str) -> None:
        """End every request in flight now with a 503 (streams: an error event, then [DONE])."""
        for instance in self.instances:
            connection = getattr(instance.backend, "connection", None)
            if connection is not None:
                connection.fail_open_jobs(reason)

    async def close(self) -> None:
        instances, self.instances = list(self.instances), []
        await asyncio.gather(*[self._stop(i) for i in instances], return_exceptions=True)

    # ------------------------------------------------------------------------------------------ routing
    @property
    def starting(self) -> bool:
        """Models given at start-up are still on their first load."""
        return any(i.initial and i.status == "loading" for i in self.instances)

    def ready(self, kind: str | None = None) -> list[ModelInstance]:
        return [i for i in self.instances if i.status == "ready" and (kind is None or i.kind == kind)]

    def names(self) -> list[str]:
        return list(dict.fromkeys(i.name for i in self.instances))

    def find(self, name: str, kind: str = "chat") -> list[ModelInstance]:
        """The instances a request's ``model`` names (404 when none)."""
        candidates = [i for i in self.instances if i.name == name] or \
            [i for i in self.instances if i.name.lower() == (name or "").lower()]
        if candidates:
            return candidates
        same_kind = [i for i in self.instances if i.status != "failed" and
                     (i.kind is None or i.kind == kind)]
        if not self.strict_names and len({i.name for i in same_kind}) == 1:
            return same_kind
        loaded = ", ".join(self.names()) or "none"
        raise ModelNotFoundError(f"model {name!r} is not loaded (loaded models: {loaded})")

    def resolve(self, name: str, kind: str = "chat") -> ModelInstance:
        """The least busy ready instance serving ``name`` for an endpoint of ``kind``."""
        candidates = self.find(name, kind)
        ready = [i for i in candidates if i.status == "ready" and i.backend is not None]
        if not ready:
            first = candidates[0]
            if any(i.status == "loading" for i in candidates):
                raise ServiceUnavailableError(f"model {first.name!r} is still loading; retry shortly")
            restarting = [i for i in candidates if i.status == "restarting"]
            if restarting:
                raise ServiceUnavailableError(f"model {first.name!r} is restarting after its engine worker stopped "
                                              f"({restarting[0].error}); retry shortly")
            raise GallamaError(f"model {first.name!r} failed: {first.error}", status_code=503,
                               error_type="service_unavailable")
        matching = [i for i in ready if i.kind == kind]
        if not matching:
            raise InvalidRequestError(
                f"model {ready[0].name!r} is {'an' if ready[0].kind[0] in 'aeiou' else 'a'} {ready[0].kind} model "
                f"and cannot serve this {kind} endpoint",
                param="model", code="wrong_model_kind")
        chosen = min(matching, key=lambda i: (i.active, i.served))
        if chosen.active >= chosen.admission_limit:
            raise QueueFullError(f"model {chosen.name!r} has {chosen.active} requests running or waiting (its limit; "
                                 "max_queue sets it); retry shortly", retry_after=1)
        chosen.served += 1
        note(model=chosen.name)
        return chosen
