"""The Ray actor hosting one model instance: the same engine-worker code as a local worker process
(:func:`gallama_core.workers.server.run_worker`), over :class:`~gallama_ray.channel.ActorSideChannel`.

The class is plain; the launcher turns it into a Ray actor (``ray.remote(EngineHost).options(...)``) with the
model's resources, so this module imports no Ray and the backend's engine is imported only inside the actor.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, AsyncIterator

from .channel import ActorSideChannel


class EngineHost:
    """One engine worker as a Ray actor: ``events()`` is its output, ``deliver()`` its input."""

    def __init__(self) -> None:
        self._channel: ActorSideChannel | None = None
        self._life: asyncio.Task | None = None

    def _start(self) -> ActorSideChannel:
        if self._channel is None:
            from gallama_core.workers.server import load_backend_from_plugins, run_worker

            channel = self._channel = ActorSideChannel()

            async def life() -> None:
                try:
                    await run_worker(channel, load_backend_from_plugins)
                finally:
                    channel.close()

            self._life = asyncio.get_running_loop().create_task(life())
        return self._channel

    async def deliver(self, seq: int, data: bytes) -> None:
        self._start().feed(seq, data)

    async def events(self) -> AsyncIterator[bytes]:
        async for data in self._start().outgoing():
            yield data

    def where(self) -> dict[str, Any]:
        import ray

        context = ray.get_runtime_context()
        return {"pid": os.getpid(), "node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address()}
