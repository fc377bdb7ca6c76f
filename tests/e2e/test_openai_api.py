"""OpenAI API behaviour through the official client on a real model (SmolLM2 via llama.cpp)."""

from __future__ import annotations

import httpx
import openai
import pytest

HI = [{"role": "user", "content": "Write a long poem about the sea."}]


def test_finish_reasons_and_usage(client):
    short = client.chat.completions.create(model="smol", messages=HI, max_tokens=5)
    assert short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens == 5
    assert short.usage.total_tokens == short.usage.prompt_tokens + 5
    done = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Say OK."}],
                                          max_completion_tokens=200, temperature=0)
    assert done.choices[0].finish_reason == "stop"


def test_stop_sequences(client):
    kwargs = dict(model="smol", messages=[{"role": "user", "content": "Count: 1, 2, 3, 4, 5, 6, 7"}],
                  max_tokens=60, temperature=0)
    free = client.chat.completions.create(**kwargs).choices[0].message.content
    word = next(w for w in free.split() if len(w) > 2)
    stopped = client.chat.completions.create(stop=[word], **kwargs)
    assert word not in stopped.choices[0].message.content
    assert stopped.choices[0].finish_reason == "stop"
    words = client.chat.completions.create(extra_body={"stop_words": [word]}, **kwargs)
    assert words.choices[0].message.content == stopped.choices[0].message.content


def test_seed_is_reproducible_and_n_choices(client):
    kwargs = dict(model="smol", messages=HI, max_tokens=24, temperature=1.0, seed=1234)
    a = client.chat.completions.create(**kwargs).choices[0].message.content
    b = client.chat.completions.create(**kwargs).choices[0].message.content
    assert a == b
    several = client.chat.completions.create(n=3, **kwargs)
    assert [c.index for c in several.choices] == [0, 1, 2]
    assert several.choices[0].message.content == a
    assert len({c.message.content for c in several.choices}) > 1
    assert several.usage.completion_tokens == sum(24 if c.finish_reason == "length" else 0 for c in several.choices) \
        or several.usage.completion_tokens > 24


def test_sampling_fields_accepted(client):
    result = client.chat.completions.create(model="smol", messages=HI, max_tokens=8, temperature=0.7, top_p=0.9,
                                            presence_penalty=0.5, frequency_penalty=0.5, seed=3,
                                            extra_body={"top_k": 20, "min_p": 0.05})
    assert result.choices[0].message.content


def test_stream_chunk_format(multi_server):
    body = {"model": "smol", "messages": HI, "max_tokens": 12, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", multi_server + "/v1/chat/completions", json=body, timeout=60) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    import json

    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_legacy_completion_stream(client):
    stream = client.completions.create(model="smol", prompt="The capital of France is", max_tokens=10, stream=True,
                                       temperature=0)
    text = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
    plain = client.completions.create(model="smol", prompt="The capital of France is", max_tokens=10, temperature=0)
    assert text == plain.choices[0].text and text


def test_multi_turn_and_system(client):
    result = client.chat.completions.create(model="smol", max_tokens=20, temperature=0, messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]},
    ])
    assert result.choices[0].message.content


def test_models_list(client):
    names = [m.id for m in client.models.list().data]
    assert names == ["smol", "smol-small"]


# ---------------------------------------------------------------------------------------------- bad input

def _assert_still_serving(client):
    ok = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert ok.choices[0].message.content is not None


@pytest.mark.parametrize("kwargs,error,param", [
    (dict(model="no-such-model", messages=HI), openai.NotFoundError, "model"),
    (dict(model="smol", messages=[]), openai.BadRequestError, "messages"),
    (dict(model="smol", messages=HI, max_tokens=-5), openai.BadRequestError, "max_tokens"),
    (dict(model="smol", messages=HI, temperature=9), openai.BadRequestError, "temperature"),
    (dict(model="smol-small", messages=[{"role": "user", "content": "word " * 400}]), openai.BadRequestError, "messages"),
    (dict(model="smol-small", messages=[{"role": "user", "content": "word " * 400}], stream=True),
     openai.BadRequestError, "messages"),
    (dict(model="smol", messages=HI, extra_body={"regex_pattern": "(unclosed"}), openai.BadRequestError, "regex_pattern"),
    (dict(model="smol", messages=HI, extra_body={"thinking_template": "<x/>"}), openai.BadRequestError,
     "thinking_template"),
])
def test_bad_input_gets_4xx_envelope(client, kwargs, error, param):
    with pytest.raises(error) as info:
        result = client.chat.completions.create(**kwargs)
        if kwargs.get("stream"):
            list(result)
    body = info.value.body
    assert set(body) == {"message", "type", "param", "code"}  # the client unwraps {"error": {...}}
    assert body["param"] == param and body["message"]
    _assert_still_serving(client)


def test_prompt_too_long_names_context(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smol-small", messages=[{"role": "user", "content": "word " * 400}])
    assert info.value.body["code"] == "context_length_exceeded"
    assert "256" in info.value.body["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'{"model": "smol"}', b""])
def test_malformed_bodies(multi_server, raw, client):
    r = httpx.post(multi_server + "/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    _assert_still_serving(client)


def test_chat_on_unknown_route_is_404_envelope(multi_server):
    r = httpx.post(multi_server + "/v1/nothing", json={})
    assert r.status_code == 404 and "error" in r.json()


def test_logprobs_chat_streamed_and_not(client):
    kwargs = dict(model="smol", messages=[{"role": "user", "content": "Say hello."}], max_tokens=6, temperature=0,
                  logprobs=True, top_logprobs=3)
    answer = client.chat.completions.create(**kwargs)
    entries = answer.choices[0].logprobs.content
    assert len(entries) == answer.usage.completion_tokens
    assert "".join(e.token for e in entries) == answer.choices[0].message.content
    for entry in entries:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
    streamed = [c for c in client.chat.completions.create(stream=True, **kwargs) if c.choices]
    tokens = [e.token for c in streamed if c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    text = "".join(c.choices[0].delta.content or "" for c in streamed)
    assert len(tokens) == 6 and "".join(tokens) == text  # each token's entry comes with the chunk that carried it
    plain = client.chat.completions.create(model="smol", messages=kwargs["messages"], max_tokens=3, logprobs=True)
    assert all(e.top_logprobs == [] for e in plain.choices[0].logprobs.content)
    none = client.chat.completions.create(model="smol", messages=kwargs["messages"], max_tokens=3)
    assert none.choices[0].logprobs is None


def test_logprobs_legacy_completions(client):
    answer = client.completions.create(model="smol", prompt="The sky is", max_tokens=5, temperature=0, logprobs=2)
    lp = answer.choices[0].logprobs
    assert "".join(lp.tokens) == answer.choices[0].text and len(lp.token_logprobs) == 5
    assert all(len(top) <= 2 for top in lp.top_logprobs) and lp.text_offset[0] == 0
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "x"}], logprobs=True,
                                       top_logprobs=21)
