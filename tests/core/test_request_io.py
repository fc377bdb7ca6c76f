"""The front's wait for a request's work, and what a client that leaves before the answer starts does to it."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from gallama_core.api.request_io import unless_disconnected


class Connection:
    """An ASGI connection whose body has been read: ``receive`` blocks until the client leaves, as a server's
    does; it counts how often it is called."""

    def __init__(self):
        self.gone = asyncio.Event()
        self.receives = 0

    async def receive(self):
        self.receives += 1
        await self.gone.wait()
        return {"type": "http.disconnect"}

    def request(self) -> Request:
        return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, self.receive)


async def test_work_that_ends_first_gives_its_result_and_waits_on_one_receive():
    connection = Connection()

    async def work():
        await asyncio.sleep(0.6)  # longer than a poll period: a polling watcher would ask again meanwhile
        return "answer"

    assert await unless_disconnected(connection.request(), work()) == (True, "answer")
    assert connection.receives == 1  # one pending receive, no polling


async def test_a_client_that_leaves_cancels_the_work_at_once():
    connection = Connection()
    cancelled = asyncio.Event()

    async def work():
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    waiting = asyncio.ensure_future(unless_disconnected(connection.request(), work()))
    await asyncio.sleep(0.05)
    connection.gone.set()
    # the disconnect is seen on the next loop passes, not at a poll period's end
    done, _ = await asyncio.wait({waiting}, timeout=5)
    assert done and waiting.result() == (False, None)
    assert cancelled.is_set()

