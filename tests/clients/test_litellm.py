"""litellm's OpenAI-compatible provider against gallama."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from models import WEATHER_SCHEMA

pytestmark = pytest.mark.e2e


def _kwargs(base_url, **more):
    return {"model": "openai/smol", "api_base": base_url, "api_key": "test", "max_tokens": 30, "temperature": 0,
            **more}


def test_completion_stream_tools_and_error(base_url):
    import litellm

    answer = litellm.completion(messages=[{"role": "user", "content": "Name a fruit."}], **_kwargs(base_url))
    assert answer.choices[0].message.content.strip() and answer.usage.prompt_tokens > 0
    pieces = [c.choices[0].delta.content or "" for c in litellm.completion(
        messages=[{"role": "user", "content": "Name a fruit."}], stream=True, **_kwargs(base_url))]
    assert "".join(pieces) == answer.choices[0].message.content
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                               "parameters": WEATHER_SCHEMA}}]
    called = litellm.completion(messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=tools,
                                tool_choice="required", **_kwargs(base_url, max_tokens=200))
    call = called.choices[0].message.tool_calls[0]
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_SCHEMA)
    with pytest.raises(litellm.exceptions.NotFoundError):
        litellm.completion(messages=[{"role": "user", "content": "x"}], **{**_kwargs(base_url), "model": "openai/nope"})
