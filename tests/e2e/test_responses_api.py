"""The OpenAI Responses API (/v1/responses) through the official `openai` SDK, and the openai-agents SDK."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import openai
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tool_cases import CASES, SCHEMAS, TOOLS

pytestmark = pytest.mark.e2e

FUNCTION_TOOLS = [{"type": "function", "name": t["function"]["name"], "description": t["function"]["description"],
                   "parameters": t["function"]["parameters"]} for t in TOOLS]


def test_text_streamed_and_not(client):
    response = client.responses.create(model="smol", input="Name a fruit.", instructions="Answer briefly.",
                                       max_output_tokens=12, temperature=0)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.output[0].type == "message" and response.output_text.strip()
    assert response.status in ("completed", "incomplete") and response.usage.output_tokens <= 12
    with client.responses.stream(model="smol", input="Name a fruit.", instructions="Answer briefly.",
                                 max_output_tokens=200, temperature=0) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.output_item.done" in kinds
    assert final.output_text.strip() and final.usage.input_tokens > 5


@pytest.mark.parametrize("choice", ["required", "named"])
def test_forced_function_calls_are_schema_valid(client, choice):
    for index, (tool, prompt) in enumerate(CASES[1::3][:10]):
        kwargs = dict(model="smol", input=prompt, tools=FUNCTION_TOOLS, parallel_tool_calls=False, temperature=0.7,
                      tool_choice="required" if choice == "required" else {"type": "function", "name": tool},
                      extra_body={"seed": index})
        if index % 2:
            with client.responses.stream(**kwargs) as stream:
                response = stream.get_final_response()
        else:
            response = client.responses.create(**kwargs)
        calls = [item for item in response.output if item.type == "function_call"]
        assert len(calls) == 1 and len(response.output) == 1, (response.status, response.output, response.usage)
        if choice == "named":
            assert calls[0].name == tool
        jsonschema.validate(json.loads(calls[0].arguments), SCHEMAS[calls[0].name])


def test_tool_round_trip_and_previous_response(client):
    weather = [t for t in FUNCTION_TOOLS if t["name"] == "get_current_weather"]
    first = client.responses.create(model="smol", input="What's the weather in Oslo?", tools=weather,
                                    tool_choice="required", parallel_tool_calls=False)
    call = first.output[0]
    assert call.type == "function_call" and call.call_id
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 degrees celsius"}
    # the whole conversation as items...
    answer = client.responses.create(model="smol", tools=weather, tool_choice="none", max_output_tokens=30,
                                     temperature=0, input=[{"role": "user", "content": "What's the weather in Oslo?"},
                                                           call.model_dump(exclude_none=True), output])
    # ...or only the new item, after the stored first answer
    continued = client.responses.create(model="smol", tools=weather, tool_choice="none", max_output_tokens=30,
                                        temperature=0, input=[output], previous_response_id=first.id)
    assert answer.output_text.strip() and continued.output_text == answer.output_text
    assert client.responses.retrieve(first.id).id == first.id
    client.responses.delete(first.id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="smol", input="x", previous_response_id=first.id)
    assert caught.value.body["param"] == "previous_response_id"


def test_json_schema_output(client):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 120}},
              "required": ["name", "age"], "additionalProperties": False}
    response = client.responses.create(model="smol", input="Describe a person.", temperature=0,
                                       text={"format": {"type": "json_schema", "name": "person", "schema": schema,
                                                        "strict": True}})
    jsonschema.validate(json.loads(response.output_text), schema)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]), "images"),
    (dict(input="x", tools=[{"type": "web_search"}]), "web_search"),
    (dict(input="x", max_output_tokens=0), "max_output_tokens"),
    (dict(input="x", tool_choice="required"), "tools"),
    (dict(input="x", background=True), "background"),
])
def test_errors_in_openai_shape(client, kwargs, fragment):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="smol", **kwargs)
    assert fragment in caught.value.body["message"] and caught.value.body["type"] == "invalid_request_error"


def test_openai_agents_sdk_runs_a_function_tool(multi_server):
    """An openai-agents Agent on the Responses API: it calls the tool once and answers from its result."""
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    calls = []

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        calls.append(city)
        return f"It is sunny and 21 degrees celsius in {city}."

    model = OpenAIResponsesModel(model="smol", openai_client=openai.AsyncOpenAI(
        base_url=multi_server + "/v1", api_key="test", max_retries=0, timeout=900))
    agent = Agent(name="weather", instructions="Use the tool to answer questions about the weather.",
                  tools=[get_weather], model=model,
                  # one sentence after the tool's answer (SmolLM2 would otherwise ramble to max_tokens)
                  model_settings=ModelSettings(tool_choice="required", parallel_tool_calls=False, max_tokens=200,
                                               temperature=0, extra_body={"stop_words": ["."]}),
                  reset_tool_choice=True)
    result = Runner.run_sync(agent, "What's the weather in Oslo?", max_turns=4)
    assert len(calls) == 1 and calls[0]
    assert isinstance(result.final_output, str) and result.final_output.strip()
