"""Anthropic Messages ⇄ chat: a message request becomes a chat request body for the same pipeline, and
the chat answer (whole, or as block events) becomes Anthropic's message or its stream of events."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from gallama_core.api.anthropic_api.protocol import (CountTokensRequest, MessagesRequest, TextBlock, ToolResultBlock,
                                                     ToolUseBlock)
from gallama_core.api.chat_blocks import (Block, BlockDelta, BlockStart, BlockStop, StreamEnd, StreamFailed,
                                          message_blocks, stream_blocks)
from gallama_core.api.protocol import ChatCompletionResponse, new_id
from gallama_core.errors import InvalidRequestError, anthropic_error

#: Anthropic's stop reason for each chat finish reason.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _system_text(system: str | list[TextBlock] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    return "\n\n".join(block.text for block in system)


def chat_messages(request: CountTokensRequest) -> tuple[list[dict[str, Any]], str]:
    """The conversation as chat messages, and the text of a final assistant turn (a prefill the answer
    continues from; it is not repeated in the answer)."""
    messages: list[dict[str, Any]] = []
    system = _system_text(request.system)
    if system:
        messages.append({"role": "system", "content": system})
    prefill = ""
    for position, message in enumerate(request.messages):
        blocks = [TextBlock(type="text", text=message.content)] if isinstance(message.content, str) else message.content
        last = position == len(request.messages) - 1
        if message.role == "user":
            texts = []
            for i, block in enumerate(blocks):
                if isinstance(block, ToolResultBlock):
                    text = ("Error: " if block.is_error else "") + block.text
                    messages.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": text})
                elif isinstance(block, TextBlock):
                    texts.append(block.text)
                elif isinstance(block, ToolUseBlock):
                    raise InvalidRequestError(f"messages[{position}].content[{i}]: tool_use blocks belong in "
                                              "assistant messages", param=f"messages[{position}].content")
            if texts or not any(isinstance(b, ToolResultBlock) for b in blocks):
                messages.append({"role": "user", "content": "\n".join(texts)})
            continue
        text = "".join(block.text for block in blocks if isinstance(block, TextBlock))
        calls = [{"id": block.id, "type": "function",
                  "function": {"name": block.name, "arguments": json.dumps(block.input, ensure_ascii=False)}}
                 for block in blocks if isinstance(block, ToolUseBlock)]
        if last and not calls:
            prefill = text.rstrip()  # Anthropic refuses a prefill that ends in whitespace; be lenient
            continue
        if text or calls:
            messages.append({"role": "assistant", "content": text or None, "tool_calls": calls or None})
    return messages, prefill


def chat_body(request: CountTokensRequest) -> tuple[dict[str, Any], str]:
    """The chat completion request body for a message (or token-count) request, and its prefill."""
    messages, prefill = chat_messages(request)
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.tools:
        body["tools"] = [{"type": "function", "function": {"name": tool.name, "description": tool.description,
                                                           "parameters": tool.input_schema}}
                         for tool in request.tools]
    choice = request.tool_choice
    if choice is not None:
        if choice.type == "tool":
            if not choice.name:
                raise InvalidRequestError("tool_choice.name: field required for tool_choice of type 'tool'",
                                          param="tool_choice.name")
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            body["tool_choice"] = {"any": "required"}.get(choice.type, choice.type)
        if choice.disable_parallel_tool_use:
            body["parallel_tool_calls"] = False
    if prefill:
        body["leading_prompt"] = prefill
    if isinstance(request, MessagesRequest):
        body["max_tokens"] = request.max_tokens
        for key in ("temperature", "top_p", "top_k"):
            if getattr(request, key) is not None:
                body[key] = getattr(request, key)
        fmt = request.output_config.format if request.output_config else None
        if fmt is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt.schema_}}
        if request.stop_sequences:
            body["stop"] = request.stop_sequences
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
    for key, value in (request.model_extra or {}).items():  # gallama's own fields (extra_body)
        body.setdefault(key, value)
    return body, prefill


def _without_prefill(text: str, prefill: str) -> str:
    return text[len(prefill):] if prefill and text.startswith(prefill) else text


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments)
    except ValueError:
        return {}  # cut by max_tokens: stop_reason says so
    return value if isinstance(value, dict) else {}


def content_block(block: Block) -> dict[str, Any]:
    if block.kind == "reasoning":
        return {"type": "thinking", "thinking": block.text, "signature": ""}
    if block.kind == "tool_call":
        return {"type": "tool_use", "id": block.call_id, "name": block.name, "input": _tool_input(block.text)}
    return {"type": "text", "text": block.text}


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def message_response(request: MessagesRequest, response: ChatCompletionResponse, prefill: str) -> dict[str, Any]:
    blocks, finish_reason = message_blocks(response)
    for block in blocks[:1]:
        if block.kind == "text":
            block.text = _without_prefill(block.text, prefill)
    content = [content_block(b) for b in blocks if b.kind != "text" or b.text]
    return {"id": new_id("msg", "_"), "type": "message", "role": "assistant", "model": response.model,
            "content": content, "stop_reason": STOP_REASONS.get(finish_reason or "stop", "end_turn"),
            "stop_sequence": None,
            "usage": _usage(response.usage.prompt_tokens, response.usage.completion_tokens)}


async def message_events(request: MessagesRequest, items: AsyncIterator[Any], prefill: str
                         ) -> AsyncIterator[dict[str, Any]]:
    """Anthropic's stream events for the stream items of the chat pipeline."""
    blocks = stream_blocks(items)
    try:
        yield {"type": "message_start", "message": {
            "id": new_id("msg", "_"), "type": "message", "role": "assistant", "model": request.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": _usage(0, 0)}}
        yield {"type": "ping"}
        to_strip = prefill
        async for event in blocks:
            if isinstance(event, BlockStart):
                start = content_block(event.block)
                if event.block.kind == "tool_call":
                    start["input"] = {}
                else:
                    start[{"reasoning": "thinking"}.get(event.block.kind, "text")] = ""
                yield {"type": "content_block_start", "index": event.block.index, "content_block": start}
            elif isinstance(event, BlockDelta):
                text = event.text
                if to_strip and event.block.kind == "text":  # the prefill is the start of the first text block
                    cut = min(len(to_strip), len(text))
                    if text[:cut] == to_strip[:cut]:
                        text, to_strip = text[cut:], to_strip[cut:]
                    else:
                        to_strip = ""
                    if not text:
                        continue
                if event.block.kind == "tool_call":
                    delta = {"type": "input_json_delta", "partial_json": text}
                elif event.block.kind == "reasoning":
                    delta = {"type": "thinking_delta", "thinking": text}
                else:
                    delta = {"type": "text_delta", "text": text}
                yield {"type": "content_block_delta", "index": event.block.index, "delta": delta}
            elif isinstance(event, BlockStop):
                if event.block.kind == "reasoning":
                    yield {"type": "content_block_delta", "index": event.block.index,
                           "delta": {"type": "signature_delta", "signature": ""}}
                yield {"type": "content_block_stop", "index": event.block.index}
            elif isinstance(event, StreamEnd):
                yield {"type": "message_delta",
                       "delta": {"stop_reason": STOP_REASONS.get(event.finish_reason or "stop", "end_turn"),
                                 "stop_sequence": None},
                       "usage": _usage(event.prompt_tokens, event.completion_tokens)}
                yield {"type": "message_stop"}
            elif isinstance(event, StreamFailed):
                yield anthropic_error(event.message, event.status_code)
    finally:
        await blocks.aclose()
