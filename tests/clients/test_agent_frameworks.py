"""openai-agents (Chat Completions model) and pydantic-ai against gallama: a tool runs once, then the answer."""

from __future__ import annotations

import sys
from pathlib import Path

import openai
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from models import Person, weather

pytestmark = pytest.mark.e2e


def test_openai_agents_runs_its_tool_once(base_url):
    from agents import (Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool,
                        set_tracing_disabled)

    set_tracing_disabled(True)
    calls = []

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        calls.append(city)
        return weather(city)

    model = OpenAIChatCompletionsModel(model="smol", openai_client=openai.AsyncOpenAI(
        base_url=base_url, api_key="test", max_retries=0, timeout=900))
    agent = Agent(name="weather", instructions="Use the tool to answer questions about the weather.",
                  tools=[get_weather], model=model,
                  model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=200,
                                               extra_body={"stop_words": ["."]}))
    result = Runner.run_sync(agent, "What's the weather in Oslo?", max_turns=4)
    assert len(calls) == 1  # one call in the answer, and no second turn that calls again
    assert isinstance(result.final_output, str) and result.final_output.strip()


def _pydantic_ai_model(base_url):
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return OpenAIChatModel("smol", provider=OpenAIProvider(base_url=base_url, api_key="test"))


def test_pydantic_ai_text_tool_and_structured_output(base_url):
    from pydantic_ai import Agent

    model = _pydantic_ai_model(base_url)
    settings = {"temperature": 0, "max_tokens": 60}
    text = Agent(model, model_settings=settings).run_sync("Name a fruit.")
    assert text.output.strip()
    calls = []
    agent = Agent(model, model_settings={**settings, "extra_body": {"stop_words": ["."]}},
                  instructions="Use the tool to answer questions about the weather.")

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        calls.append(city)
        return weather(city)

    answer = agent.run_sync("What's the weather in Oslo?")
    assert answer.output.strip() and calls  # under auto, SmolLM2 may choose to call again: its choice
    person = Agent(model, output_type=Person, model_settings={"temperature": 0, "max_tokens": 200}).run_sync(
        "Describe a person.")
    assert isinstance(person.output, Person)
