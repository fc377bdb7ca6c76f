"""Model instances as Ray actors: :class:`RayLauncher` is what ``gallama run --ray-address`` uses.

Each instance is one actor (:class:`~gallama_ray.actor.EngineHost`) created with the resources its model
asks for (``num_gpus`` from the entry's ``gpus``, ``num_cpus``, custom ``resources``, a ``runtime_env``; see
:mod:`gallama_ray.settings`). Ray places it on a node that has them and sets its ``CUDA_VISIBLE_DEVICES``. The
front talks to it with the engine-worker protocol (:mod:`gallama_ray.channel`), so everything above the
``Backend`` seam works as with local workers.

Faults: an actor whose process dies is restarted by Ray in place (``max_restarts``, on any node that fits);
the front's supervision notices the end of its event stream at once, fails that instance's in-flight requests
with a 503 / an in-band error, sends new ones to its healthy twins, and reloads the model into the restarted
actor (with the front's backoff). Actors are owned by the front's Ray driver: when the front exits, however it
exits, Ray removes them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any

from gallama_core.models.settings import ModelSettings
from gallama_core.plugin_system.registrations import LoadProgress
from gallama_core.workers.client import RemoteBackend, WorkerConnection, WorkerLoadError
from gallama_core.workers.launcher import Worker, WorkerLauncher, gpu_placement

from .channel import RayChannel
from .settings import RaySection

log = logging.getLogger("gallama.ray")

#: Seconds an actor may wait for a node with its resources before its load fails.
PLACEMENT_TIMEOUT_S = float(os.environ.get("GALLAMA_RAY_PLACEMENT_TIMEOUT", "300"))


def actor_options(settings: ModelSettings, section: RaySection) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ray actor options for one instance of ``settings``, and the settings keys the worker then gets (its
    ``gpus`` compacted to the GPUs Ray gives it, renumbered from 0)."""
    placement = section.placement(settings.served_name)
    _, compacted = gpu_placement(settings, None)
    gpu_count = len(next(iter(compacted.values()))) if compacted else 0
    options: dict[str, Any] = {
        "num_cpus": placement.num_cpus if placement.num_cpus is not None else 1,
        "num_gpus": placement.num_gpus if placement.num_gpus is not None else gpu_count,
        "max_restarts": section.max_restarts, "max_concurrency": 10_000,
    }
    if placement.resources:
        options["resources"] = dict(placement.resources)
    runtime_env = {**(section.runtime_env or {}), **(placement.runtime_env or {})}
    if settings.python and "py_executable" not in runtime_env:
        runtime_env["py_executable"] = settings.python
    if runtime_env:
        options["runtime_env"] = runtime_env
    return options, compacted


class RayWorker(Worker):
    def __init__(self, launcher: "RayLauncher", key: int, actor: Any, channel: RayChannel,
                 connection: WorkerConnection, backend: RemoteBackend, where: dict[str, Any]):
        self._launcher, self._key, self.actor = launcher, key, actor
        self.channel, self.connection, self.backend = channel, connection, backend
        self.pid = where.get("pid") or connection.pid
        self.node_id = where.get("node_id") or ""
        self.location = f"ray node {where.get('node_ip', '?')} ({self.node_id[:12]})"
        connection.explain_loss = self._explain

    async def _explain(self) -> str:
        if self.channel.error:
            return f"its Ray actor on {self.location} failed ({self.channel.error})"
        return "its Ray actor stopped"

    async def wait(self) -> str:
        await self.connection.lost.wait()
        return self.connection.lost_reason

    async def stop(self, timeout: float = 10.0) -> None:
        if not self.connection.lost.is_set():
            try:
                await self.connection.shutdown()
                await asyncio.wait_for(self.connection.lost.wait(), timeout)
            except (asyncio.TimeoutError, Exception):
                log.warning("Ray actor of %s did not stop in %.0fs; killing it", self.connection.label, timeout)
        self._launcher.forget(self._key, kill=True)
        self.connection.abort("the model was unloaded")


class RayLauncher(WorkerLauncher):
    """One Ray actor per model instance, on the cluster at ``address``."""

    def __init__(self, address: str, section: RaySection, log_level: str = "info"):
        self.address = address
        self.section = section
        self.log_level = log_level
        # One actor per instance, kept across restarts (Ray restarts the process, the front reloads the model):
        # keyed by the instance's settings object, which the front's supervision passes again on each try.
        self._actors: dict[int, tuple[ModelSettings, Any]] = {}
        self._connect_lock = asyncio.Lock()

    def _connect(self) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, namespace=self.section.namespace, log_to_driver=True,
                     logging_level=logging.WARNING, configure_logging=False)
            log.info("connected to the Ray cluster at %s (namespace %s)", self.address, self.section.namespace)

    async def _ensure_connected(self) -> None:
        async with self._connect_lock:
            import ray

            if not ray.is_initialized():
                try:
                    await asyncio.to_thread(self._connect)
                except Exception as exc:
                    raise WorkerLoadError(f"cannot connect to the Ray cluster at {self.address!r}: "
                                          f"{type(exc).__name__}: {exc}") from None

    def _new_actor(self, settings: ModelSettings, options: dict[str, Any]) -> Any:
        import ray

        from .actor import EngineHost

        name = f"gallama:{settings.served_name}:{uuid.uuid4().hex[:8]}"
        return ray.remote(EngineHost).options(name=name, **options).remote()

    def forget(self, key: int, kill: bool) -> None:
        entry = self._actors.pop(key, None)
        if entry is not None and kill:
            import ray

            try:
                ray.kill(entry[1], no_restart=True)
            except Exception:
                pass

    async def launch(self, settings: ModelSettings, progress: LoadProgress) -> Worker:
        await self._ensure_connected()
        options, compacted = actor_options(settings, self.section)
        key = id(settings)
        entry = self._actors.get(key)
        reused = entry is not None and entry[0] is settings
        if not reused:
            progress.update(f"placing on the Ray cluster ({_describe(options)})")
            try:
                actor = self._new_actor(settings, options)
            except Exception as exc:
                raise WorkerLoadError(f"Ray refused the actor: {type(exc).__name__}: {exc}") from None
            self._actors[key] = (settings, actor)
        else:
            actor = entry[1]
            progress.update("waiting for Ray to restart the worker")
        try:
            where = await asyncio.wait_for(_where(actor), PLACEMENT_TIMEOUT_S)
        except asyncio.TimeoutError:
            self.forget(key, kill=True)
            raise WorkerLoadError(f"no node of the Ray cluster offered {_describe(options)} within "
                                  f"{PLACEMENT_TIMEOUT_S:.0f}s") from None
        except Exception as exc:
            self.forget(key, kill=True)
            if reused:  # Ray gave up restarting it: start a new one
                return await self.launch(settings, progress)
            raise WorkerLoadError(f"the Ray actor did not start: {type(exc).__name__}: {exc}") from None
        channel = RayChannel(actor)
        connection = WorkerConnection(channel, settings.served_name)
        wire_settings = {**settings.model_dump(mode="json", exclude_none=True), **compacted}
        wire_settings.pop("python", None)  # the actor's interpreter is Ray's (runtime_env py_executable)
        try:
            meta = await connection.handshake({"backend": settings.backend, "settings": wire_settings,
                                               "log_level": self.log_level}, progress)
        except BaseException as exc:
            channel.close()
            self.forget(key, kill=True)
            if isinstance(exc, WorkerLoadError) and channel.error:
                raise WorkerLoadError(f"{exc} ({channel.error})") from None
            raise
        return RayWorker(self, key, actor, channel, connection, RemoteBackend(connection, meta, settings), where)


async def _where(actor: Any) -> dict[str, Any]:
    """Where the actor runs, once it runs: while Ray restarts it the actor is "temporarily unavailable"."""
    import ray

    while True:
        try:
            return await actor.where.remote()
        except ray.exceptions.ActorUnavailableError:
            await asyncio.sleep(0.2)


def _describe(options: dict[str, Any]) -> str:
    parts = [f"{options['num_cpus']:g} CPU", f"{options['num_gpus']:g} GPU"]
    parts += [f"{v:g} {k}" for k, v in (options.get("resources") or {}).items()]
    return ", ".join(parts)
