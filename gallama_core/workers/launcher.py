"""Starting engine workers: the launcher seam and the core's launcher of local worker processes.

A :class:`WorkerLauncher` turns one model instance's settings into a running :class:`Worker` whose ``backend``
the front uses like any :class:`~gallama_core.models.backend.Backend`. The core ships two:

- :class:`LocalProcessLauncher` (what ``gallama run`` uses): one OS process per model instance, started with
  the model's own Python interpreter (``python`` key of the model entry, or of its backend in the
  ``backends:`` section of ``gallama.yaml``), its GPUs (``gpus``) applied as ``CUDA_VISIBLE_DEVICES``, and one end
  of a Unix socket pair as its only channel: no path, no TCP port.
- :class:`InProcessLauncher`: the backend in the front's own process (unit tests with fake backends).

A plugin can provide another launcher (e.g. workers on a Ray cluster) through the
:func:`~gallama_core.plugin_system.hookspecs.gallama_worker_launcher` hook.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from abc import ABC, abstractmethod
from typing import Any, Callable

from ..models.backend import Backend
from ..models.settings import ModelSettings
from ..plugin_system.registrations import BackendSpec, LoadProgress
from .client import RemoteBackend, WorkerConnection, WorkerLoadError
from .protocol import Channel

log = logging.getLogger("gallama.workers")


class Worker(ABC):
    """A started model instance, wherever it runs."""

    #: The instance's backend as the front uses it.
    backend: Backend
    #: Process id of the worker (None when it has no local process).
    pid: int | None = None
    #: Where it runs, for /list_loaded_models (e.g. "local", a node name).
    location: str = "local"

    @abstractmethod
    async def wait(self) -> str:
        """Return when the worker has stopped for any reason, with that reason in words."""

    @abstractmethod
    async def stop(self, timeout: float = 10.0) -> None:
        """Unload the model and end the worker (killing it after ``timeout`` seconds)."""


class WorkerLauncher(ABC):
    """Starts workers. Raise :class:`~gallama_core.workers.client.WorkerLoadError` with the worker's own error
    text when the model cannot load."""

    @abstractmethod
    async def launch(self, settings: ModelSettings, progress: LoadProgress) -> Worker:
        ...


# ----------------------------------------------------------------------------------------- in process


class _InProcessWorker(Worker):
    def __init__(self, backend: Backend):
        self.backend = backend
        self.pid = os.getpid()
        self.location = "in-process"
        self._stopped = asyncio.Event()

    async def wait(self) -> str:
        await self._stopped.wait()
        return "stopped"

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopped.set()
        await self.backend.close()


class InProcessLauncher(WorkerLauncher):
    """Loads backends in the front's process (a thread for the load): for unit tests of the core."""

    def __init__(self, spec_for: Callable[[str], BackendSpec]):
        self._spec_for = spec_for

    async def launch(self, settings: ModelSettings, progress: LoadProgress) -> Worker:
        spec = self._spec_for(settings.backend or "")
        try:
            backend = await asyncio.to_thread(spec.load, settings, progress)
        except Exception as exc:
            raise WorkerLoadError(f"{type(exc).__name__}: {exc}") from exc
        return _InProcessWorker(backend)


# ------------------------------------------------------------------------------------ local processes


def gpu_placement(settings: ModelSettings, parent_visible: str | None) -> tuple[str | None, dict[str, Any]]:
    """``CUDA_VISIBLE_DEVICES`` for a worker and the settings it then gets.

    ``gpus`` (and ``draft_gpus``) list VRAM per GPU as the front sees them (index 0 = the first GPU visible to
    the front). The worker sees only the GPUs with a non-zero share, renumbered from 0, and its lists are
    compacted to match: ``gpus=0,20`` on a machine with GPUs 0 and 1 becomes ``CUDA_VISIBLE_DEVICES=1`` and
    ``gpus=[20]``. Without ``gpus`` the worker inherits the front's visible GPUs (auto split).
    """
    lists = {key: getattr(settings, key, None) for key in ("gpus", "draft_gpus")}
    used = sorted({i for values in lists.values() if values for i, share in enumerate(values) if share > 0})
    if not used:
        return None, {}
    visible = [d.strip() for d in parent_visible.split(",")] if parent_visible else None
    if visible is not None and used[-1] >= len(visible):
        raise WorkerLoadError(f"gpus lists {used[-1] + 1} GPUs but CUDA_VISIBLE_DEVICES={parent_visible} shows "
                              f"{len(visible)}")
    devices = ",".join(visible[i] if visible is not None else str(i) for i in used)
    compacted = {key: [values[i] if i < len(values) else 0.0 for i in used]
                 for key, values in lists.items() if values}
    return devices, compacted


class LocalProcessWorker(Worker):
    def __init__(self, process: asyncio.subprocess.Process, connection: WorkerConnection, backend: RemoteBackend):
        self.process = process
        self.connection = connection
        self.backend = backend
        self.pid = process.pid
        self.location = "local"
        connection.explain_loss = self._explain

    async def _explain(self) -> str:
        await self.process.wait()
        return self._describe_exit()

    def _describe_exit(self) -> str:
        code = self.process.returncode
        if code is None:
            return "the engine worker stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"the engine worker (pid {self.pid}) was killed by {name}"
        return f"the engine worker (pid {self.pid}) exited with code {code}"

    async def wait(self) -> str:
        exited = asyncio.ensure_future(self.process.wait())
        lost = asyncio.ensure_future(self.connection.lost.wait())
        try:
            await asyncio.wait({exited, lost}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():  # the channel closed first: the process is on its way out, or hung
                try:
                    await asyncio.wait_for(asyncio.shield(exited), 3)
                except asyncio.TimeoutError:
                    self._kill()
                    await exited
        finally:
            lost.cancel()
        reason = self._describe_exit()
        self.connection.abort(reason)
        return reason

    def _kill(self) -> None:
        try:
            self.process.kill()
        except ProcessLookupError:
            pass

    async def stop(self, timeout: float = 10.0) -> None:
        if self.process.returncode is None:
            try:
                await self.connection.shutdown()
                await asyncio.wait_for(self.process.wait(), timeout)
            except (asyncio.TimeoutError, ConnectionError, OSError):
                log.warning("engine worker pid %s did not stop in %.0fs; killing it", self.pid, timeout)
                self._kill()
                await self.process.wait()
        self.connection.abort("the model was unloaded")


class LocalProcessLauncher(WorkerLauncher):
    """One local OS process per model instance."""

    def __init__(self, python_for_backend: dict[str, str] | None = None, log_level: str = "info"):
        self.python_for_backend = {k: v for k, v in (python_for_backend or {}).items() if v}
        self.log_level = log_level

    def python_for(self, settings: ModelSettings) -> str:
        return settings.python or self.python_for_backend.get(settings.backend or "") or sys.executable

    async def launch(self, settings: ModelSettings, progress: LoadProgress) -> Worker:
        devices, placed = gpu_placement(settings, os.environ.get("CUDA_VISIBLE_DEVICES"))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = devices
        wire_settings = {**settings.model_dump(mode="json", exclude_none=True), **placed}
        python = self.python_for(settings)
        front_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await asyncio.create_subprocess_exec(
                python, "-m", "gallama_core.workers.server", "--fd", str(worker_end.fileno()),
                "--parent", str(os.getpid()), pass_fds=(worker_end.fileno(),), stdin=subprocess.DEVNULL, env=env,
                # Its own session: a Ctrl+C or a signal to the front's process group reaches only the front, which
                # then shuts its workers down in order; a front that dies takes them along (see server.py).
                start_new_session=True)
        except OSError as exc:
            front_end.close()
            raise WorkerLoadError(f"cannot start the engine worker with {python}: {exc.strerror or exc}") from None
        finally:
            worker_end.close()
        connection = WorkerConnection(await Channel.open(front_end), settings.served_name)
        try:
            meta = await connection.handshake({"backend": settings.backend, "settings": wire_settings,
                                               "log_level": self.log_level}, progress)
        except BaseException:
            connection.channel.close()
            if process.returncode is None:
                process.kill()
            await process.wait()
            raise
        return LocalProcessWorker(process, connection, RemoteBackend(connection, meta, settings))
