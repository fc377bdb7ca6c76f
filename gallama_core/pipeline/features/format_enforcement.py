"""Format enforcement request fields: leading_prompt, regex_pattern, regex_prefix_pattern, response_format.

(``stop_words`` joins OpenAI's ``stop`` in :meth:`SamplingFields.stop_strings`.)
"""

from __future__ import annotations

from gallama_core import hookimpl
from gallama_core.pipeline.constraints import JsonSchemaConstraint, RegexConstraint, check_json_schema, close_objects
from gallama_core.pipeline.json_budget import RepetitionWatch, closing_reserve
from gallama_core.pipeline.json_completion import completion
from gallama_core.pipeline.output_limits import cap_schema, request_limits

STATE_KEY = "format_enforcement"


@hookimpl
def gallama_preprocess_request(ctx):
    request = ctx.request
    if request.leading_prompt:
        ctx.assistant_prefix += request.leading_prompt
    schema = _json_schema(request)
    if schema is not None:
        if request.response_format.type == "json_schema" and isinstance(request.response_format.json_schema.schema_, dict):
            check_json_schema(request.response_format.json_schema.schema_, "response_format.json_schema.schema")
        limits = request_limits(request)
        state = ctx.state[STATE_KEY] = {"schema": cap_schema(schema, limits), "limits": limits}
        if not ctx.assistant_prefix and ctx.max_tokens:
            # keep back the tokens of the text that ends a JSON value the budget cuts, so it fits in the budget
            state["reserve"] = closing_reserve([state["schema"]], ctx.max_tokens)
            ctx.max_tokens = max(1, ctx.max_tokens - state["reserve"])


def _json_schema(request) -> dict | None:
    response_format = getattr(request, "response_format", None)
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return {"type": "object"}
    schema = response_format.json_schema.schema_
    return close_objects(schema) if isinstance(schema, dict) else {}


@hookimpl
def gallama_postprocess_stream(ctx):
    """A JSON answer (``response_format``) that ``max_tokens`` cut is ended validly for its schema: the text that
    closes it is appended to the last event (``finish_reason`` stays ``length``). A string value that repeats
    itself is closed the same way, there, and the answer ends with ``stop``."""
    state = ctx.state.get(STATE_KEY)
    if state is None or ctx.assistant_prefix:  # (tools with response_format are refused before this)
        return None
    schema = state["schema"]

    async def finish_cut_json(events):
        text = []
        watch = RepetitionWatch() if state["limits"].stop_repetition else None
        pieces = 0
        try:
            async for event in events:
                text.append(event.content)
                pieces += bool(event.content)
                looping = watch is not None and watch.feed(event.content) and not event.finish_reason
                if looping:
                    event.finish_reason = "stop"
                    event.completion_tokens = event.completion_tokens or pieces
                if event.finish_reason == "length" or looping:
                    tail = completion("".join(text), schema)
                    if tail:
                        event.content += tail
                yield event
                if looping:
                    return
        finally:
            await events.aclose()

    return finish_cut_json


@hookimpl
def gallama_token_filters(ctx):
    request = ctx.request
    constraints = []
    if request.regex_pattern:
        constraints.append(RegexConstraint(param="regex_pattern", pattern=request.regex_pattern))
    if request.regex_prefix_pattern:
        constraints.append(RegexConstraint(param="regex_prefix_pattern", pattern=request.regex_prefix_pattern,
                                           prefix_only=True))
    response_format = getattr(request, "response_format", None)
    if response_format is not None and response_format.type == "json_object":
        constraints.append(JsonSchemaConstraint(param="response_format", schema={"type": "object"}))
    elif response_format is not None and response_format.type == "json_schema":
        schema = response_format.json_schema.schema_
        if isinstance(schema, dict):
            check_json_schema(schema, "response_format.json_schema.schema")  # the request's own, before the caps
            # the schema a cut answer is completed against: objects closed (as OpenAI's strict mode), default caps
            schema = ctx.state[STATE_KEY]["schema"]
        constraints.append(JsonSchemaConstraint(param="response_format.json_schema.schema",
                                                schema=schema if schema is not None else {}))
    return constraints
