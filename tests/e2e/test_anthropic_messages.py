"""The Anthropic Messages API (/v1/messages) through the official `anthropic` SDK on SmolLM2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anthropic
import httpx
import jsonschema
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tool_cases import CASES, SCHEMAS, TOOLS

pytestmark = pytest.mark.e2e

ANTHROPIC_TOOLS = [{"name": t["function"]["name"], "description": t["function"]["description"],
                    "input_schema": t["function"]["parameters"]} for t in TOOLS]


@pytest.fixture
def claude(multi_server) -> anthropic.Anthropic:
    # (this SDK has no temperature argument; older clients send it, and the server takes it: extra_body)
    return anthropic.Anthropic(base_url=multi_server, api_key="test", max_retries=0, timeout=900)


def test_text_and_usage(claude):
    message = claude.messages.create(model="smol", max_tokens=12, system="Answer briefly.",
                                     messages=[{"role": "user", "content": "Name a fruit."}], extra_body={"temperature": 0})
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"] and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 5 and 0 < message.usage.output_tokens <= 12


def test_streamed_text_has_anthropic_event_sequence(claude):
    with claude.messages.stream(model="smol", max_tokens=10, extra_body={"temperature": 0},
                                messages=[{"role": "user", "content": "Count to five."}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and kinds[-2] == "message_delta"
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    deltas = [k for k in kinds if k == "text"]  # the SDK's own text events, one per text_delta
    assert deltas and final.content[0].type == "text" and final.content[0].text
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 10
    plain = claude.messages.create(model="smol", max_tokens=10, extra_body={"temperature": 0},
                                   messages=[{"role": "user", "content": "Count to five."}])
    assert plain.content[0].text == final.content[0].text  # the same answer, streamed or not


@pytest.mark.parametrize("choice", ["any", "tool"])
def test_forced_tool_use_is_schema_valid(claude, choice):
    """10 prompts: every answer is tool_use blocks whose input validates against the tool's schema."""
    cases = CASES[::3][:10]
    for index, (tool, prompt) in enumerate(cases):
        tool_choice = {"type": "any"} if choice == "any" else {"type": "tool", "name": tool}
        kwargs = dict(model="smol", max_tokens=800, tools=ANTHROPIC_TOOLS, extra_body={"temperature": 0.7},
                      tool_choice={**tool_choice, "disable_parallel_tool_use": True},
                      messages=[{"role": "user", "content": prompt}])
        if index % 2:
            with claude.messages.stream(**kwargs) as stream:
                message = stream.get_final_message()
        else:
            message = claude.messages.create(**kwargs)
        assert message.stop_reason == "tool_use", (prompt, message)
        uses = [b for b in message.content if b.type == "tool_use"]
        assert len(uses) == 1 and all(b.type == "tool_use" for b in message.content)
        if choice == "tool":
            assert uses[0].name == tool
        jsonschema.validate(uses[0].input, SCHEMAS[uses[0].name])


def test_tool_round_trip(claude):
    weather = [t for t in ANTHROPIC_TOOLS if t["name"] == "get_current_weather"]
    question = {"role": "user", "content": "What's the weather in Oslo?"}
    first = claude.messages.create(model="smol", max_tokens=200, tools=weather, messages=[question],
                                   tool_choice={"type": "tool", "name": "get_current_weather"})
    use = first.content[0]
    assert use.type == "tool_use" and use.name == "get_current_weather" and use.id
    second = claude.messages.create(
        model="smol", max_tokens=40, tools=weather, tool_choice={"type": "none"}, extra_body={"temperature": 0},
        messages=[question, {"role": "assistant", "content": [use.model_dump(exclude_none=True)]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                                "content": "Sunny, 21 degrees celsius"}]}])
    assert second.content[0].type == "text" and second.content[0].text.strip()
    without_result = claude.messages.count_tokens(model="smol", tools=weather, tool_choice={"type": "none"},
                                                  messages=[question])
    assert second.usage.input_tokens > without_result.input_tokens + 10  # the call and its result are in the prompt


def test_structured_output_and_prefill(claude):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 120}},
              "required": ["name", "age"], "additionalProperties": False}
    message = claude.messages.create(model="smol", max_tokens=100, extra_body={"temperature": 0},
                                     messages=[{"role": "user", "content": "Describe a person as JSON."}],
                                     output_config={"format": {"type": "json_schema", "schema": schema}})
    jsonschema.validate(json.loads(message.content[0].text), schema)
    prefilled = claude.messages.create(model="smol", max_tokens=8, extra_body={"temperature": 0}, messages=[
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is"}])
    assert not prefilled.content[0].text.startswith("The capital")  # the answer continues the prefill


def test_count_tokens(claude):
    short = claude.messages.count_tokens(model="smol", messages=[{"role": "user", "content": "Hi"}])
    longer = claude.messages.count_tokens(model="smol", messages=[{"role": "user", "content": "Hi " * 50}],
                                          tools=ANTHROPIC_TOOLS[:1])
    created = claude.messages.create(model="smol", max_tokens=1, messages=[{"role": "user", "content": "Hi"}])
    assert short.input_tokens == created.usage.input_tokens
    assert longer.input_tokens > short.input_tokens + 50


@pytest.mark.parametrize("kwargs, status, fragment", [
    (dict(model="smol", max_tokens=0, messages=[{"role": "user", "content": "x"}]), 400, "max_tokens"),
    (dict(model="smol", max_tokens=5, messages=[]), 400, "messages"),
    (dict(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}]), 404, "no-such-model"),
    (dict(model="smol", max_tokens=5, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}]), 400, "image"),
    (dict(model="smol", max_tokens=5, messages=[{"role": "user", "content": "x"}],
          tools=[{"type": "web_search_20250305", "name": "web_search"}]), 400, "server tools"),
    (dict(model="smol", max_tokens=5, messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                                              "content": [{"type": {"x": 1}}]}]}]),
     400, "messages[0].content"),  # a block type that is no string: a 400 (it was a TypeError, a 500)
    (dict(model="smol", max_tokens=5, messages=[{"role": "user", "content": "x"}], tools=ANTHROPIC_TOOLS[:1],
          tool_choice={"type": "tool", "name": "missing"}), 400, "missing"),
])
def test_errors_in_anthropic_shape(claude, kwargs, status, fragment):
    with pytest.raises(anthropic.APIStatusError) as caught:
        claude.messages.create(**kwargs)
    assert caught.value.status_code == status
    body = caught.value.body
    assert body["type"] == "error" and fragment in body["error"]["message"]
    assert body["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_x_api_key_and_anthropic_shaped_refusals(gguf, tmp_path):
    from gallama_core.testing import running_server

    args = ["-id", f"model_id={gguf} model_name=smol n_threads=1", "--api-key", "sk-test"]
    with running_server(args, log_path=tmp_path / "server.log") as url:
        ok = anthropic.Anthropic(base_url=url, api_key="sk-test", max_retries=0)
        assert ok.messages.create(model="smol", max_tokens=2, messages=[{"role": "user", "content": "Hi"}]).content
        with pytest.raises(anthropic.AuthenticationError) as caught:
            anthropic.Anthropic(base_url=url, api_key="wrong", max_retries=0).messages.create(
                model="smol", max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
        assert caught.value.body["type"] == "error"
        assert caught.value.body["error"]["type"] == "authentication_error"
        # the OpenAI routes keep the OpenAI envelope
        refused = httpx.post(url + "/v1/chat/completions", json={}, headers={"x-api-key": "wrong"})
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
