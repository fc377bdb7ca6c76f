"""Structured output that ends valid within max_tokens: the reserve kept back for the closing text, the
repetition watch, default caps, bare-JSON call recovery, output_limits (request field), the routing question of
``auto``, on a scripted backend."""

from __future__ import annotations

import asyncio
import json

import httpx
import jsonschema
import pytest

from gallama_core import hookimpl
from gallama_core.api.app import build_state, create_app
from gallama_core.models.backend import Backend, GenerationChunk
from gallama_core.models.settings import ModelSettings
from gallama_core.pipeline.chat_template import CHATML_TEMPLATE, ChatTemplate
from gallama_core.pipeline.json_budget import RepetitionWatch, closing_reserve, ends_in_repeats
from gallama_core.pipeline.output_limits import OutputLimits, cap_schema
from gallama_core.pipeline.tool_calls import bare_calls
from gallama_core.plugin_system.manager import create_plugin_manager
from gallama_core.plugin_system.registrations import BackendSpec

REPORT = {"type": "object", "properties": {
    "title": {"type": "string"}, "body": {"type": "string"},
    "tags": {"type": "array", "items": {"type": "string"}},
    "meta": {"type": "object", "properties": {"author": {"type": "string"}, "pages": {"type": "integer"}},
             "required": ["author", "pages"]}},
    "required": ["title", "body", "tags", "meta"]}
TOOL = {"type": "function", "function": {"name": "write_report", "parameters": REPORT}}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}


class ScriptedBackend(Backend):
    """Answers with ``script`` (the routing pass of ``auto`` with ``route``), 4 characters per token, honouring
    max_tokens; records every request and whether a generation was closed before its end."""

    def __init__(self, settings):
        super().__init__("scripted", settings.served_name, 4096, ChatTemplate(CHATML_TEMPLATE))
        self.script, self.route, self.requests, self.closed_early = "", "answer", [], 0

    async def generate(self, request):
        self.requests.append(request)
        text = self.route if request.request_id.endswith("-route") else self.script
        pieces = [text[i:i + 4] for i in range(0, len(text), 4)]
        limit = request.max_tokens or len(pieces)
        shown, done = pieces[:limit], False
        try:
            for i, piece in enumerate(shown):
                await asyncio.sleep(0)
                last = i == len(shown) - 1
                yield GenerationChunk(text=piece, finish_reason=("length" if limit < len(pieces) else "stop")
                                      if last else None, prompt_tokens=10 if last else None,
                                      completion_tokens=len(shown) if last else None)
            done = True
        finally:
            self.closed_early += not done


class ScriptedPlugin:
    @hookimpl
    def gallama_backends(self):
        return [BackendSpec(name="scripted", settings_model=ModelSettings, load=lambda s, p: ScriptedBackend(s))]


@pytest.fixture
async def scripted(home):
    pm = create_plugin_manager(load_entry_points=False)
    pm.register(ScriptedPlugin(), name="scripted")
    state = build_state(pm, strict_names=True, in_process=True)
    app = create_app(state, [ModelSettings(model_id="s", backend="scripted")])
    async with app.router.lifespan_context(app):
        await state.models.wait_loaded()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            http.backend = state.models.instances[0].backend
            yield http


def _body(**extra):
    return {"model": "s", "messages": [{"role": "user", "content": "write"}], **extra}


async def _streamed(http, body) -> tuple[dict, str | None, str]:
    calls, finish, content = {}, None, ""
    async with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            content += choice["delta"].get("content") or ""
            for d in choice["delta"].get("tool_calls") or []:
                call = calls.setdefault(d["index"], {"name": "", "arguments": ""})
                call["name"] += d["function"].get("name") or ""
                call["arguments"] += d["function"].get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    return calls, finish, content


async def _first_call(http, body, stream: bool) -> tuple[str, str | None, dict | None]:
    """The first tool call's arguments and the finish reason, streamed or not (and the whole answer when not)."""
    if stream:
        calls, finish, _ = await _streamed(http, body)
        return calls[0]["arguments"], finish, None
    answer = (await http.post("/v1/chat/completions", json=body)).json()
    return (answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            answer["choices"][0]["finish_reason"], answer)


VARIED = " ".join(f"word{i}" for i in range(300))  # text that never repeats itself
CALL_START = '<tool_call>\n{"name": "write_report", "arguments": '


@pytest.mark.parametrize("stream", [False, True])
async def test_a_call_the_budget_cuts_ends_valid_within_it(scripted, stream):
    scripted.backend.script = CALL_START + '{"title": "Rome", "body": "' + VARIED
    body = _body(tools=[TOOL], tool_choice="required", max_tokens=64)
    arguments, finish, answer = await _first_call(scripted, body, stream)
    if answer is not None:
        assert answer["usage"]["completion_tokens"] <= 64
    jsonschema.validate(json.loads(arguments), REPORT)
    assert finish == "length"
    sent = scripted.backend.requests[-1].max_tokens
    reserve = closing_reserve([cap_schema(REPORT, OutputLimits())], 64)
    assert sent == 64 - reserve and 0 < reserve <= 32  # the closing text's tokens were kept back from sampling


@pytest.mark.parametrize("stream", [False, True])
async def test_json_answer_the_budget_cuts_ends_valid_within_it(scripted, stream):
    scripted.backend.script = '{"title": "Cats", "body": "' + VARIED
    fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": REPORT}}
    body = _body(response_format=fmt, max_tokens=100)
    if stream:
        _, finish, text = await _streamed(scripted, body)
    else:
        answer = (await scripted.post("/v1/chat/completions", json=body)).json()
        finish, text = answer["choices"][0]["finish_reason"], answer["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(text), REPORT)
    assert finish == "length" and scripted.backend.requests[-1].max_tokens < 100


@pytest.mark.parametrize("stream", [False, True])
async def test_a_value_that_repeats_itself_is_closed_there(scripted, stream):
    """No budget at all: a string that loops is closed by the repetition watch, not by the context's end."""
    scripted.backend.script = CALL_START + '{"title": "Cats", "body": "' + "the cat sat " * 400
    body = _body(tools=[TOOL], tool_choice="required")
    arguments, finish, _ = await _first_call(scripted, body, stream)
    value = json.loads(arguments)
    jsonschema.validate(value, REPORT)
    assert finish == "tool_calls" and len(value["body"]) < 400  # closed after a few copies
    assert scripted.backend.closed_early >= 1

    scripted.backend.script = '{"title": "' + "ab" * 2000
    fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": REPORT}}
    answer = (await scripted.post("/v1/chat/completions", json=_body(response_format=fmt))).json()
    jsonschema.validate(json.loads(answer["choices"][0]["message"]["content"]), REPORT)
    assert answer["choices"][0]["finish_reason"] == "stop"


async def test_stop_repetition_can_be_turned_off(scripted):
    scripted.backend.script = '{"title": "' + "ab" * 200 + '", "body": "", "tags": [], "meta": {"author": "", "pages": 1}}'
    fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": REPORT}}
    answer = (await scripted.post("/v1/chat/completions", json=_body(
        response_format=fmt, output_limits={"stop_repetition": False}))).json()
    assert json.loads(answer["choices"][0]["message"]["content"])["title"] == "ab" * 200


@pytest.mark.parametrize("stream", [False, True])
async def test_a_bare_json_call_under_auto_is_recovered(scripted, stream):
    scripted.backend.script = '```json\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n```'
    body = _body(tools=[WEATHER], tool_choice="auto")
    if stream:
        calls, finish, content = await _streamed(scripted, body)
        calls = list(calls.values())
    else:
        answer = (await scripted.post("/v1/chat/completions", json=body)).json()
        finish, message = answer["choices"][0]["finish_reason"], answer["choices"][0]["message"]
        content = message.get("content") or ""
        calls = [c["function"] for c in message["tool_calls"]]
    assert finish == "tool_calls" and not content
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", {"location": "Paris"})]


async def test_json_that_is_not_a_valid_call_stays_text(scripted):
    for script in ('{"name": "get_weather", "arguments": {"city": 3}}', '{"a": 1}', '{"name": "nope", "arguments": {}}'):
        scripted.backend.script = script
        answer = (await scripted.post("/v1/chat/completions", json=_body(tools=[WEATHER], tool_choice="auto"))).json()
        assert answer["choices"][0]["message"]["content"] == script and answer["choices"][0]["finish_reason"] == "stop"


async def test_output_limits_shape_the_grammar_and_bad_ones_are_400(scripted):
    scripted.backend.script = CALL_START + '{"title": "a", "body": "b", "tags": [], "meta": {"author": "c", "pages": 1}}}\n</tool_call>'
    r = await scripted.post("/v1/chat/completions", json=_body(
        tools=[TOOL], tool_choice="required", output_limits={"max_string_length": 77, "max_tool_calls": 3}))
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "tool_calls"
    grammar = scripted.backend.requests[-1].grammar
    assert '"maxLength": 77' in grammar and grammar.count('("\\n" call') == 2
    for limits, param in [({"max_tool_calls": 0}, "output_limits.max_tool_calls"),
                          ({"max_strings": 3}, "output_limits.max_strings"), ("x", "output_limits")]:
        r = await scripted.post("/v1/chat/completions", json=_body(tools=[TOOL], output_limits=limits))
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_caps_go_only_where_the_schema_has_none():
    schema = {"type": "object", "properties": {
        "free": {"type": "string"}, "short": {"type": "string", "maxLength": 5},
        "choice": {"type": "string", "enum": ["a", "b"]}, "code": {"type": "string", "pattern": "^[A-Z]+$"},
        "list": {"type": "array", "items": {"type": "string"}}, "few": {"type": "array", "maxItems": 2},
        "long": {"type": "string", "minLength": 50}}}
    capped = cap_schema(schema, OutputLimits(max_string_length=20, max_array_items=4))["properties"]
    assert capped["free"]["maxLength"] == 20 and capped["short"]["maxLength"] == 5
    assert "maxLength" not in capped["choice"] and "maxLength" not in capped["code"]
    assert capped["list"]["maxItems"] == 4 and capped["list"]["items"]["maxLength"] == 20
    assert capped["few"]["maxItems"] == 2 and capped["long"]["maxLength"] == 50
    assert cap_schema(schema, OutputLimits(max_string_length=None, max_array_items=None)) == schema


def test_reserve_is_bounded_by_half_the_budget():
    assert closing_reserve([REPORT], None) == 0
    assert closing_reserve([REPORT], 20) == 10
    assert 10 < closing_reserve([REPORT], 1000) < 100
    assert closing_reserve([{"type": "object"}], 1000) <= 4


def test_repetition_watch():
    assert not RepetitionWatch().feed('{"a": "' + "A long sentence about many different things, one after another. ")
    assert RepetitionWatch().feed('{"a": "' + "na " * 30)
    assert not RepetitionWatch().feed('{"a": "' + "na " * 30 + '", "b": 1')  # the string closed by itself
    assert RepetitionWatch().feed('{"tags": [' + '"cats", ' * 20)
    assert not RepetitionWatch().feed('{"m": [' + "0, " * 16)
    assert ends_in_repeats("xyz" + "abcd" * 16) and not ends_in_repeats("abcd" * 3)


def test_bare_calls():
    schemas = {"f": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}
    assert bare_calls('{"name": "f", "arguments": {"x": 1}}', schemas) == [("f", '{"x": 1}')]
    assert bare_calls('[{"name": "f", "parameters": {"x": 1}}, {"name": "f", "arguments": "{\\"x\\": 2}"}]',
                      schemas) == [("f", '{"x": 1}'), ("f", '{"x": 2}')]
    assert bare_calls('{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}', schemas)
    for text in ('{"name": "f", "arguments": {"x": "1"}}', '{"name": "g", "arguments": {}}', "hello",
                 '{"name": "f", "arguments": {"x": 1}, "why": "because"}'):
        assert bare_calls(text, schemas) is None


async def test_response_format_grammar_closes_objects_like_the_completion(scripted):
    """The grammar allows no invented keys, so a cut answer can always be completed for the request's schema."""
    scripted.backend.script = '{"title": "x", "body": "y", "tags": [], "meta": {"author": "z", "pages": 2}}'
    fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": REPORT}}
    assert (await scripted.post("/v1/chat/completions", json=_body(response_format=fmt))).status_code == 200
    assert '"additionalProperties": false' in scripted.backend.requests[-1].grammar
    bad = {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "string", "minLength": "x"}}}
    r = await scripted.post("/v1/chat/completions", json=_body(response_format=bad))
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format.json_schema.schema"


async def test_auto_routing_asks_about_the_results_after_a_tool_turn(scripted):
    """After a user's turn the routing pass asks whether to use a tool; after tool results it asks whether they
    are enough to answer, at the end of the results' turn: SmolLM2 answers from them instead of calling the same
    tool again, turn after turn."""
    from gallama_core.pipeline.features.function_calling import FOLLOW_UP, ROUTING

    scripted.backend.script = "It is sunny."
    first = _body(tools=[WEATHER], messages=[{"role": "user", "content": "Weather in Oslo?"}])
    assert (await scripted.post("/v1/chat/completions", json=first)).status_code == 200
    route = scripted.backend.requests[-2]
    assert route.request_id.endswith("-route") and ROUTING.question.strip() in route.prompt
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Oslo"}'}}
    after = _body(tools=[WEATHER], messages=[{"role": "user", "content": "Weather in Oslo?"},
                                             {"role": "assistant", "content": None, "tool_calls": [call]},
                                             {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21 C"}])
    answer = (await scripted.post("/v1/chat/completions", json=after)).json()
    route = scripted.backend.requests[-2]
    assert route.request_id.endswith("-route") and ROUTING.question.strip() not in route.prompt
    # the question follows the tool's result, not the user's earlier question
    assert route.prompt.index("sunny, 21 C") < route.prompt.index(FOLLOW_UP.question.strip())
    assert answer["choices"][0]["message"]["content"] == "It is sunny."
