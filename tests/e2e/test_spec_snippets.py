"""The user documentation's client snippets, unmodified, against `gallama run` with no arguments."""

from __future__ import annotations

import os

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI


@pytest.fixture
def spec_client(default_server, monkeypatch):
    # The documented snippet targets 127.0.0.1:8000; only the port differs here.
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    return OpenAI(base_url=default_server + "/v1")


def test_default_server_serves_smollm2(default_server):
    models = httpx.get(default_server + "/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["SmolLM2-135M-Instruct"]
    assert models[0]["backend"] == "llama_cpp"
    assert httpx.get(default_server + "/health").status_code == 200


def test_chat_snippet_with_tool_choice_auto(spec_client):
    os.environ['OPENAI_API_KEY'] = 'test'
    messages = [{"role": "user", "content": "Which is faster in terms of reaction speed: a cat or a dog?"}]
    completion = spec_client.chat.completions.create(
        model="mistral",
        messages=messages,
        tool_choice="auto",
        max_tokens=48,
    )
    message = completion.choices[0].message
    assert message.role == "assistant" and message.content and message.content.strip()
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens > 0 and completion.usage.prompt_tokens > 0
    assert completion.model == "SmolLM2-135M-Instruct"


def test_streaming_snippet(spec_client):
    messages = [{"role": "user", "content": "Tell me a 200-word story about a Llama"}]
    completion = spec_client.chat.completions.create(model="mistral", messages=messages, stream=True,
                                                     temperature=0.1, max_tokens=60)
    pieces, finish = [], None
    for chunk in completion:
        pieces.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
    assert len([p for p in pieces if p]) > 5
    assert len("".join(pieces).split()) > 5
    assert finish in ("stop", "length")


def test_legacy_completion_snippet(spec_client):
    result = spec_client.completions.create(model="mistral", prompt="Tell me a story about a Llama in 200 words",
                                            max_tokens=40, temperature=0)
    assert result.choices[0].text.strip()
    assert result.object == "text_completion"
    again = spec_client.completions.create(model="mistral", prompt="Tell me a story about a Llama in 200 words",
                                           max_tokens=40, temperature=0)
    assert again.choices[0].text == result.choices[0].text  # greedy is deterministic


async def test_async_client(default_server):
    client = AsyncOpenAI(base_url=default_server + "/v1", api_key="test")
    completion = await client.chat.completions.create(model="SmolLM2-135M-Instruct", max_tokens=20,
                                                      messages=[{"role": "user", "content": "Say hi"}])
    assert completion.choices[0].message.content
    stream = await client.chat.completions.create(model="SmolLM2-135M-Instruct", max_tokens=20, stream=True,
                                                  stream_options={"include_usage": True},
                                                  messages=[{"role": "user", "content": "Say hi"}])
    usage = None
    async for chunk in stream:
        usage = chunk.usage or usage
    assert usage is not None and usage.completion_tokens > 0
