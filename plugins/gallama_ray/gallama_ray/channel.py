"""The engine-worker protocol (:mod:`gallama_core.workers.protocol`) carried by Ray instead of a socket.

Both ends speak the same packed messages as a local worker; only the transport differs:

- front → worker: each message is one call of the actor's ``deliver(seq, data)`` (``seq`` restores the order,
  which Ray does not promise for an async actor's calls);
- worker → front: one long streaming-generator call, ``events()``, whose every item is the bytes of all the
  messages written since the last item. The generator is back-pressured (:data:`IN_FLIGHT` items not yet read
  by the front), so when the front falls behind the worker's outbox merges tokens into fewer, larger messages
  instead of queueing one Ray object per token.

:class:`ActorSideChannel` is what ``run_worker`` gets inside the actor; :class:`RayChannel` is what the front's
``WorkerConnection`` gets. Both look like :class:`gallama_core.workers.protocol.Channel`.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any, AsyncIterator

from gallama_core.workers.protocol import new_unpacker, pack

#: Items of the worker's event stream that may wait unread before the worker's outbox holds back (and merges).
IN_FLIGHT = 4


class ActorSideChannel:
    """Inside the actor: messages from ``deliver`` calls in, packed bytes out to the ``events`` stream.

    Made on the actor's event loop. ``send_packed`` may be called from any thread: the engine thread writes each
    step's messages itself (``Backend.generate_into``), as it does into a local worker's socket, and the loop
    wakes once for whatever piled up, never once per job."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()  # guards _out and _wake_pending: engine thread and loop both write
        self._wake_pending = False
        self._inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._unpacker = new_unpacker()
        self._next_seq = 0
        self._early: dict[int, bytes] = {}
        self._out: list[bytes] = []
        self._has_output = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closed = False

    # front -> worker
    def feed(self, seq: int, data: bytes) -> None:
        self._early[seq] = data
        while self._next_seq in self._early:
            self._unpacker.feed(self._early.pop(self._next_seq))
            self._next_seq += 1
            for message in self._unpacker:
                self._inbox.put_nowait(message)

    def end_input(self) -> None:
        self._inbox.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while (message := await self._inbox.get()) is not None:
            yield message

    # worker -> front
    def send_nowait(self, message: dict[str, Any]) -> None:
        if not self._closed:
            with self._lock:
                self._out.append(pack(message))
            self._output_waiting()

    def send_packed(self, data: bytes) -> None:
        """Any thread: messages already packed (one or several, back to back)."""
        if self._closed or not data:
            return
        with self._lock:
            self._out.append(data)
            wake, self._wake_pending = not self._wake_pending, True
        if wake:
            try:
                self._loop.call_soon_threadsafe(self._output_waiting)
            except RuntimeError:  # the loop is closed: the actor is going away
                pass

    def _output_waiting(self) -> None:
        with self._lock:
            self._wake_pending = False
        self._drained.clear()
        self._has_output.set()

    async def send(self, message: dict[str, Any]) -> None:
        self.send_nowait(message)
        await self.drain()

    async def drain(self) -> None:
        if not self._closed:
            await self._drained.wait()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._has_output.set()
        self._drained.set()

    async def outgoing(self) -> AsyncIterator[bytes]:
        """The bytes for the ``events`` stream: whatever was written since the last item, until closed."""
        while True:
            await self._has_output.wait()
            self._has_output.clear()
            with self._lock:
                data, self._out = b"".join(self._out), []
            if data:
                yield data  # with back-pressure this waits while the front has IN_FLIGHT items unread
            self._drained.set()
            if self._closed and not self._out:
                return


class RayChannel:
    """In the front: the worker's messages from its actor's ``events`` stream; ours through ``deliver``."""

    def __init__(self, actor: Any):
        self._actor = actor
        self._seq = itertools.count()
        self._unpacker = new_unpacker()
        self._closed = False
        self._stream: Any = None
        #: Why the stream ended, in words (e.g. Ray's ActorDiedError), or None while it runs / when it ended cleanly.
        self.error: str | None = None
        self.died = False
        #: Items of the events stream read so far (one item carries every message written since the one before:
        #: what a chunk costs through Ray depends on how many share an item; benchmarks/bench_ray_chunks.py).
        self.items_received = 0

    def send_nowait(self, message: dict[str, Any]) -> None:
        if not self._closed:
            # Fire and forget: a dead actor shows up as the end of the events stream, which fails every job.
            self._actor.deliver.remote(next(self._seq), pack(message))

    async def send(self, message: dict[str, Any]) -> None:
        self.send_nowait(message)

    async def drain(self) -> None:
        return None

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        import ray

        self._stream = self._actor.events.options(_generator_backpressure_num_objects=IN_FLIGHT).remote()
        try:
            async for ref in self._stream:
                data = await ref
                self.items_received += 1
                self._unpacker.feed(data)
                for message in self._unpacker:
                    yield message
        except ray.exceptions.RayError as exc:
            self.died = isinstance(exc, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError))
            self.error = _first_line(exc)
        finally:
            self._closed = True

    def close(self) -> None:
        self._closed = True
        if self._stream is not None:
            try:
                import ray

                ray.cancel(self._stream)
            except Exception:
                pass


def _first_line(exc: BaseException) -> str:
    """Ray's error in a few words: its class and first sentence (its full text runs to many lines)."""
    lines = str(exc).strip().splitlines()
    text = lines[0].split(". ")[0].rstrip(".") if lines else ""
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
