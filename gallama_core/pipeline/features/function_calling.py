"""Function calling for any model: ``tools``, ``tool_choice``, ``parallel_tool_calls``.

The tools are described in the system prompt in gallama's tool-call format (see :mod:`gallama_core.pipeline.tool_calls`)
and the answer is generated under a grammar: with ``required`` or a named tool every answer is one or more
calls whose arguments validate against the tool's schema; with ``auto`` the model may instead answer in text,
and when it calls, the call is constrained the same way. History messages with ``tool_calls`` and ``tool``
results are rendered in the same format for every model.
"""

from __future__ import annotations

import json
from typing import Any

from gallama_core import hookimpl
from gallama_core.models.backend import GenerationRequest, SamplingParams
from gallama_core.pipeline.constraints import ChoiceConstraint, compile_constraints, GrammarConstraint, check_json_schema, close_objects, grammar_problem, json_lark
from gallama_core.errors import InvalidRequestError
from gallama_core.pipeline.prompting import render_chat_prompt
from gallama_core.pipeline.tool_calls import RepeatGuard, ToolCallParser, call_grammar, render_tool_call, tool_prompt

STATE_KEY = "function_calling"


def _tool_specs(request) -> list[dict[str, Any]]:
    specs, seen = [], set()
    for i, tool in enumerate(request.tools or []):
        fn = tool.function
        param = f"tools[{i}].function.parameters"
        if fn.name in seen:
            raise InvalidRequestError(f"duplicate tool name {fn.name!r}", param=f"tools[{i}].function.name")
        seen.add(fn.name)
        parameters = fn.parameters if fn.parameters is not None else {"type": "object", "properties": {}}
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            raise InvalidRequestError(f"{param}: the parameters of {fn.name!r} must be a JSON schema of type "
                                      "'object'", param=param)
        check_json_schema(parameters, param)
        problem = grammar_problem(f"start: {json_lark(close_objects(parameters))}")
        if problem:
            raise InvalidRequestError(f"{param}: the schema of {fn.name!r} is not supported: {problem}", param=param)
        specs.append({"name": fn.name, "description": fn.description, "parameters": parameters})
    return specs


def _mode(request, specs) -> tuple[str, str | None]:
    choice = request.tool_choice
    if choice is None:
        return ("auto" if specs else "none"), None
    if isinstance(choice, str):
        if choice == "required" and not specs:
            raise InvalidRequestError("tool_choice 'required' needs 'tools'", param="tool_choice")
        return (choice if specs else "none"), None
    if not specs:
        raise InvalidRequestError("a named tool_choice needs 'tools'", param="tool_choice")
    if choice.function.name not in {s["name"] for s in specs}:
        raise InvalidRequestError(f"tool_choice names {choice.function.name!r}, which is not in 'tools'",
                                  param="tool_choice")
    return "named", choice.function.name


def _template_knows_tool_role(ctx) -> bool:
    source = ctx.backend.chat_template.source if ctx.backend.chat_template else ""
    return "'tool'" in source or '"tool"' in source


def render_history(messages: list[dict[str, Any]], tool_role: bool) -> list[dict[str, Any]]:
    """Assistant tool calls become text blocks; tool results become ``<tool_response>`` blocks (in a user
    turn when the template has no tool role); consecutive turns of one role are merged."""
    out: list[dict[str, Any]] = []
    names = {}
    for message in messages:
        message = dict(message)
        if message["role"] == "assistant" and message.get("tool_calls"):
            blocks = []
            for call in message.pop("tool_calls"):
                names[call["id"]] = call["function"]["name"]
                blocks.append(render_tool_call(call["function"]["name"], call["function"]["arguments"]))
            message["content"] = "\n".join(filter(None, [message.get("content") or "", *blocks]))
        elif message["role"] == "tool":
            name = names.get(message.get("tool_call_id"), message.get("name") or "")
            payload = json.dumps({"name": name, "content": message.get("content", "")}, ensure_ascii=False)
            message = {"role": "tool" if tool_role else "user",
                       "content": f"<tool_response>\n{payload}\n</tool_response>"}
        if out and out[-1]["role"] == message["role"] and message["role"] in ("user", "tool"):
            out[-1] = {**out[-1], "content": out[-1]["content"] + "\n" + message["content"]}
        else:
            out.append(message)
    return out


@hookimpl
def gallama_preprocess_request(ctx):
    if ctx.endpoint != "chat":
        return
    if any(m["role"] == "tool" or m.get("tool_calls") for m in ctx.messages):
        ctx.messages = render_history(ctx.messages, _template_knows_tool_role(ctx))
    request = ctx.request
    specs = _tool_specs(request)
    mode, name = _mode(request, specs)
    if mode == "none":
        return
    chosen = [s for s in specs if s["name"] == name] if mode == "named" else specs
    # A named tool choice is one call to that tool (as OpenAI answers it); several only when the model may choose.
    parallel = request.parallel_tool_calls is not False and mode != "named"
    ctx.system_prompt_additions.append(tool_prompt(specs, mode, name))
    ctx.constraints.append(GrammarConstraint(param="tools", lark=call_grammar(chosen, parallel,
                                                                              allow_text=(mode == "auto"))))
    # what a call that max_tokens cuts is completed against (json_completion): the schema the grammar enforced
    state = {"mode": mode, "schemas": {spec["name"]: close_objects(spec["parameters"]) for spec in chosen}}
    if mode == "auto":
        state["required_grammar"] = call_grammar(chosen, parallel, allow_text=False)
    ctx.state[STATE_KEY] = state


ROUTING_QUESTION = "\n\nShould I answer directly, or use a tool? Say 'answer' or 'tool'."
ROUTING_GRAMMAR = compile_constraints([ChoiceConstraint(param="tool_choice", choices=("answer", "tool"))])


async def decide_tool_use(ctx) -> bool:
    """The routing pass of tool_choice="auto": a greedy one-word answer to 'answer or tool?' for the last
    user turn. Weak models rarely start a tool call on their own; asked directly, they choose well enough,
    and the call that follows is still fully constrained."""
    messages = [dict(m) for m in ctx.messages]
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None:
        return False
    messages[last_user]["content"] = (messages[last_user].get("content") or "") + ROUTING_QUESTION
    request = GenerationRequest(prompt=render_chat_prompt(ctx, messages), max_tokens=4,
                                sampling=SamplingParams(temperature=0.0), grammar=ROUTING_GRAMMAR,
                                request_id=ctx.request_id + "-route")
    chunks = ctx.backend.generate(request)
    try:
        text = "".join([chunk.text async for chunk in chunks])
    finally:
        await chunks.aclose()
    return text.strip().startswith("tool")


@hookimpl
def gallama_generate(ctx, request):
    state = ctx.state.get(STATE_KEY)
    if not state or state["mode"] != "auto":
        return None

    async def routed():
        if await decide_tool_use(ctx):
            request.grammar = state["required_grammar"]
        chunks = ctx.backend.generate(request)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

    return routed()


@hookimpl
def gallama_postprocess_stream(ctx):
    if STATE_KEY not in ctx.state:
        return None

    async def parse_tool_calls(events):
        parser, guard = ToolCallParser(), RepeatGuard()
        pieces = 0  # backend chunks with text: the completion's tokens, if the answer is cut short here
        try:
            async for event in events:
                pieces += bool(event.content)
                content, deltas = parser.feed(event.content)
                deltas, repeated = guard.filter(deltas, parser)
                if repeated:  # a copy of the previous call: the answer ends before it
                    event.content, event.tool_calls = content, deltas or None
                    event.finish_reason = "tool_calls"
                    event.completion_tokens = event.completion_tokens or pieces
                    yield event
                    return
                if event.finish_reason:
                    more_content, more = parser.finish()
                    if event.finish_reason == "length":  # cut inside a call: end its arguments validly
                        more += parser.complete_cut_call(ctx.state[STATE_KEY]["schemas"])
                    more, _ = guard.filter(more, parser)
                    content, deltas = content + more_content, deltas + more + guard.flush()
                    if parser.calls and event.finish_reason == "stop":
                        event.finish_reason = "tool_calls"
                event.content = content
                event.tool_calls = deltas or None
                yield event
        finally:
            await events.aclose()  # also ends the generation when the answer was cut short

    return parse_tool_calls
