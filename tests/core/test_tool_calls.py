"""Tool-call format: grammar, history rendering, the incremental parser, request validation."""

from __future__ import annotations

import json
import random

import pytest

from gallama_core.pipeline.constraints import grammar_problem
from gallama_core.pipeline.features.function_calling import render_history
from gallama_core.pipeline.tool_calls import ToolCallParser, call_grammar, render_tool_call

WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {
    "location": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["location"]}}
SEARCH = {"name": "search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("allow_text", [True, False])
def test_grammar_compiles(parallel, allow_text):
    assert grammar_problem(call_grammar([WEATHER, SEARCH], parallel, allow_text)) is None


def _feed_all(text: str, seed: int):
    parser = ToolCallParser()
    rng = random.Random(seed)
    content, deltas, i = "", [], 0
    while i < len(text):
        step = rng.randint(1, 7)
        c, d = parser.feed(text[i:i + step])
        content += c
        deltas += d
        i += step
    c, d = parser.finish()
    return content + c, deltas + d


def _assemble(deltas):
    calls = {}
    for d in deltas:
        call = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
        if d.id:
            assert call["id"] is None and d.type == "function" and d.function.name  # first delta of a call
            call["id"] = d.id
        call["name"] += d.function.name or ""
        call["arguments"] += d.function.arguments or ""
    return [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize("seed", range(20))
def test_parser_streams_calls_in_any_chunking(seed):
    args1 = {"location": "Boston, MA", "unit": "f", "note": "a } \" tricky </tool_call value"}
    text = render_tool_call("get_weather", args1) + "\n" + render_tool_call("search", '{"q": "x"}')
    content, deltas = _feed_all(text, seed)
    assert content == ""
    calls = _assemble(deltas)
    assert [c["name"] for c in calls] == ["get_weather", "search"]
    assert json.loads(calls[0]["arguments"]) == args1
    assert json.loads(calls[1]["arguments"]) == {"q": "x"}
    assert all(c["id"].startswith("call_") for c in calls)


@pytest.mark.parametrize("text", ["Hello there", "  <toolbox> is a tag", "<tool", "", "Use <tool_call> later"])
def test_parser_passes_text_through(text):
    content, deltas = _feed_all(text, 1)
    assert content == text and deltas == []


def test_truncated_call_keeps_partial_arguments():
    parser = ToolCallParser()
    _, deltas = parser.feed('<tool_call>\n{"name": "search", "arguments": {"q": "abc')
    _, more = parser.finish()
    calls = _assemble(deltas + more)
    assert calls[0]["name"] == "search" and calls[0]["arguments"] == '{"q": "abc'


def test_history_rendering_without_tool_role():
    history = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"location": "Oslo"}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "-3C"},
        {"role": "user", "content": "thanks"},
    ]
    out = render_history(history, tool_role=False)
    assert [m["role"] for m in out] == ["user", "assistant", "user"]
    assert out[1]["content"] == render_tool_call("get_weather", {"location": "Oslo"})
    assert "<tool_response>" in out[2]["content"] and '"name": "get_weather"' in out[2]["content"]
    assert out[2]["content"].endswith("thanks")
    assert [m["role"] for m in render_history(history, tool_role=True)] == ["user", "assistant", "tool", "user"]


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
MSG = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize("extra,param", [
    ({"tools": [TOOL, TOOL]}, "tools[1].function.name"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
    ({"tool_choice": "sometimes", "tools": [TOOL]}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                               "properties": {"a": {"type": "nope"}}}}}]},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!", "parameters": {}}}]}, None),
    ({"tools": [TOOL], "tool_choice": "required", "response_format": {"type": "json_object"}}, None),
])
async def test_bad_tools_are_400(client, extra, param):
    r = await client.post("/v1/chat/completions", json={"model": "echo-a", "messages": MSG, **extra})
    assert r.status_code == 400, r.text
    if param:
        assert r.json()["error"]["param"] == param
    assert (await client.post("/v1/chat/completions", json={"model": "echo-a", "messages": MSG})).status_code == 200


async def test_tool_choice_none_and_auto_without_tools_are_plain(client):
    for extra in ({"tool_choice": "auto"}, {"tool_choice": "none", "tools": [TOOL]}):
        r = await client.post("/v1/chat/completions", json={"model": "echo-a", "messages": MSG, **extra})
        assert r.status_code == 200
        backend = next(i.backend for i in client.state.models.instances if i.name == "echo-a")
        assert backend.requests[-1].grammar is None and "<tool_call>" not in backend.requests[-1].prompt


@pytest.mark.parametrize("cut, expected", [
    ('{"city": "Oslo"}}\n</', '{"city": "Oslo"}'),     # cut inside the closing tag: no tag text in arguments
    ('{"city": "Oslo"}}\n', '{"city": "Oslo"}'),
    ('{"city": "Oslo"}}', '{"city": "Oslo"}'),
    ('{"city": "Oslo"}', '{"city": "Oslo"}'),          # cut right after the arguments: nothing to drop
    ('{"city": "Os', '{"city": "Os'),                  # cut inside the arguments: kept as generated
])
def test_a_call_cut_in_its_closing_tag_keeps_clean_arguments(cut, expected):
    parser = ToolCallParser()
    parser.feed('<tool_call>\n{"name": "get_weather", "arguments": ' + cut)
    parser.finish()
    assert parser.calls[0]["arguments"] == expected


async def test_a_named_tool_choice_is_one_call_even_with_parallel_calls(client):
    tools = [{"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
             {"type": "function", "function": {"name": "b", "parameters": {"type": "object"}}}]
    for parallel in (True, None):
        body = {"model": "echo-a", "messages": [{"role": "user", "content": "x"}], "tools": tools,
                "tool_choice": {"type": "function", "function": {"name": "b"}}, "parallel_tool_calls": parallel}
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
        grammar = [i.backend for i in client.state.models.instances if i.name == "echo-a"][0].requests[-1].grammar
        assert "calls: call\n" in grammar + "\n" and '("\\n" call' not in grammar
    body["tool_choice"] = "required"
    await client.post("/v1/chat/completions", json=body)
    grammar = [i.backend for i in client.state.models.instances if i.name == "echo-a"][0].requests[-1].grammar
    assert '("\\n" call' in grammar  # required may call several tools


def _guarded(text: str, piece: int = 3):
    """Feed ``text`` in pieces through the parser and the repeat guard: (calls sent, whether it was cut)."""
    from gallama_core.pipeline.tool_calls import RepeatGuard, ToolCallParser

    parser, guard, sent = ToolCallParser(), RepeatGuard(), {}
    for start in range(0, len(text), piece):
        _, deltas = parser.feed(text[start:start + piece])
        deltas, repeated = guard.filter(deltas, parser)
        for d in deltas:
            call = sent.setdefault(d.index, {"name": "", "arguments": ""})
            call["name"] += d.function.name or ""
            call["arguments"] += d.function.arguments or ""
        if repeated:
            return [sent[i] for i in sorted(sent)], True
    _, more = parser.finish()
    more, _ = guard.filter(more, parser)
    for d in more + guard.flush():
        sent.setdefault(d.index, {"name": "", "arguments": ""})["arguments"] += d.function.arguments or ""
    return [sent[i] for i in sorted(sent)], False


def _call(name, args):
    import json as _json

    return f'<tool_call>\n{{"name": "{name}", "arguments": {_json.dumps(args)}}}\n</tool_call>'


def test_a_repeated_call_is_dropped_and_ends_the_answer():
    same = _call("weather", {"city": "Paris"})
    calls, cut = _guarded("\n".join([same, same, same]))
    assert cut and calls == [{"name": "weather", "arguments": '{"city": "Paris"}'}]


def test_a_cycle_of_calls_ends_at_the_first_copy():
    a, b = _call("weather", {"city": "Paris", "unit": "c"}), _call("weather", {"city": "Paris", "unit": "f"})
    calls, cut = _guarded("\n".join([a, b, a, b]))
    assert cut and [c["arguments"] for c in calls] == ['{"city": "Paris", "unit": "c"}', '{"city": "Paris", "unit": "f"}']


def test_calls_that_differ_are_all_sent():
    text = "\n".join([_call("weather", {"city": "Paris"}), _call("weather", {"city": "Pa"}),
                      _call("time", {"city": "Paris"}), _call("weather", {"city": "Rome"})])
    calls, cut = _guarded(text, piece=1)
    assert not cut
    assert [(c["name"], c["arguments"]) for c in calls] == [
        ("weather", '{"city": "Paris"}'), ("weather", '{"city": "Pa"}'), ("time", '{"city": "Paris"}'),
        ("weather", '{"city": "Rome"}')]


def test_a_copy_cut_by_max_tokens_is_sent_as_generated():
    same = _call("weather", {"city": "Paris"})
    calls, cut = _guarded(same + "\n" + same[:-25])
    assert not cut and len(calls) == 2 and calls[1]["arguments"] == calls[0]["arguments"][:len(calls[1]["arguments"])]


def test_a_call_that_only_adds_or_drops_arguments_is_a_repeat():
    first = _call("weather", {"city": "Paris"})
    for later in (_call("weather", {"city": "Paris", "unit": "celsius"}), _call("weather", {"city": " paris"}),
                  _call("weather", {})):
        calls, cut = _guarded("\n".join([first, later, _call("weather", {"city": "Rome"})]), piece=2)
        assert cut and [c["arguments"] for c in calls] == ['{"city": "Paris"}'], later
    wider = _call("weather", {"city": "Paris", "unit": "celsius"})
    calls, cut = _guarded("\n".join([wider, first]))
    assert cut and len(calls) == 1


def test_same_tool_with_another_value_streams_once_complete():
    from gallama_core.pipeline.tool_calls import RepeatGuard, ToolCallParser

    text = "\n".join([_call("weather", {"city": "Paris", "unit": "celsius"}),
                      _call("weather", {"city": "Paris", "unit": "fahrenheit"})])
    calls, cut = _guarded(text, piece=1)
    assert not cut and [c["arguments"] for c in calls] == ['{"city": "Paris", "unit": "celsius"}',
                                                           '{"city": "Paris", "unit": "fahrenheit"}']
    parser, guard = ToolCallParser(), RepeatGuard()
    sent_before_end = []
    second = text.index("\n<tool_call>")
    for ch in text[:-len("</tool_call>")]:
        deltas, _ = guard.filter(parser.feed(ch)[1], parser)
        sent_before_end += [d for d in deltas if d.index == 1]
    assert second > 0 and not sent_before_end  # held until it is complete and known not to repeat
