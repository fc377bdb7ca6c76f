"""Reading request bodies and writing event streams, shared by every API surface of the front."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

from fastapi import Request
from fastapi.responses import StreamingResponse

from gallama_core.errors import InvalidRequestError

#: Deepest nesting of arrays and objects a request body may have (a JSON schema in a tool is ~10 deep).
MAX_JSON_DEPTH = 64


async def read_json(request: Request) -> Any:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        body = None
    if body is None and raw.strip() != b"null" or json_depth(body) > MAX_JSON_DEPTH:
        raise InvalidRequestError(f"the request body nests arrays and objects more than {MAX_JSON_DEPTH} deep",
                                  code="json_too_deep")
    return body


def json_depth(value: Any) -> int:
    """How deep arrays and objects nest in ``value`` (no recursion: safe on any input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            items = item.values()
        elif isinstance(item, list):
            items = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in items)
    return deepest


async def _until_disconnected(receive: Callable[[], Awaitable[dict]]) -> None:
    """Returns when the client goes away (``receive``: the request's ASGI receive). The body has been read, so the
    next ASGI message is ``http.disconnect``: waiting for it is immediate and costs nothing meanwhile (no
    polling)."""
    while (await receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.25)  # a server that answers with empty body messages instead of waiting


async def unless_disconnected(request: Request, work: Awaitable[Any]) -> tuple[bool, Any]:
    """``(True, result)`` of ``work``, or ``(False, None)`` when the client went away first.

    Until the answer starts (the prompt is still being processed, or waits for a slot), a client that goes
    away cancels the work: the engine stops the job and frees its slot."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnected(request.receive))
    done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    if task not in done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if not task.cancelled() and task.exception() is None and hasattr(task.result(), "aclose"):
            await task.result().aclose()  # it finished as the client left: free what it holds
        return False, None
    watcher.cancel()
    return True, task.result()


def sse_event(data: Any, event: str | None = None) -> str:
    """One server-sent event; ``data`` is sent as is when it is a string, as JSON otherwise."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


class _ClosingStreamingResponse(StreamingResponse):
    """Closes its streams when the response ends in any way, even when the body was never iterated (a client
    that left before the first byte): the generation behind them stops and frees its slot.

    The body is sent from the request's own task, and one watcher task waits for the client to leave and then
    cancels it. (Starlette's response does the same with an anyio task group per response, whose set-up and
    cancel scope, which formats the task's repr when it cancels, took about a tenth of the front's CPU per
    streamed request in a profile. It is the path Starlette takes under servers of ASGI spec < 2.4, uvicorn's
    included, whose ``send`` ignores a gone client instead of raising.)"""

    def __init__(self, content, closing: list, **kwargs):
        super().__init__(content, **kwargs)
        self._closing = closing

    async def __call__(self, scope, receive, send) -> None:
        task = asyncio.current_task()
        streaming, left = True, False

        async def watch() -> None:
            nonlocal left
            await _until_disconnected(receive)
            if streaming:  # the client left before the last byte: stop making the rest
                left = True
                task.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            # Ours (the watcher's) ends the response quietly; any other cancellation goes on.
            if not left or (hasattr(task, "uncancel") and task.uncancel() > 0):
                raise
        finally:
            streaming = False
            watcher.cancel()
            for stream in self._closing:
                await stream.aclose()
        if self.background is not None:
            await self.background()


def sse_response(items: AsyncIterator[Any], render: Callable[[Any], str | Iterable[str]],
                 source: AsyncIterator[Any] | None = None) -> StreamingResponse:
    """A text/event-stream response of ``render(item)`` for each item. ``items`` (and ``source``, the
    pipeline stream that ``items`` translates) are closed when the response ends, which cancels the generation
    when the client went away."""

    async def body():
        async for item in items:
            rendered = render(item)
            for text in ([rendered] if isinstance(rendered, str) else rendered):
                yield text.encode()

    return _ClosingStreamingResponse(body(), [items] + ([source] if source is not None else []),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
