"""``POST /v1/responses`` (and ``GET``/``DELETE /v1/responses/{id}`` for stored answers)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gallama_core.api.chat_blocks import message_blocks
from gallama_core.api.openapi_bodies import documented_body
from gallama_core.api.request_io import read_json, sse_event, sse_response, unless_disconnected
from gallama_core.api.responses_api.protocol import ResponsesRequest
from gallama_core.api.responses_api.store import ResponseStore, StoredResponse
from gallama_core.api.responses_api.translate import (ResponseBuilder, answer_messages, chat_body, input_messages,
                                                     response_events)
from gallama_core.api.state import AppState
from gallama_core.errors import GallamaError, InvalidRequestError
from gallama_core.pipeline.serving import Pipeline, parse_request


def _not_found(response_id: str) -> GallamaError:
    return GallamaError(f"no stored response with id {response_id!r} (responses are kept in memory, the least "
                        "recently used dropped first, and are lost when the server restarts)",
                        status_code=404, error_type="invalid_request_error", code="response_not_found")


def responses_router(state: AppState) -> APIRouter:
    router = APIRouter()
    server = state.plugin_config.get("server")
    store = ResponseStore(getattr(server, "stored_responses", 256))

    @router.post("/v1/responses", tags=["openai"], openapi_extra=documented_body(ResponsesRequest))
    async def create_response(request: Request):
        """OpenAI Responses: string or item input (messages, function calls and their outputs), instructions,
        function tools (enforced as in chat), ``text.format`` json_schema, ``previous_response_id`` over
        answers kept in memory, streaming events."""
        ask = parse_request(ResponsesRequest, await read_json(request))
        keep = ask.store is not False
        if ask.store and store.capacity <= 0:
            raise InvalidRequestError("this server keeps no responses (server.stored_responses is 0): send "
                                      "store: false", param="store")
        history = []
        if ask.previous_response_id:
            earlier = store.get(ask.previous_response_id)
            if earlier is None:
                raise InvalidRequestError(f"previous response {ask.previous_response_id!r} not found (responses "
                                          "are kept in memory for a while, only when sent with store: true)",
                                          param="previous_response_id", code="previous_response_not_found")
            history = earlier.messages
        conversation = history + input_messages(ask)
        builder = ResponseBuilder(ask)

        def remember(final: dict, blocks) -> None:
            if keep:
                store.put(final["id"], StoredResponse(conversation + answer_messages(blocks), final))

        done, result = await unless_disconnected(request, Pipeline(state).run("chat", chat_body(ask, conversation)))
        if not done:
            return Response(status_code=499)
        if ask.stream:
            return sse_response(response_events(builder, result, remember),
                                lambda event: sse_event(event, event["type"]), source=result)
        blocks, finish_reason = message_blocks(result)
        final = builder.response("completed", blocks, finish_reason,
                                 (result.usage.prompt_tokens, result.usage.completion_tokens))
        remember(final, blocks)
        return JSONResponse(final)

    @router.get("/v1/responses/{response_id}", tags=["openai"])
    async def get_response(response_id: str):
        """A stored response (``store`` was not false)."""
        stored = store.get(response_id)
        if stored is None:
            raise _not_found(response_id)
        return stored.response

    @router.delete("/v1/responses/{response_id}", tags=["openai"])
    async def delete_response(response_id: str):
        if not store.delete(response_id):
            raise _not_found(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    return router
