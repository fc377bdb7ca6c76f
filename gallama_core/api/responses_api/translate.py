"""OpenAI Responses ⇄ chat: a response request becomes a chat request body for the same pipeline, and the
chat answer (whole, or as block events) becomes a response object or its stream of events."""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Callable

from gallama_core.api.chat_blocks import (Block, BlockDelta, BlockStart, BlockStop, StreamEnd, StreamFailed,
                                          stream_blocks)
from gallama_core.api.protocol import new_id
from gallama_core.api.responses_api.protocol import (FunctionCallItem, FunctionCallOutputItem, MessageItem,
                                                     NamedFunction, ResponsesRequest)


def input_messages(request: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's input as chat messages (consecutive function calls become one assistant turn)."""
    if isinstance(request.input, str):
        return [{"role": "user", "content": request.input}]
    messages: list[dict[str, Any]] = []
    for item in request.input:
        if isinstance(item, MessageItem):
            messages.append({"role": item.role, "content": item.text})
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last["tool_calls"] = (last.get("tool_calls") or []) + [call]
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text})
    return messages


def chat_body(request: ResponsesRequest, conversation: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat completion request body for a response request whose conversation (earlier turns and this
    input) is ``conversation``."""
    system = [{"role": "system", "content": request.instructions}] if request.instructions else []
    body: dict[str, Any] = {"model": request.model, "messages": system + conversation}
    if request.tools:
        body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                           "parameters": t.parameters, "strict": t.strict}}
                         for t in request.tools]
    if isinstance(request.tool_choice, NamedFunction):
        body["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice.name}}
    elif request.tool_choice is not None:
        body["tool_choice"] = request.tool_choice
    if request.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = request.parallel_tool_calls
    fmt = request.text.format if request.text else None
    if fmt is not None and fmt.type == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": fmt.name or "response", "description": fmt.description, "schema": fmt.schema_, "strict": fmt.strict}}
    elif fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    for key, chat_key in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p")):
        if getattr(request, key) is not None:
            body[chat_key] = getattr(request, key)
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    for key, value in (request.model_extra or {}).items():  # gallama's own fields (extra_body)
        body.setdefault(key, value)
    return body


def answer_messages(blocks: list[Block]) -> list[dict[str, Any]]:
    """The answer as chat messages, to continue the conversation from it (reasoning is not carried over)."""
    text = "".join(b.text for b in blocks if b.kind == "text")
    calls = [{"id": b.call_id, "type": "function", "function": {"name": b.name, "arguments": b.text}}
             for b in blocks if b.kind == "tool_call"]
    if not text and not calls:
        return [{"role": "assistant", "content": ""}]
    return [{"role": "assistant", "content": text or None, "tool_calls": calls or None}]


class ResponseBuilder:
    """Builds the response object and its output items; ids are fixed when an item starts."""

    def __init__(self, request: ResponsesRequest):
        self.request = request
        self.id = new_id("resp", "_")
        self.created_at = int(time.time())
        self.item_ids: dict[int, str] = {}

    def item_id(self, block: Block) -> str:
        if block.index not in self.item_ids:
            prefix = {"reasoning": "rs", "tool_call": "fc"}.get(block.kind, "msg")
            self.item_ids[block.index] = new_id(prefix, "_")
        return self.item_ids[block.index]

    def item(self, block: Block, status: str = "completed") -> dict[str, Any]:
        if block.kind == "reasoning":
            return {"type": "reasoning", "id": self.item_id(block), "summary": [], "status": status,
                    "content": [{"type": "reasoning_text", "text": block.text}] if status == "completed" else []}
        if block.kind == "tool_call":
            return {"type": "function_call", "id": self.item_id(block), "call_id": block.call_id,
                    "name": block.name, "arguments": block.text, "status": status}
        return {"type": "message", "id": self.item_id(block), "role": "assistant", "status": status,
                "content": [_output_text(block.text)] if status == "completed" else []}

    def response(self, status: str, blocks: list[Block] | None = None, finish_reason: str | None = None,
                 usage: tuple[int, int] | None = None, error: dict | None = None) -> dict[str, Any]:
        request = self.request
        if status == "completed" and finish_reason == "length":
            status = "incomplete"
        fmt = request.text.format.model_dump(by_alias=True, exclude_none=True) if request.text and request.text.format \
            else {"type": "text"}
        tool_choice = request.tool_choice.model_dump() if isinstance(request.tool_choice, NamedFunction) \
            else (request.tool_choice or "auto")
        body = {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "model": request.model, "output": [self.item(b) for b in blocks or [] if b.kind != "text" or b.text],
            "instructions": request.instructions, "previous_response_id": request.previous_response_id,
            "tools": [t.model_dump(exclude_none=True) for t in request.tools or []], "tool_choice": tool_choice,
            "parallel_tool_calls": request.parallel_tool_calls is not False, "text": {"format": fmt},
            "temperature": request.temperature, "top_p": request.top_p,
            "max_output_tokens": request.max_output_tokens, "metadata": request.metadata or {},
            "store": request.store is not False, "truncation": request.truncation or "disabled",
            "reasoning": request.reasoning or {"effort": None, "summary": None}, "background": False,
            "error": error, "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "usage": None,
        }
        if status in ("completed", "incomplete"):
            body["completed_at"] = int(time.time())
        if usage is not None:
            body["usage"] = {"input_tokens": usage[0], "input_tokens_details": {"cached_tokens": 0},
                             "output_tokens": usage[1], "output_tokens_details": {"reasoning_tokens": 0},
                             "total_tokens": usage[0] + usage[1]}
        return body


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


async def response_events(builder: ResponseBuilder, items: AsyncIterator[Any],
                          on_done: Callable[[dict[str, Any], list[Block]], None]) -> AsyncIterator[dict[str, Any]]:
    """The Responses API's stream events for the stream items of the chat pipeline; ``on_done`` gets the final
    response object and its blocks (to store it)."""
    sequence = 0

    def event(kind: str, **fields) -> dict[str, Any]:
        nonlocal sequence
        sequence += 1
        return {"type": kind, "sequence_number": sequence - 1, **fields}

    blocks_stream = stream_blocks(items)
    try:
        yield event("response.created", response=builder.response("in_progress"))
        yield event("response.in_progress", response=builder.response("in_progress"))
        async for ev in blocks_stream:
            if isinstance(ev, (BlockStart, BlockDelta, BlockStop)):
                block = ev.block
                where = {"item_id": builder.item_id(block), "output_index": block.index}
            if isinstance(ev, BlockStart):
                yield event("response.output_item.added", output_index=block.index,
                            item=builder.item(block, "in_progress"))
                if block.kind == "text":
                    yield event("response.content_part.added", **where, content_index=0, part=_output_text(""))
                elif block.kind == "reasoning":
                    yield event("response.content_part.added", **where, content_index=0,
                                part={"type": "reasoning_text", "text": ""})
            elif isinstance(ev, BlockDelta):
                if block.kind == "tool_call":
                    yield event("response.function_call_arguments.delta", **where, delta=ev.text)
                elif block.kind == "reasoning":
                    yield event("response.reasoning_text.delta", **where, content_index=0, delta=ev.text)
                else:
                    yield event("response.output_text.delta", **where, content_index=0, delta=ev.text, logprobs=[])
            elif isinstance(ev, BlockStop):
                if block.kind == "tool_call":
                    yield event("response.function_call_arguments.done", **where, name=block.name,
                                arguments=block.text)
                elif block.kind == "reasoning":
                    yield event("response.reasoning_text.done", **where, content_index=0, text=block.text)
                    yield event("response.content_part.done", **where, content_index=0,
                                part={"type": "reasoning_text", "text": block.text})
                else:
                    yield event("response.output_text.done", **where, content_index=0, text=block.text, logprobs=[])
                    yield event("response.content_part.done", **where, content_index=0, part=_output_text(block.text))
                yield event("response.output_item.done", output_index=block.index, item=builder.item(block))
            elif isinstance(ev, StreamEnd):
                final = builder.response("completed", ev.blocks, ev.finish_reason,
                                         (ev.prompt_tokens, ev.completion_tokens))
                on_done(final, ev.blocks)
                yield event(f"response.{final['status']}", response=final)
            elif isinstance(ev, StreamFailed):
                code = "server_error" if ev.status_code >= 500 else "invalid_request"
                yield event("response.failed", response=builder.response(
                    "failed", error={"code": code, "message": ev.message}))
    finally:
        await blocks_stream.aclose()
