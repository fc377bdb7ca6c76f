"""Function calling for any model: ``tools``, ``tool_choice``, ``parallel_tool_calls``.

The tools are described in the system prompt in gallama's tool-call format (see :mod:`gallama_core.pipeline.tool_calls`)
and the answer is generated under a grammar: with ``required`` or a named tool every answer is one or more
calls whose arguments validate against the tool's schema; with ``auto`` the model may instead answer in text,
and when it calls, the call is constrained the same way. History messages with ``tool_calls`` and ``tool``
results are rendered in the same format for every model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from gallama_core import hookimpl
from gallama_core.models.backend import GenerationRequest, SamplingParams
from gallama_core.pipeline.constraints import ChoiceConstraint, compile_constraints, GrammarConstraint, check_json_schema, close_objects, grammar_problem, json_lark
from gallama_core.errors import InvalidRequestError
from gallama_core.pipeline.json_budget import RepetitionWatch, closing_reserve
from gallama_core.pipeline.output_limits import FIELD as LIMITS_FIELD, SECTION as LIMITS_SECTION, OutputLimits, \
    cap_schema, configure as configure_limits, request_limits
from gallama_core.pipeline.prompting import render_chat_prompt
from gallama_core.pipeline.tool_calls import RepeatGuard, ToolCallParser, call_grammar, render_tool_call, tool_prompt
from gallama_core.plugin_system.registrations import ConfigSection, RequestField

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
    routing = routing_question(ctx.messages)  # read before the history is rendered (tool turns may become user's)
    if any(m["role"] == "tool" or m.get("tool_calls") for m in ctx.messages):
        ctx.messages = render_history(ctx.messages, _template_knows_tool_role(ctx))
    request = ctx.request
    specs = _tool_specs(request)
    mode, name = _mode(request, specs)
    if mode == "none":
        return
    chosen = [s for s in specs if s["name"] == name] if mode == "named" else specs
    limits = request_limits(request)
    # A named tool choice is one call to that tool (as OpenAI answers it); several only when the model may choose.
    parallel = request.parallel_tool_calls is not False and mode != "named"
    ctx.system_prompt_additions.append(tool_prompt(specs, mode, name))
    # the schema the grammar enforces (default caps on unbounded strings and arrays), which a call that the
    # budget cuts is also completed against (json_completion)
    schemas = {spec["name"]: cap_schema(close_objects(spec["parameters"]), limits) for spec in chosen}
    grammar = lambda allow_text: call_grammar(chosen, parallel, allow_text, limits.max_tool_calls, schemas)  # noqa: E731
    ctx.constraints.append(GrammarConstraint(param="tools", lark=grammar(mode == "auto")))
    state = {"mode": mode, "schemas": schemas, "limits": limits,
             "all_schemas": {spec["name"]: close_objects(spec["parameters"]) for spec in specs},
             # tokens kept back from sampling for the text that ends a call the budget cuts
             "reserve": closing_reserve(schemas.values(), ctx.max_tokens), "routing": routing}
    if mode == "auto":
        state["required_grammar"] = grammar(False)
    ctx.state[STATE_KEY] = state


@dataclass(frozen=True)
class RoutingQuestion:
    """What the routing pass asks: ``question`` is appended to the conversation's last turn, the answer is
    constrained to one of ``choices``, and ``tool_word`` is the choice that means "call a tool".
    (benchmarks/bench_tool_routing.py compares these questions with others on each category of cases.)"""

    question: str
    choices: tuple[str, ...]
    tool_word: str

    def calls(self, answer: str) -> bool:
        return answer.strip() == self.tool_word

    @cached_property
    def grammar(self) -> str:
        return compile_constraints([ChoiceConstraint(param="tool_choice", choices=self.choices)])


#: Asked after a user's turn. Measured with benchmarks/bench_tool_routing.py (docs/performance.md): with the tool
#: named first, SmolLM2 took the right decision on every prompt that needed a call (50% when "answer" came first)
#: and abstained on 40% of those that needed none (50%): a weak model leans to the option it reads first, and a
#: missed call costs an agent more than an unneeded one.
ROUTING = RoutingQuestion("\n\nShould I use a tool, or answer directly? Say 'tool' or 'answer'.", ("tool", "answer"),
                          "tool")
#: Asked when the last turn holds tool results (an agent's loop: call, result, then the answer). Measured with
#: ``bench_tool_routing.py --followup`` (docs/performance.md): SmolLM2 cannot tell results that answer the question
#: from results that leave a call to make (every question's figures follow the option it reads first); this one
#: led to the answer on every case where the results sufficed, where the first question led to the same call
#: again, until the agent's turn limit or the context ran out.
FOLLOW_UP = RoutingQuestion("\n\nAre these results enough to answer my question? Answer yes or no.", ("yes", "no"),
                            "no")


def routing_question(messages: list[dict[str, Any]]) -> RoutingQuestion:
    """The follow-up question when the conversation ends with tool results, else the first one."""
    return FOLLOW_UP if messages and messages[-1]["role"] == "tool" else ROUTING


async def decide_tool_use(ctx, question: RoutingQuestion) -> bool:
    """The routing pass of tool_choice="auto": a greedy one-word answer to ``question``, appended to the
    conversation's last user or tool turn. Weak models rarely start a tool call on their own; asked directly,
    they choose well enough, and the call that follows is still fully constrained."""
    messages = [dict(m) for m in ctx.messages]
    last = max((i for i, m in enumerate(messages) if m["role"] in ("user", "tool")), default=None)
    if last is None:
        return False
    messages[last]["content"] = (messages[last].get("content") or "") + question.question
    request = GenerationRequest(prompt=render_chat_prompt(ctx, messages), max_tokens=4,
                                sampling=SamplingParams(temperature=0.0), grammar=question.grammar,
                                request_id=ctx.request_id + "-route")
    chunks = ctx.backend.generate(request)
    try:
        text = "".join([chunk.text async for chunk in chunks])
    finally:
        await chunks.aclose()
    return question.calls(text)


def _keep_back_reserve(request, state) -> None:
    """Sample ``reserve`` fewer tokens than the budget, so the text that ends a cut call still fits in it."""
    if request.max_tokens and state["reserve"]:
        request.max_tokens = max(1, request.max_tokens - state["reserve"])
        state["reserved"] = True


@hookimpl
def gallama_generate(ctx, request):
    state = ctx.state.get(STATE_KEY)
    if not state:
        return None
    if state["mode"] != "auto":
        _keep_back_reserve(request, state)
        return None  # the default generation runs it

    async def routed():
        if await decide_tool_use(ctx, state["routing"]):
            request.grammar = state["required_grammar"]
            _keep_back_reserve(request, state)
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
    state = ctx.state[STATE_KEY]

    async def parse_tool_calls(events):
        parser, guard = ToolCallParser(), RepeatGuard()
        if state["mode"] == "auto":  # a call written as bare JSON in the text answer becomes a call
            parser.bare_json = state["all_schemas"]
        watch = RepetitionWatch() if state["limits"].stop_repetition else None
        pieces = 0  # backend chunks with text: the completion's tokens, if the answer is cut short here
        try:
            async for event in events:
                pieces += bool(event.content)
                content, deltas = parser.feed(event.content)
                if watch is not None:
                    for delta in deltas:
                        if delta.id is not None:
                            watch = RepetitionWatch()  # a new call: watch its arguments
                        watch.feed(delta.function.arguments or "")
                deltas, repeated = guard.filter(deltas, parser)
                if repeated:  # a copy of the previous call: the answer ends before it
                    event.content, event.tool_calls = content, deltas or None
                    event.finish_reason = "tool_calls"
                    event.completion_tokens = event.completion_tokens or pieces
                    yield event
                    return
                looping = watch is not None and watch.repeating and parser.mode == "calls" and not event.finish_reason
                if looping:  # a string value that repeats itself: end the call there
                    event.finish_reason = "tool_calls"
                    event.completion_tokens = event.completion_tokens or pieces
                if event.finish_reason:
                    more_content, more = parser.finish()
                    if event.finish_reason == "length" or looping:  # cut inside a call: end its arguments validly
                        more += parser.complete_cut_call(state["schemas"])
                    more, _ = guard.filter(more, parser)
                    content, deltas = content + more_content, deltas + more + guard.flush()
                    if parser.calls and event.finish_reason == "stop":
                        event.finish_reason = "tool_calls"
                event.content = content
                event.tool_calls = deltas or None
                yield event
                if looping:
                    return
        finally:
            await events.aclose()  # also ends the generation when the answer was cut short

    return parse_tool_calls


# ------------------------------------------------------------------------------------------ registration


@hookimpl
def gallama_config_sections():
    return [ConfigSection(name=LIMITS_SECTION, model=OutputLimits)]


@hookimpl
def gallama_request_fields():
    return [RequestField(LIMITS_FIELD, "caps for structured output: max_string_length, max_array_items (applied "
                                       "where the schema sets none), max_tool_calls, stop_repetition")]


@hookimpl
def gallama_routes(app_state):
    configure_limits(app_state.plugin_config.get(LIMITS_SECTION))
    return []
