"""The chat-to-blocks layer under the Anthropic and Responses adapters, and their routes on the echo backend."""

from __future__ import annotations

from gallama_core.api.chat_blocks import BlockDelta, BlockStart, BlockStop, StreamEnd, StreamFailed, stream_blocks
from gallama_core.api.protocol import (ChatCompletionChunk, ChunkChoice, Delta, ToolCallDelta, ToolCallFunctionDelta,
                                       Usage)
from gallama_core.pipeline.serving import Pipeline


def chunk(finish=None, usage=None, **delta):
    choices = [ChunkChoice(index=0, delta=Delta(**delta), finish_reason=finish)] if delta or finish else []
    return ChatCompletionChunk(id="c", created=0, model="m", choices=choices, usage=usage)


def call(index, arguments, call_id=None, name=None):
    return ToolCallDelta(index=index, id=call_id, type="function" if call_id else None,
                         function=ToolCallFunctionDelta(name=name, arguments=arguments))


async def _items(*items):
    for item in items:
        yield item


async def test_blocks_from_reasoning_text_and_calls():
    items = _items(chunk(role="assistant", content=""), chunk(reasoning_content="hm"), chunk(content="Sure"),
                   chunk(tool_calls=[call(0, '{"a":', "c1", "f")]), chunk(tool_calls=[call(0, ' 1}')]),
                   chunk(content="\n"),  # whitespace between calls opens no block
                   chunk(tool_calls=[call(1, "{}", "c2", "g")]), chunk(finish="tool_calls"),
                   chunk(usage=Usage(prompt_tokens=7, completion_tokens=5, total_tokens=12)), "[DONE]")
    events = [e async for e in stream_blocks(items)]
    starts = [(e.block.kind, e.block.call_id, e.block.name) for e in events if isinstance(e, BlockStart)]
    assert starts == [("reasoning", None, None), ("text", None, None), ("tool_call", "c1", "f"), ("tool_call", "c2", "g")]
    assert sum(isinstance(e, BlockStop) for e in events) == 4
    end = events[-1]
    assert isinstance(end, StreamEnd) and (end.finish_reason, end.prompt_tokens, end.completion_tokens) == \
        ("tool_calls", 7, 5)
    assert [b.text for b in end.blocks] == ["hm", "Sure", '{"a": 1}', "{}"]
    assert "".join(e.text for e in events if isinstance(e, BlockDelta) and e.block.index == 2) == '{"a": 1}'


async def test_error_after_start_is_reported_once():
    items = _items(chunk(content="partial"), {"error": {"message": "worker died", "type": "server_error"}})
    events = [e async for e in stream_blocks(items)]
    assert isinstance(events[-1], StreamFailed) and events[-1].message == "worker died"
    assert not any(isinstance(e, StreamEnd) for e in events)


async def test_a_stream_never_iterated_still_frees_its_slot(client):
    """A client that leaves before the first byte: closing the stream ends the generation and the slot."""
    instance = next(i for i in client.state.models.instances if i.name == "echo-a")
    stream = await Pipeline(client.state).run("chat", {"model": "echo-a", "stream": True,
                                                       "messages": [{"role": "user", "content": "a b c"}]})
    assert instance.active == 1
    await stream.aclose()
    assert instance.active == 0


async def test_messages_route_on_echo(client):
    body = {"model": "echo-a", "max_tokens": 10, "system": "be brief",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "one two"}]}]}
    r = await client.post("/v1/messages", json=body)
    assert r.status_code == 200, r.text
    message = r.json()
    assert message["content"] == [{"type": "text", "text": "one two"}] and message["stop_reason"] == "end_turn"
    r = await client.post("/v1/messages", json={**body, "max_tokens": 1})
    assert r.json()["stop_reason"] == "max_tokens"
    async with client.stream("POST", "/v1/messages", json={**body, "stream": True}) as r:
        lines = [line async for line in r.aiter_lines() if line.startswith("event: ")]
    assert lines[0] == "event: message_start" and lines[-1] == "event: message_stop"
    r = await client.post("/v1/messages", json={**body, "messages": []})
    assert r.status_code == 400 and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = await client.post("/v1/messages/nothing", json=body)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


async def test_responses_store_is_bounded(client):
    store_size = client.state.plugin_config["server"].stored_responses
    first = (await client.post("/v1/responses", json={"model": "echo-a", "input": "one"})).json()
    assert (await client.get(f"/v1/responses/{first['id']}")).json()["output"][0]["content"][0]["text"] == "one"
    for i in range(store_size):
        assert (await client.post("/v1/responses", json={"model": "echo-a", "input": f"n{i}"})).status_code == 200
    gone = await client.post("/v1/responses", json={"model": "echo-a", "input": "x", "previous_response_id": first["id"]})
    assert gone.status_code == 400 and gone.json()["error"]["param"] == "previous_response_id"
    unstored = (await client.post("/v1/responses", json={"model": "echo-a", "input": "y", "store": False})).json()
    assert (await client.get(f"/v1/responses/{unstored['id']}")).status_code == 404


def test_a_content_block_whose_type_is_not_a_string_is_a_validation_error():
    """Found by the fuzz session: ``{"type": {...}}`` in a tool result raised TypeError (a 500), not a 400."""
    import pydantic
    import pytest

    from gallama_core.api.anthropic_api.protocol import Message

    for content in ([{"type": {"x": 1}, "text": "a"}],
                    [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": ["text"], "text": "a"}]}]):
        with pytest.raises(pydantic.ValidationError, match="unknown content block type"):
            Message.model_validate({"role": "user", "content": content})
