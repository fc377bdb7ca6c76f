"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` (errors in Anthropic's shape: see
:func:`gallama_core.errors.error_body`; ``x-api-key`` is accepted by the surface middleware)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gallama_core.api.anthropic_api.protocol import CountTokensRequest, MessagesRequest
from gallama_core.api.anthropic_api.translate import chat_body, message_events, message_response
from gallama_core.api.openapi_bodies import documented_body
from gallama_core.api.request_io import read_json, sse_event, sse_response, unless_disconnected
from gallama_core.api.state import AppState
from gallama_core.pipeline.serving import Pipeline, parse_request


def anthropic_router(state: AppState) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/messages", tags=["anthropic"], openapi_extra=documented_body(MessagesRequest))
    async def messages(request: Request):
        """Anthropic Messages: text, tools (``tool_choice`` any/tool always give schema-valid ``tool_use``),
        tool results, prefill, thinking blocks from the model's reasoning, streaming events."""
        message = parse_request(MessagesRequest, await read_json(request))
        body, prefill = chat_body(message)
        done, result = await unless_disconnected(request, Pipeline(state).run("chat", body))
        if not done:
            return Response(status_code=499)
        if message.stream:
            return sse_response(message_events(message, result, prefill), lambda event: sse_event(event, event["type"]),
                                source=result)
        return JSONResponse(message_response(message, result, prefill))

    @router.post("/v1/messages/count_tokens", tags=["anthropic"], openapi_extra=documented_body(CountTokensRequest))
    async def count_tokens(request: Request):
        """The prompt's tokens as the model sees it (system, messages and tools), counted by the engine: the
        prompt is processed once for one token, which also warms the prompt cache for the message."""
        count = parse_request(CountTokensRequest, await read_json(request))
        body, _ = chat_body(count)
        body["max_tokens"] = 1
        done, result = await unless_disconnected(request, Pipeline(state).run("chat", body))
        if not done:
            return Response(status_code=499)
        return {"input_tokens": result.usage.prompt_tokens}

    return router
