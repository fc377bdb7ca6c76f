"""Loaded model instances: loading in the background, routing a request's ``model`` to the least busy one."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

from gallama_core.models.backend import Backend
from gallama_core.models.registry import BackendRegistry
from gallama_core.errors import GallamaError, InvalidRequestError, ModelNotFoundError, ServiceUnavailableError
from gallama_core.models.settings import ModelSettings
from gallama_core.plugin_system.registrations import LoadProgress

log = logging.getLogger("gallama.models")

Status = Literal["loading", "ready", "failed"]


@dataclass
class ModelInstance:
    settings: ModelSettings
    status: Status = "loading"
    backend: Backend | None = None
    error: str | None = None
    active: int = 0
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def name(self) -> str:
        return self.settings.served_name

    @property
    def kind(self) -> str | None:
        """What the model serves; unknown (None) until it has loaded."""
        return self.backend.kind if self.backend is not None else None


class ModelManager:
    """Owns every model instance of the server.

    Name resolution: exact name, then case-insensitive. When ``strict_names`` is off and exactly one ready
    model of the wanted kind is loaded, any unknown name is served by it (so clients written for another
    model name just work, as with llama.cpp's own server); with several candidates an unknown name is a
    404 that lists what is loaded.
    """

    def __init__(self, registry: BackendRegistry, strict_names: bool = False,
                 progress_factory: Callable[[str], LoadProgress] | None = None):
        self.registry = registry
        self.strict_names = strict_names
        self.instances: list[ModelInstance] = []
        self._progress_factory = progress_factory or (lambda name: LoadProgress(
            lambda message, fraction: log.info("%s: %s", name, message)))
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------------------------------ loading
    def start_loading(self, settings: ModelSettings) -> ModelInstance:
        instance = ModelInstance(settings)
        self.instances.append(instance)
        task = asyncio.get_running_loop().create_task(self._load(instance))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return instance

    async def _load(self, instance: ModelInstance) -> None:
        spec = self.registry.get(instance.settings.backend or "")
        progress = self._progress_factory(instance.name)
        started = time.perf_counter()
        try:
            backend = await asyncio.to_thread(spec.load, instance.settings, progress)
        except Exception as exc:
            instance.status, instance.error = "failed", f"{type(exc).__name__}: {exc}"
            log.error("model %r failed to load with backend %s: %s", instance.name, spec.name, instance.error)
            return
        if instance not in self.instances:  # removed while loading
            await backend.close()
            return
        instance.backend, instance.status = backend, "ready"
        log.info("model %r ready (%s, %.1fs)", instance.name, spec.name, time.perf_counter() - started)

    async def wait_loaded(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def remove(self, name: str) -> int:
        doomed = [i for i in self.instances if i.name == name]
        if not doomed:
            raise ModelNotFoundError(f"model {name!r} is not loaded")
        for instance in doomed:
            self.instances.remove(instance)
            if instance.backend is not None:
                await instance.backend.close()
        return len(doomed)

    async def close(self) -> None:
        for instance in list(self.instances):
            if instance.backend is not None:
                await instance.backend.close()
        self.instances.clear()

    # ------------------------------------------------------------------------------------------ routing
    @property
    def loading(self) -> bool:
        return any(i.status == "loading" for i in self.instances)

    def ready(self, kind: str | None = None) -> list[ModelInstance]:
        return [i for i in self.instances if i.status == "ready" and (kind is None or i.kind == kind)]

    def names(self) -> list[str]:
        return list(dict.fromkeys(i.name for i in self.instances))

    def resolve(self, name: str, kind: str = "chat") -> ModelInstance:
        """The least busy ready instance serving ``name`` for an endpoint of ``kind``."""
        candidates = [i for i in self.instances if i.name == name] or \
            [i for i in self.instances if i.name.lower() == (name or "").lower()]
        if not candidates:
            same_kind = [i for i in self.instances if i.status != "failed" and
                         (i.status == "loading" or i.kind == kind)]
            if not self.strict_names and len({i.name for i in same_kind}) == 1:
                candidates = same_kind
            else:
                loaded = ", ".join(self.names()) or "none"
                raise ModelNotFoundError(f"model {name!r} is not loaded (loaded models: {loaded})")
        ready = [i for i in candidates if i.status == "ready"]
        if not ready:
            if any(i.status == "loading" for i in candidates):
                raise ServiceUnavailableError(f"model {candidates[0].name!r} is still loading; retry shortly")
            raise GallamaError(f"model {candidates[0].name!r} failed to load: {candidates[0].error}",
                               status_code=503, error_type="service_unavailable")
        matching = [i for i in ready if i.kind == kind]
        if not matching:
            raise InvalidRequestError(
                f"model {ready[0].name!r} is {'an' if ready[0].kind[0] in 'aeiou' else 'a'} {ready[0].kind} model "
                f"and cannot serve this {kind} endpoint",
                param="model", code="wrong_model_kind")
        return min(matching, key=lambda i: i.active)
