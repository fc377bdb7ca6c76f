"""The front's side of an engine worker: :class:`RemoteBackend`, a :class:`~gallama_core.models.backend.Backend`
that forwards everything over :mod:`gallama_core.workers.protocol` to the worker process hosting the real one.

The pipeline, feature plugins (thinking, artifact, function calling) and plugin routes use it exactly as they
used an in-process backend: ``generate`` streams chunks, closing the stream early cancels the job in the
worker, remote methods (``embed``, ``rerank``...) are awaited like local ones, and the backend's plain
attributes (``dimension``...) are readable.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

from ..errors import ServiceUnavailableError
from ..models.backend import Backend, GenerationChunk, GenerationRequest
from ..pipeline.chat_template import ChatTemplate
from ..plugin_system.registrations import LoadProgress
from .protocol import PROTOCOL_VERSION, Channel, chunk_from_wire, error_from_wire, merge_wire_chunks, request_to_wire

log = logging.getLogger("gallama.workers")

_END = object()


class WorkerLoadError(Exception):
    """The worker could not load its model; the message is the worker's own error text."""


class WorkerLost(ServiceUnavailableError):
    """The worker went away while a request was using it (503 before a stream starts)."""


class WorkerConnection:
    """One worker's channel: the start-up handshake, then a reader task that hands every message to the job
    it belongs to. When the channel closes (the worker died or exited), every open job fails at once."""

    def __init__(self, channel: Channel, label: str):
        self.channel = channel
        self.label = label
        self.pid: int | None = None
        self._ids = itertools.count(1)
        self._jobs: dict[int, asyncio.Queue] = {}
        self._calls: dict[int, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self.lost = asyncio.Event()
        self.lost_reason = "the engine worker stopped"
        self._stopping = False  # the front asked the worker to stop: its exit is no news
        #: Set by the launcher: says why the worker went away once its channel closed (e.g. its exit signal).
        self.explain_loss: Callable[[], Awaitable[str]] | None = None

    # ------------------------------------------------------------------------------------ start-up
    async def handshake(self, load: dict[str, Any], progress: LoadProgress) -> dict[str, Any]:
        """Send ``load`` and wait for ``ready`` (its metadata); :class:`WorkerLoadError` otherwise."""
        messages = self.channel.__aiter__()
        hello = await anext(messages, None)
        if hello is None:
            raise WorkerLoadError("the engine worker exited before it started (see the log above for why)")
        if hello.get("t") != "hello" or hello.get("v") != PROTOCOL_VERSION:
            raise WorkerLoadError(f"the engine worker speaks protocol {hello.get('v')!r}, the front "
                                  f"{PROTOCOL_VERSION}: install the same gallama-core version in both environments")
        self.pid = hello.get("pid")
        await self.channel.send({"t": "load", **load})
        async for message in messages:
            kind = message.get("t")
            if kind == "progress":
                progress.update(message.get("message", ""), message.get("fraction"))
            elif kind == "ready":
                self._reader = asyncio.get_running_loop().create_task(self._read(messages))
                return message["meta"]
            elif kind == "load_failed":
                raise WorkerLoadError(message.get("error") or "the model failed to load")
        raise WorkerLoadError("the engine worker exited while loading the model (see the log above for why)")

    # ------------------------------------------------------------------------------------ serving
    async def _read(self, messages) -> None:
        try:
            async for message in messages:
                kind = message.get("t")
                if kind == "chunks":
                    for job_id, chunks in message["jobs"]:
                        queue = self._jobs.get(job_id)
                        if queue is not None:
                            queue.put_nowait(chunks)
                elif kind == "end":
                    queue = self._jobs.get(message["id"])
                    if queue is not None:
                        queue.put_nowait(_END)
                elif kind == "error":
                    error = error_from_wire(message.get("error") or {})
                    queue = self._jobs.get(message["id"])
                    if queue is not None:
                        queue.put_nowait(error)
                    self._settle(message["id"], error=error)
                elif kind in ("result", "pong"):
                    self._settle(message.get("id"), value=message.get("value"))
        except Exception:
            log.exception("%s: reading from the engine worker failed", self.label)
        finally:
            if self.explain_loss is not None and not self.lost.is_set() and not self._stopping:
                try:
                    self.lost_reason = await asyncio.wait_for(self.explain_loss(), 1.0)
                except (asyncio.TimeoutError, Exception):
                    pass
            self._on_lost()

    def _settle(self, call_id, value=None, error: BaseException | None = None) -> None:
        future = self._calls.pop(call_id, None)
        if future is not None and not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

    def _on_lost(self) -> None:
        if self.lost.is_set():
            return
        self.lost.set()
        for queue in self._jobs.values():
            queue.put_nowait(WorkerLost(f"model {self.label!r}: {self.lost_reason}; retry shortly"))
        for call_id in list(self._calls):
            self._settle(call_id, error=WorkerLost(f"model {self.label!r}: {self.lost_reason}; retry shortly"))

    def fail_open_jobs(self, reason: str) -> None:
        """End every open job with a 503 now (the server shuts down); the worker cancels them."""
        for job_id, queue in list(self._jobs.items()):
            queue.put_nowait(ServiceUnavailableError(f"model {self.label!r}: {reason}"))
        for call_id in list(self._calls):
            self._settle(call_id, error=ServiceUnavailableError(f"model {self.label!r}: {reason}"))

    def _check_alive(self) -> None:
        if self.lost.is_set() or self.channel.closed:
            raise WorkerLost(f"model {self.label!r}: {self.lost_reason}; retry shortly")

    def open_job(self) -> tuple[int, asyncio.Queue]:
        self._check_alive()
        job_id = next(self._ids)
        queue: asyncio.Queue = asyncio.Queue()
        self._jobs[job_id] = queue
        return job_id, queue

    def close_job(self, job_id: int, cancel: bool) -> None:
        self._jobs.pop(job_id, None)
        if cancel and not self.lost.is_set():
            self.channel.send_nowait({"t": "cancel", "id": job_id})

    async def call(self, message: dict[str, Any]) -> Any:
        """Send a message that the worker answers with ``result`` / ``pong`` / ``error`` for its id."""
        self._check_alive()
        call_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        self.channel.send_nowait({**message, "id": call_id})
        try:
            return await future
        finally:
            if not future.done():  # the caller gave up: stop the work in the worker too
                self._calls.pop(call_id, None)
                if not self.lost.is_set():
                    self.channel.send_nowait({"t": "cancel", "id": call_id})

    async def shutdown(self) -> None:
        if not self.lost.is_set():
            self.lost_reason = "the model is being unloaded"  # what its open streams end with
            self._stopping = True
            await self.channel.send({"t": "shutdown"})

    def abort(self, reason: str) -> None:
        """Fail every open job now (the worker is known dead) and close the channel."""
        self.lost_reason = reason
        self._on_lost()
        self.channel.close()
        if self._reader is not None:
            self._reader.cancel()


def _chunks_of(items: list) -> list[dict[str, Any]]:
    return merge_wire_chunks([chunk for group in items for chunk in group])


class RemoteBackend(Backend):
    """A backend living in an engine worker, seen from the front."""

    def __init__(self, connection: WorkerConnection, meta: dict[str, Any], settings=None):
        template = meta.get("chat_template")
        super().__init__(meta["backend_name"], meta["model_name"], int(meta["max_seq_len"]),
                         ChatTemplate(**template) if template else None)
        self.kind = meta.get("kind") or "chat"
        self.remote_methods = tuple(meta.get("methods") or ())
        self.settings = settings
        self.connection = connection
        self._info = meta.get("info") or {}
        self._engine_stats: dict[str, float] | None = None
        # The backend's plain attributes, as instance attributes: they win over the Backend class's defaults
        # (``concurrency``, ``special_tokens``...) as they do on the backend itself.
        for name, value in (meta.get("attributes") or {}).items():
            if name not in self.__dict__ and not callable(getattr(type(self), name, None)):
                setattr(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the front does not define itself: the backend's remote methods.
        if name in self.__dict__.get("remote_methods", ()):
            return self._remote_method(name)
        raise AttributeError(f"{type(self).__name__} of {self.__dict__.get('model_name')!r} has no attribute {name!r}")

    def _remote_method(self, name: str) -> Callable[..., Any]:
        async def method(*args):
            return await self.connection.call({"t": "call", "method": name, "args": list(args)})

        method.__name__ = name
        return method

    def info(self) -> dict:
        return dict(self._info)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        connection = self.connection
        job_id, queue = connection.open_job()
        connection.channel.send_nowait({"t": "generate", "id": job_id, "request": request_to_wire(request)})
        finished = False
        try:
            while True:
                items = [await queue.get()]
                while not queue.empty():  # several messages waiting: handle them as one
                    items.append(queue.get_nowait())
                chunks = []
                for item in items:
                    if isinstance(item, list):
                        chunks.append(item)
                        continue
                    for chunk in _chunks_of(chunks) if chunks else ():
                        yield chunk_from_wire(chunk)
                    finished = True
                    if item is _END:
                        return
                    raise item
                for chunk in _chunks_of(chunks):
                    yield chunk_from_wire(chunk)
        finally:
            connection.close_job(job_id, cancel=not finished)

    async def ping(self, timeout: float = 5.0) -> None:
        """Round trip to the worker; its answer brings the engine's counters (see :meth:`engine_stats`)."""
        stats = await asyncio.wait_for(self.connection.call({"t": "ping"}), timeout)
        self._engine_stats = stats if isinstance(stats, dict) else None

    def engine_stats(self) -> dict[str, float] | None:
        """The worker's engine counters as of the last :meth:`ping`."""
        return self._engine_stats

    async def close(self) -> None:
        await self.connection.shutdown()

