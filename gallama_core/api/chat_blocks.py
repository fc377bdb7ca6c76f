"""A chat answer as content blocks: what the Anthropic Messages and OpenAI Responses adapters build on.

Both APIs describe an answer as a list of typed blocks (reasoning, text, one per tool call) rather than
as one message with fields, and stream it as block start / delta / stop events. :func:`stream_blocks` turns
the chat pipeline's stream items into that form once, :func:`message_blocks` does it for a whole response;
each adapter then only names the events its API uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Literal

from gallama_core.api.protocol import ChatCompletionChunk, ChatCompletionResponse, new_id

Kind = Literal["reasoning", "text", "tool_call"]


@dataclass
class Block:
    """One block of the answer; ``text`` is the text, the reasoning or the call's JSON arguments."""

    index: int
    kind: Kind
    text: str = ""
    call_id: str | None = None
    name: str | None = None


@dataclass
class BlockStart:
    block: Block


@dataclass
class BlockDelta:
    block: Block
    text: str


@dataclass
class BlockStop:
    block: Block


@dataclass
class StreamEnd:
    """The answer is complete: why it ended (OpenAI's finish reason) and the tokens it used."""

    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    blocks: list[Block] = field(default_factory=list)


@dataclass
class StreamFailed:
    """The stream failed after it started (the OpenAI error envelope and its HTTP status)."""

    message: str
    status_code: int = 500


BlockEvent = BlockStart | BlockDelta | BlockStop | StreamEnd | StreamFailed


def message_blocks(response: ChatCompletionResponse) -> tuple[list[Block], str | None]:
    """The blocks of a non-streamed chat response's first choice, and its finish reason."""
    choice = response.choices[0]
    message, blocks = choice.message, []
    if message.reasoning_content:
        blocks.append(Block(len(blocks), "reasoning", message.reasoning_content))
    text = message.content or ""
    if text.strip() or (text and not message.tool_calls):
        blocks.append(Block(len(blocks), "text", text))
    for call in message.tool_calls or []:
        blocks.append(Block(len(blocks), "tool_call", call.function.arguments, call.id, call.function.name))
    return blocks, choice.finish_reason


async def stream_blocks(items: AsyncIterator[Any]) -> AsyncIterator[BlockEvent]:
    """Block events for the stream items of a streamed chat request (one choice, usage included).

    Text that is only whitespace does not open a block of its own (the whitespace between tool calls); it is
    kept and sent with the text that follows it."""
    blocks: list[Block] = []
    current: Block | None = None
    tool_index: int | None = None
    pending_space = ""
    finish_reason, prompt_tokens, completion_tokens = None, 0, 0

    def open_block(kind: Kind, call_id: str | None = None, name: str | None = None) -> list[BlockEvent]:
        nonlocal current
        events: list[BlockEvent] = [BlockStop(current)] if current is not None else []
        current = Block(len(blocks), kind, call_id=call_id, name=name)
        blocks.append(current)
        return events + [BlockStart(current)]

    def add(kind: Kind, text: str) -> list[BlockEvent]:
        events = [] if current is not None and current.kind == kind else open_block(kind)
        current.text += text
        return events + [BlockDelta(current, text)]

    try:
        async for item in items:
            if isinstance(item, str):  # "[DONE]"
                continue
            if isinstance(item, dict) and "error" in item:
                error = item["error"]
                status = 503 if error.get("type") == "service_unavailable" else 500
                yield StreamFailed(error.get("message") or "generation failed", status)
                return
            if not isinstance(item, ChatCompletionChunk):
                continue
            if item.usage is not None:
                prompt_tokens, completion_tokens = item.usage.prompt_tokens, item.usage.completion_tokens
            for choice in item.choices[:1]:
                delta = choice.delta
                events: list[BlockEvent] = []
                if delta.reasoning_content:
                    events += add("reasoning", delta.reasoning_content)
                if delta.content:
                    if current is not None and current.kind == "text":
                        events += add("text", delta.content)
                    elif delta.content.strip():
                        events += add("text", pending_space + delta.content)
                        pending_space = ""
                    else:
                        pending_space += delta.content
                for call in delta.tool_calls or []:
                    if call.index != tool_index or current is None or current.kind != "tool_call":
                        tool_index = call.index
                        events += open_block("tool_call", call.id or new_id("call"), call.function.name or "")
                        pending_space = ""
                    elif call.function.name:
                        current.name = (current.name or "") + call.function.name
                    if call.function.arguments:
                        current.text += call.function.arguments
                        events.append(BlockDelta(current, call.function.arguments))
                if choice.finish_reason:
                    finish_reason = choice.finish_reason
                for event in events:
                    yield event
        if current is None and pending_space:  # an answer that is only whitespace is still an answer
            for event in add("text", pending_space):
                yield event
        if current is not None:
            yield BlockStop(current)
        yield StreamEnd(finish_reason, prompt_tokens, completion_tokens, blocks)
    finally:
        close = getattr(items, "aclose", None)
        if close is not None:
            await close()
