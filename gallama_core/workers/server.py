"""The engine worker: one OS process hosting one model instance's :class:`~gallama_core.models.backend.Backend`.

Started by the front (``python -m gallama_core.workers.server --fd N``) with one end of a socket pair as file
descriptor N; it speaks :mod:`gallama_core.workers.protocol` over it. The backend plugin's code (and its
engine) runs only here. The worker exits when the front says ``shutdown``, when the socket closes (the
front is gone: nothing is left behind) and, on Linux, when its parent dies (``PR_SET_PDEATHSIG``), even if
the engine holds the interpreter in native code at that moment.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any, Callable

from ..errors import GallamaError
from ..models.backend import Backend
from ..plugin_system.registrations import LoadProgress
from .protocol import (PROTOCOL_VERSION, Channel, chunk_to_wire, error_to_wire, merge_wire_chunks, pack,
                       request_from_wire, sendable)

log = logging.getLogger("gallama.worker")

#: Attributes every backend has that the front gets through the metadata's own keys, not ``attributes``.
_META_KEYS = {"backend_name", "model_name", "max_seq_len", "kind", "chat_template", "settings",
              "remote_methods", "generate_into"}


def backend_metadata(backend: Backend) -> dict[str, Any]:
    """What the front's RemoteBackend needs to stand in for ``backend``."""
    template = backend.chat_template
    attributes = {}
    for name in dir(backend):
        if name.startswith("_") or name in _META_KEYS:
            continue
        try:
            value = getattr(backend, name)
        except Exception:
            continue
        if not callable(value) and sendable(value):
            attributes[name] = value
    info = backend.info()
    return {
        "backend_name": backend.backend_name, "model_name": backend.model_name,
        "max_seq_len": backend.max_seq_len, "kind": backend.kind,
        "chat_template": None if template is None else {
            "source": template.source, "bos_token": template.bos_token, "eos_token": template.eos_token,
            "engine_adds_bos": template.engine_adds_bos},
        "info": info if sendable(info) else {},
        "attributes": attributes,
        "methods": list(getattr(backend, "remote_methods", ())),
    }


class Outbox:
    """Everything the worker sends, written by one task. Chunks produced while a write is still draining
    (the front is busy) are merged into the next message instead of queueing one message per token."""

    def __init__(self, channel: Channel):
        self._channel = channel
        self._chunks: dict[int, list[dict[str, Any]]] = {}
        self._control: list[dict[str, Any]] = []
        self._wake = asyncio.Event()

    def chunk(self, job_id: int, chunk: dict[str, Any]) -> None:
        self._chunks.setdefault(job_id, []).append(chunk)
        self._wake.set()

    def control(self, message: dict[str, Any]) -> None:
        self._control.append(message)
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            chunks, self._chunks = self._chunks, {}
            control, self._control = self._control, []
            if chunks:  # a job's chunks always precede its end/error, which come later in `control`
                self._channel.send_nowait(chunks_message(chunks))
            for message in control:
                self._channel.send_nowait(message)
            await self._channel.drain()


def chunks_message(by_job: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """One ``chunks`` message: each job's wire chunks, consecutive plain ones merged."""
    return {"t": "chunks", "jobs": [[job_id, chunks if len(chunks) == 1 else merge_wire_chunks(chunks)]
                                    for job_id, chunks in by_job.items()]}


class StepMessages:
    """The engine thread's target (:class:`~gallama_core.models.engine_thread.StepTarget`) for jobs started with
    ``Backend.generate_into``: each engine step becomes one ``chunks`` message for every job (then ``end`` or
    ``error`` for those that finished), packed and written to the socket from the engine thread itself. The
    worker's event loop does nothing per token, so the engine thread never waits for it to hand the GIL back."""

    def __init__(self, channel: Channel, finished: Callable[[int], None]):
        self._channel = channel
        self._finished = finished

    def post(self, deliveries: list[tuple[Any, Any]]) -> None:
        jobs: dict[int, list[dict[str, Any]]] = {}
        ends = []
        for job_id, item in deliveries:
            if item is None:
                ends.append({"t": "end", "id": job_id})
            elif isinstance(item, BaseException):
                ends.append(failure_message(job_id, item))
            else:
                jobs.setdefault(job_id, []).append(chunk_to_wire(item))
        data = pack(chunks_message(jobs)) if jobs else b""
        for message in ends:  # after the job's last chunks
            data += pack(message)
            self._finished(message["id"])
        self._channel.send_packed(data)


def failure_message(job_id: int, exc: BaseException) -> dict[str, Any]:
    """The ``error`` message for a job that failed (logged here unless it is a client's error)."""
    if not isinstance(exc, GallamaError):
        log.error("generation failed", exc_info=exc)
    return {"t": "error", "id": job_id, "error": error_to_wire(exc)}


class WorkerService:
    """Serves one loaded backend: generation jobs, cancellation, remote method calls, health."""

    def __init__(self, backend: Backend, channel: Channel):
        self.backend = backend
        self.channel = channel
        self.outbox = Outbox(channel)
        self.jobs: dict[int, asyncio.Task] = {}
        #: Jobs started with the backend's ``generate_into``, by id: their cancel functions. Only where the
        #: channel takes writes from any thread (the local socket; another launcher's may not).
        self.direct: dict[int, Callable[[], None] | None] | None = None
        if backend.generate_into is not None and hasattr(channel, "send_packed"):
            self.direct = {}
            self.steps = StepMessages(channel, self._direct_finished)
        # A job may end on the engine's thread before generate_into has returned its cancel function (llama.cpp
        # refuses a too-long prompt at once): its entry is there from the start, so that its end removes it and
        # no cancel function outlives the job.
        self._direct_lock = threading.Lock()

    def _direct_finished(self, job_id: int) -> None:  # any thread
        with self._direct_lock:
            self.direct.pop(job_id, None)

    def _start(self, job_id: int, wire_request: dict[str, Any]) -> None:
        self.direct[job_id] = None  # started; its cancel function once generate_into returns it
        try:
            cancel = self.backend.generate_into(request_from_wire(wire_request), self.steps, job_id)
        except Exception as exc:  # refused before it started (400...)
            self.direct.pop(job_id, None)
            self.outbox.control(failure_message(job_id, exc))
            return
        with self._direct_lock:
            if job_id in self.direct:  # not ended yet
                self.direct[job_id] = cancel

    async def _generate(self, job_id: int, wire_request: dict[str, Any]) -> None:
        chunks = None
        try:
            chunks = self.backend.generate(request_from_wire(wire_request))
            async for chunk in chunks:
                self.outbox.chunk(job_id, chunk_to_wire(chunk))
            self.outbox.control({"t": "end", "id": job_id})
        except asyncio.CancelledError:
            pass  # the front cancelled: it expects nothing more for this job
        except Exception as exc:
            self.outbox.control(failure_message(job_id, exc))
        finally:
            self.jobs.pop(job_id, None)
            if chunks is not None:
                await chunks.aclose()  # frees the engine slot

    async def _call(self, call_id: int, method: str, args: list[Any]) -> None:
        try:
            if method not in getattr(self.backend, "remote_methods", ()):
                raise GallamaError(f"backend {self.backend.backend_name!r} has no remote method {method!r}")
            value = await getattr(self.backend, method)(*args)
            self.outbox.control({"t": "result", "id": call_id, "value": value})
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            if not isinstance(exc, GallamaError):
                log.exception("%s failed", method)
            self.outbox.control({"t": "error", "id": call_id, "error": error_to_wire(exc)})
        finally:
            self.jobs.pop(call_id, None)

    def _engine_stats(self) -> dict[str, float] | None:
        try:
            return self.backend.engine_stats()
        except Exception:
            log.warning("engine_stats failed", exc_info=True)
            return None

    async def serve(self, inbox: "asyncio.Queue[dict[str, Any] | None]") -> None:
        """Until ``shutdown`` or the socket closes (``None`` in ``inbox``)."""
        writer = asyncio.create_task(self.outbox.run())
        try:
            while (message := await inbox.get()) is not None:
                kind = message.get("t")
                if kind == "generate" and self.direct is not None:
                    self._start(message["id"], message["request"])
                elif kind == "generate":
                    self.jobs[message["id"]] = asyncio.create_task(self._generate(message["id"], message["request"]))
                elif kind == "cancel":
                    task = self.jobs.get(message["id"])
                    if task is not None:
                        task.cancel()
                    cancel = self.direct.pop(message["id"], None) if self.direct is not None else None
                    if cancel is not None:
                        cancel()
                elif kind == "call":
                    self.jobs[message["id"]] = asyncio.create_task(
                        self._call(message["id"], message["method"], list(message.get("args") or [])))
                elif kind == "ping":
                    self.outbox.control({"t": "pong", "id": message.get("id"), "value": self._engine_stats()})
                elif kind == "shutdown":
                    break
        finally:
            for cancel in list((self.direct or {}).values()):
                if cancel is not None:
                    cancel()
            for task in list(self.jobs.values()):
                task.cancel()
            await asyncio.gather(*self.jobs.values(), return_exceptions=True)
            await asyncio.sleep(0)
            writer.cancel()


def load_backend_from_plugins(backend_name: str, settings: dict[str, Any],
                              progress: LoadProgress) -> Backend:
    """Find the backend among this environment's plugins, validate the entry with its model and load it."""
    from ..config import format_validation_error
    from ..errors import ConfigError
    from ..models.registry import BackendRegistry
    from ..plugin_system.manager import get_plugin_manager

    spec = BackendRegistry(get_plugin_manager()).get(backend_name)
    try:
        validated = spec.settings_model.model_validate({**settings, "backend": spec.name})
    except Exception as exc:
        if hasattr(exc, "errors"):
            raise ConfigError(format_validation_error(settings.get("model_name") or settings.get("model_id", "?"),
                                                      exc)) from None
        raise
    return spec.load(validated, progress)


async def run_worker(channel: Channel, loader: Callable[[str, dict[str, Any], LoadProgress], Backend]) -> int:
    """The worker's life: hello, load, serve, close. Returns the exit code."""
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def pump() -> None:  # every message from the front, then None when the socket closes
        try:
            async for message in channel:
                inbox.put_nowait(message)
        finally:
            inbox.put_nowait(None)

    reader = asyncio.create_task(pump())
    channel.send_nowait({"t": "hello", "v": PROTOCOL_VERSION, "pid": os.getpid()})
    load = await inbox.get()
    if load is None or load.get("t") != "load":
        return 0
    _configure_logging(load.get("log_level") or "info", load.get("settings", {}).get("model_name") or "")

    def report(message: str, fraction: float | None) -> None:
        loop.call_soon_threadsafe(channel.send_nowait, {"t": "progress", "message": message, "fraction": fraction})

    loading = asyncio.ensure_future(asyncio.to_thread(loader, load["backend"], load["settings"], LoadProgress(report)))
    # While the engine loads, a closed socket or a shutdown (the model was removed) still ends this process.
    while not loading.done():
        waiting = asyncio.ensure_future(inbox.get())
        await asyncio.wait({loading, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            waiting.cancel()
        elif waiting.result() is None or waiting.result().get("t") == "shutdown":
            os._exit(0)  # the load thread cannot be interrupted; nothing of it is worth keeping
    try:
        backend = loading.result()
    except BaseException as exc:
        text = exc.message if isinstance(exc, GallamaError) else str(exc) or type(exc).__name__
        if not isinstance(exc, (GallamaError, FileNotFoundError, ValueError)) and type(exc).__name__ != "ConfigError":
            text = f"{type(exc).__name__}: {text}"
        await channel.send({"t": "load_failed", "error": text})
        return 1
    await channel.send({"t": "ready", "meta": backend_metadata(backend)})
    service = WorkerService(backend, channel)
    try:
        await service.serve(inbox)
    finally:
        reader.cancel()
        try:
            await asyncio.wait_for(backend.close(), timeout=10)
        except Exception:
            log.warning("closing the backend failed", exc_info=True)
    return 0


def _configure_logging(level: str, name: str) -> None:
    logging.basicConfig(level=level.upper() if level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO",
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the front dies, even mid native call (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="gallama engine worker (started by `gallama run`, not by hand)")
    parser.add_argument("--fd", type=int, required=True, help="inherited socket file descriptor")
    parser.add_argument("--parent", type=int, default=0, help="pid of the front")
    args = parser.parse_args(argv)
    _die_with_parent()
    if args.parent and os.getppid() != args.parent:
        sys.exit(0)  # the front died before the death signal was armed
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the front's to handle; it stops us
    sock = socket.socket(fileno=args.fd)

    async def run() -> int:
        channel = await Channel.open(sock)
        return await run_worker(channel, load_backend_from_plugins)

    try:
        import uvloop

        code = uvloop.run(run())
    except ImportError:
        code = asyncio.run(run())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # engine threads must not keep the process alive


if __name__ == "__main__":
    main()
