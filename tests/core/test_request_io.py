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



class Stream:
    """A pipeline stream that yields an item every 10 ms, ``limit`` of them (endless by default), and remembers
    whether it was closed."""

    def __init__(self, limit: int | None = None):
        self.limit, self.sent, self.closed = limit, 0, False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.limit is not None and self.sent >= self.limit:
            raise StopAsyncIteration
        await asyncio.sleep(0.01)
        self.sent += 1
        return {"n": self.sent}

    async def aclose(self):
        self.closed = True


async def _serve(stream: Stream, connection: Connection, bodies: list[bytes]):
    from gallama_core.api.request_io import sse_event, sse_response

    async def send(message):
        if message["type"] == "http.response.body" and message.get("body"):
            bodies.append(message["body"])

    response = sse_response(stream, lambda item: sse_event(item))
    await response({"type": "http", "method": "POST", "path": "/", "headers": []}, connection.receive, send)


async def test_a_stream_ends_when_its_client_leaves_and_the_generation_is_closed():
    connection, stream, bodies = Connection(), Stream(), []
    serving = asyncio.ensure_future(_serve(stream, connection, bodies))
    await asyncio.sleep(0.1)
    assert bodies and not serving.done()
    connection.gone.set()
    done, _ = await asyncio.wait({serving}, timeout=5)
    assert done and serving.exception() is None  # ended quietly, as a gone client's response does
    assert stream.closed
    sent = len(bodies)
    await asyncio.sleep(0.05)
    assert len(bodies) == sent  # nothing more was made for nobody


async def test_a_stream_that_ends_is_closed_and_a_server_shutdown_still_cancels_it():
    connection, bodies = Connection(), []
    finished = Stream(limit=3)
    await asyncio.wait_for(_serve(finished, connection, bodies), 5)
    assert bodies == [b'data: {"n": 1}\n\n', b'data: {"n": 2}\n\n', b'data: {"n": 3}\n\n'] and finished.closed
    assert connection.receives == 1  # the watcher waited on one receive, and was stopped with the response
    endless = Stream()
    serving = asyncio.ensure_future(_serve(endless, Connection(), []))
    await asyncio.sleep(0.05)
    serving.cancel()  # not the client leaving: the cancellation goes on
    done, _ = await asyncio.wait({serving}, timeout=5)
    assert done and serving.cancelled() and endless.closed
