"""Function calling and format enforcement on SmolLM2-135M: the constraint, not the model, does the work."""

from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import openai
import pytest

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tool_cases import CASES, SCHEMAS, TOOLS, WEATHER

pytestmark = pytest.mark.e2e


def _check_calls(message, expected_name=None, single=False):
    assert message.content is None
    assert message.tool_calls, "no tool call"
    if single:
        assert len(message.tool_calls) == 1
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in SCHEMAS
        if expected_name:
            assert call.function.name == expected_name
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


async def _streamed_calls(stream, with_usage=False):
    """(calls, finish_reason) of a streamed answer, and its usage when ``with_usage``."""
    calls, finish, usage = {}, None, None
    async for chunk in stream:
        usage = chunk.usage or usage
        choice = chunk.choices[0] if chunk.choices else None
        if choice is None:
            continue
        assert not choice.delta.content
        for delta in choice.delta.tool_calls or []:
            call = calls.get(delta.index)
            if call is None:  # the first delta of a call carries index, id, type and name
                assert delta.id and delta.type == "function" and delta.function.name
                call = calls[delta.index] = {"id": delta.id, "name": delta.function.name, "arguments": ""}
            else:
                assert delta.id is None and not delta.function.name
            call["arguments"] += delta.function.arguments or ""
        finish = choice.finish_reason or finish
    ordered = [calls[i] for i in sorted(calls)]
    return (ordered, finish, usage) if with_usage else (ordered, finish)


@pytest.mark.parametrize("mode", ["required", "named"])
async def test_calls_always_schema_valid(async_client, mode):
    """30 prompts x 5 schemas (nested objects, enums, arrays, numbers, optional fields), streamed and not."""
    semaphore = asyncio.Semaphore(4)

    async def one(index, tool, prompt):
        choice = "required" if mode == "required" else {"type": "function", "function": {"name": tool}}
        parallel = index % 10 == 0  # a weak model fills the parallel budget with calls: keep those few
        max_tokens = 1500 if parallel else 800
        kwargs = dict(model="smol", messages=[{"role": "user", "content": prompt}], tools=TOOLS, tool_choice=choice,
                      parallel_tool_calls=parallel, max_tokens=max_tokens, temperature=0.7, seed=index)
        # up to 16 calls can spend the budget, or fill the 2048-token context after a ~790-token prompt: then the
        # answer says "length", and every call in it still validates (the server appends what closes the last one)
        schemas = [SCHEMAS[tool]] if mode == "named" else list(SCHEMAS.values())
        async with semaphore:
            plain = await async_client.chat.completions.create(**kwargs)
            _check_calls(plain.choices[0].message, tool if mode == "named" else None,
                         single=not parallel or mode == "named")
            _honest(plain.choices[0].finish_reason, plain.usage, max_tokens, schemas, "tool_calls")
            calls, finish, usage = await _streamed_calls(await async_client.chat.completions.create(
                stream=True, stream_options={"include_usage": True}, **kwargs), with_usage=True)
        _honest(finish, usage, max_tokens, schemas, "tool_calls")
        assert calls
        if mode == "named":
            assert len(calls) == 1  # a named tool choice is exactly one call, parallel_tool_calls or not
        for call in calls:
            jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])
            if mode == "named":
                assert call["name"] == tool

    await asyncio.gather(*[one(i, tool, prompt) for i, (tool, prompt) in enumerate(CASES)])


def test_streamed_deltas_reassemble_to_the_same_call(client):
    # Greedy, short arguments, and the same request sent once before: llama.cpp is not bit-deterministic
    # between a request that computes its prompt and one that reuses it from the cache (near-ties flip), so
    # both compared requests must find the prompt cached the same way.
    for tool, prompt in CASES[0:6:2] + CASES[12:18:2]:
        kwargs = dict(model="smol", messages=[{"role": "user", "content": prompt}], tools=TOOLS, max_tokens=300,
                      tool_choice={"type": "function", "function": {"name": tool}}, temperature=0)
        client.chat.completions.create(**kwargs)  # warm the prompt cache
        plain = client.chat.completions.create(**kwargs).choices[0].message.tool_calls
        calls, finish = asyncio.run(_streamed_calls(_aiter(client.chat.completions.create(stream=True, **kwargs))))
        assert finish == "tool_calls"
        assert [(c["name"], c["arguments"]) for c in calls] == [(c.function.name, c.function.arguments) for c in plain]


async def _aiter(sync_stream):
    for chunk in sync_stream:
        yield chunk


def test_spec_get_current_weather_example(client, capsys):
    tools = [WEATHER]
    messages = [{"role": "user", "content": "What's the weather like in Boston today?"}]
    completion = client.chat.completions.create(model="smol", messages=messages, tools=tools,
                                                tool_choice="auto")
    print(completion.choices[0].message.tool_calls[0].function)
    function = completion.choices[0].message.tool_calls[0].function
    assert function.name == "get_current_weather"
    assert "location" in json.loads(function.arguments)


def test_auto_can_answer_in_text(client):
    result = client.chat.completions.create(model="smol", tools=[WEATHER], tool_choice="auto", max_tokens=30,
                                            temperature=0, messages=[{"role": "user", "content": "Tell me a joke."}])
    message = result.choices[0].message
    assert message.content and not message.tool_calls
    assert result.choices[0].finish_reason in ("stop", "length")


def test_multi_turn_with_tool_results(client):
    messages = [
        {"role": "user", "content": "What's the weather in Boston?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_current_weather", "arguments": '{"location": "Boston, MA"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 22, "unit": "celsius"}'},
    ]
    answer = client.chat.completions.create(model="smol", messages=messages, tools=[WEATHER], tool_choice="none",
                                            max_tokens=40, temperature=0)
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls
    again = client.chat.completions.create(model="smol", messages=messages, tools=[WEATHER], tool_choice="required",
                                           max_tokens=100, parallel_tool_calls=False)
    assert again.choices[0].finish_reason == "tool_calls"
    _check_calls(again.choices[0].message, single=True)


# ------------------------------------------------------------------------------------ format enforcement

# Quantifiers are bounded: an unbounded `\d+` lets a weak model produce digits until max_tokens.
REGEXES = [r"(Yes|No)", r"[0-9]{3}-[0-9]{4}", r"[A-Z][a-z]{1,12} [A-Z][a-z]{1,12}", r"(red|green|blue)( and (red|green|blue))?",
           r"\d{1,6}(\.\d{1,2})?", r"[a-z]{1,12}@[a-z]{1,12}\.(com|org)", r"(true|false)", r"[A-Z]{3}-[0-9]{2}",
           r"#[0-9a-f]{6}", r"(cat|dog|bird)s?", r"[0-9]{4}-[0-9]{2}-[0-9]{2}", r"(low|medium|high) priority",
           r"v[0-9]\.[0-9]\.[0-9]", r"(north|south|east|west)", r"[a-z]{3,8}", r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}",
           r"(I agree|I disagree)\.", r"[1-5] stars?", r"(AM|PM)", r"Answer: [A-D]"]


def test_regex_pattern_fully_matches(client):
    assert len(REGEXES) >= 20
    for i, pattern in enumerate(REGEXES):
        result = client.chat.completions.create(model="smol", max_tokens=40, temperature=0.8, seed=i,
                                                messages=[{"role": "user", "content": f"Give me an answer #{i}."}],
                                                extra_body={"regex_pattern": pattern})
        text = result.choices[0].message.content
        assert re.fullmatch(pattern, text), (pattern, text)
        assert result.choices[0].finish_reason == "stop"


def test_regex_prefix_pattern(client):
    for i in range(4):
        result = client.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": "Is smoking bad for health? Answer with Yes or No"}],
            temperature=0.1, max_tokens=30, seed=i, extra_body={"regex_prefix_pattern": r'(Yes|No)\.'})
        assert re.match(r"(Yes|No)\.", result.choices[0].message.content)


def test_leading_prompt(client):
    result = client.chat.completions.create(model="smol", max_tokens=20, messages=[{"role": "user", "content": "Hi"}],
                                            extra_body={"leading_prompt": "Dear user,"})
    assert result.choices[0].message.content.startswith("Dear user,")
    stream = client.chat.completions.create(model="smol", max_tokens=20, messages=[{"role": "user", "content": "Hi"}],
                                            stream=True, extra_body={"leading_prompt": "Dear user,"})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).startswith("Dear user,")


PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 40},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 150},
                                           "tags": {"type": "array", "items": {"type": "string", "maxLength": 20},
                                                    "maxItems": 3}},
          "required": ["name", "age"], "additionalProperties": False}


def test_response_format_json_schema_and_object(client):
    for i in range(5):
        result = client.chat.completions.create(
            model="smol", max_tokens=120, temperature=0.7, seed=i,
            messages=[{"role": "user", "content": "Describe a person as JSON."}],
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}})
        jsonschema.validate(json.loads(result.choices[0].message.content), PERSON)
    # json_object bounds nothing, so a weak model may ramble until max_tokens: every answer that ended by
    # itself must be a JSON object, and most do.
    finished = 0
    for seed in range(3):
        result = client.chat.completions.create(model="smol", max_tokens=400, response_format={"type": "json_object"},
                                                messages=[{"role": "user", "content": "Give me a small JSON object."}],
                                                temperature=0.7, seed=seed)
        content = result.choices[0].message.content
        assert content.startswith("{")
        if result.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(content), dict)
            finished += 1
    assert finished >= 1


@pytest.mark.parametrize("kwargs,param", [
    (dict(extra_body={"regex_pattern": "[a-"}), "regex_pattern"),
    (dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "wat"}}}),
     "response_format.json_schema.schema"),
    (dict(extra_body={"regex_pattern": "a+"}, response_format={"type": "json_object"}), None),
    (dict(tools=[WEATHER, WEATHER]), "tools[1].function.name"),
    (dict(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
    (dict(tool_choice="required"), "tool_choice"),
])
def test_bad_constraints_are_400(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "x"}], **kwargs)
    if param:
        assert info.value.body["param"] == param
    ok = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    assert ok.choices[0].message.content is not None


@pytest.mark.parametrize("stream", [False, True])
async def test_no_call_is_repeated(async_client, stream):
    """SmolLM2 under `required` with parallel calls allowed fills the 5 allowed calls with copies of its call
    (or a celsius/fahrenheit cycle); the copies are dropped, the answer ends before the first, and usage still
    counts the prompt and the generated tokens."""
    city = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                             "parameters": {"type": "object", "required": ["city"], "properties": {
                                                 "city": {"type": "string", "maxLength": 30}}}}}
    for seed, (tool, prompt) in enumerate([(city, "Weather in Paris?"), (city, "Is it cold in Oslo?"),
                                           (WEATHER, "What's the weather like in Paris?"),
                                           (WEATHER, "Weather in Tokyo, please.")]):
        kwargs = dict(model="smol", messages=[{"role": "user", "content": prompt}], tools=[tool],
                      tool_choice="required", temperature=0, seed=seed, max_tokens=600)
        if stream:
            calls, finish = await _streamed_calls(await async_client.chat.completions.create(
                stream=True, stream_options={"include_usage": True}, **kwargs))
            pairs = [(c["name"], c["arguments"]) for c in calls]
        else:
            answer = await async_client.chat.completions.create(**kwargs)
            finish = answer.choices[0].finish_reason
            pairs = [(c.function.name, c.function.arguments) for c in answer.choices[0].message.tool_calls]
            assert answer.usage.prompt_tokens > 50 and answer.usage.completion_tokens > 5
        assert finish == "tool_calls" and pairs
        assert len(set(pairs)) == len(pairs) < 5, pairs


UNBOUNDED = {"type": "function", "function": {
    "name": "write_report", "description": "Write a detailed report about a topic",
    "parameters": {"type": "object", "properties": {
        "title": {"type": "string"}, "body": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "meta": {"type": "object", "properties": {"author": {"type": "string"}, "pages": {"type": "integer"}},
                 "required": ["author", "pages"]}},
        "required": ["title", "body", "tags", "meta"]}}}


def _honest(finish, usage, max_tokens, schemas, done_reason, context=2048):
    """finish_reason says what ended the answer: "length" exactly when the sampling budget (max_tokens less the
    tokens kept back for the closing text of the largest of ``schemas``) or the model's context (prompt and answer,
    ``context`` tokens: 'smol' in the e2e server) ran out; the answer's own end (or a value closed because it
    repeated itself) otherwise. Sampled tokens never exceed the budget."""
    from gallama_core.pipeline.json_budget import closing_reserve
    from gallama_core.pipeline.output_limits import OutputLimits, cap_schema

    schemas = schemas if isinstance(schemas, list) else [schemas]
    reserve = closing_reserve([cap_schema(schema, OutputLimits()) for schema in schemas], max_tokens)
    sampled_budget = max_tokens - reserve
    completion_tokens = usage.completion_tokens
    assert completion_tokens <= sampled_budget
    spent = completion_tokens == sampled_budget or usage.prompt_tokens + completion_tokens >= context
    assert (finish == "length") == spent, (finish, usage, sampled_budget)
    assert finish in ("length", done_reason)


async def _streamed_usage(stream):
    """(calls, finish_reason, content, usage) of a stream with usage."""
    calls, finish, content, usage = {}, None, "", None
    async for chunk in stream:
        usage = chunk.usage or usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"name": "", "arguments": ""})
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
        finish = choice.finish_reason or finish
    return [calls[i] for i in sorted(calls)], finish, content, usage


@pytest.mark.parametrize("max_tokens", [64, 128, 200])
async def test_cut_calls_and_json_still_validate(async_client, max_tokens):
    """Strings without maxLength, a budget that ends inside them: every call and every JSON answer still
    validates within max_tokens (the server keeps back the tokens of the closing text and appends it), streamed
    and not; finish_reason is "length" exactly when the budget ended the answer."""
    schema = UNBOUNDED["function"]["parameters"]
    prompts = ["Write a long report about the history of Rome.", "A detailed report about cats, with many tags.",
               "Report on the weather in Oslo this week, day by day."]
    with_usage = {"include_usage": True}
    for seed, prompt in enumerate(prompts):
        choice = {"type": "function", "function": {"name": "write_report"}} if seed == 1 else "required"
        kwargs = dict(model="smol", messages=[{"role": "user", "content": prompt}], tools=[UNBOUNDED],
                      tool_choice=choice, max_tokens=max_tokens, temperature=0.8, seed=seed,
                      parallel_tool_calls=False)
        answer = await async_client.chat.completions.create(**kwargs)
        calls = answer.choices[0].message.tool_calls
        assert calls and len(calls) == 1 and answer.choices[0].message.content is None
        jsonschema.validate(json.loads(calls[0].function.arguments), schema)
        _honest(answer.choices[0].finish_reason, answer.usage, max_tokens, schema, "tool_calls")
        streamed, finish, _, usage = await _streamed_usage(await async_client.chat.completions.create(
            stream=True, stream_options=with_usage, **kwargs))
        assert len(streamed) == 1
        jsonschema.validate(json.loads(streamed[0]["arguments"]), schema)
        _honest(finish, usage, max_tokens, schema, "tool_calls")
        fmt = {"type": "json_schema", "json_schema": {"name": "report", "schema": schema}}
        json_kwargs = dict(model="smol", messages=[{"role": "user", "content": prompt}], response_format=fmt,
                           max_tokens=max_tokens, temperature=0.8, seed=seed)
        answer = await async_client.chat.completions.create(**json_kwargs)
        jsonschema.validate(json.loads(answer.choices[0].message.content), schema)
        _honest(answer.choices[0].finish_reason, answer.usage, max_tokens, schema, "stop")
        _, finish, text, usage = await _streamed_usage(await async_client.chat.completions.create(
            stream=True, stream_options=with_usage, **json_kwargs))
        jsonschema.validate(json.loads(text), schema)
        _honest(finish, usage, max_tokens, schema, "stop")
