"""langchain-openai's ChatOpenAI against gallama."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import openai
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

sys.path.insert(0, str(Path(__file__).parent))
from models import WEATHER_SCHEMA, Person

pytestmark = pytest.mark.e2e


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"Sunny in {city}"


@pytest.fixture
def chat(base_url):
    return ChatOpenAI(model="smol", base_url=base_url, api_key="test", temperature=0, max_tokens=40, max_retries=0)


def test_invoke_and_stream(chat):
    answer = chat.invoke("Name a fruit.")
    assert answer.content.strip() and answer.usage_metadata["input_tokens"] > 0
    pieces = list(chat.stream("Name a fruit."))
    assert len(pieces) > 3 and "".join(p.content for p in pieces) == answer.content


@pytest.mark.parametrize("choice", ["any", "get_weather"])
def test_bind_tools_forced_and_round_trip(chat, choice):
    bound = chat.bind_tools([get_weather], tool_choice=choice)
    question = HumanMessage("What's the weather in Oslo?")
    first = bound.invoke([question])
    assert len(first.tool_calls) == 1 and first.tool_calls[0]["name"] == "get_weather"
    jsonschema.validate(first.tool_calls[0]["args"], {"type": "object", "required": ["city"]})
    call = first.tool_calls[0]
    second = chat.bind_tools([get_weather]).invoke(
        [question, first, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])])
    assert second.content.strip() or second.tool_calls


def test_streamed_tool_call_chunks(chat):
    chunks = list(chat.bind_tools([get_weather], tool_choice="get_weather").stream("Weather in Rome?"))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert len(chunks) > 2 and merged.tool_calls[0]["name"] == "get_weather"
    assert isinstance(merged.tool_calls[0]["args"].get("city"), str)


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
def test_structured_output(chat, method):
    structured = chat.bind(max_tokens=200).with_structured_output(Person, method=method)
    prompt = "Describe a person as JSON with name and age." if method == "json_mode" else "Describe a person."
    person = structured.invoke(prompt)
    assert isinstance(person, Person)


def test_error_is_an_openai_error(base_url):
    with pytest.raises(openai.NotFoundError):
        ChatOpenAI(model="no-such-model", base_url=base_url, api_key="test", max_retries=0).invoke("Hi")
