"""Format enforcement request fields: leading_prompt, regex_pattern, regex_prefix_pattern, response_format.

(``stop_words`` joins OpenAI's ``stop`` in :meth:`SamplingFields.stop_strings`.)
"""

from __future__ import annotations

from gallama_core import hookimpl
from gallama_core.pipeline.constraints import JsonSchemaConstraint, RegexConstraint, close_objects
from gallama_core.pipeline.json_completion import completion


@hookimpl
def gallama_preprocess_request(ctx):
    request = ctx.request
    if request.leading_prompt:
        ctx.assistant_prefix += request.leading_prompt


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
    closes it is appended to the last event (``finish_reason`` stays ``length``)."""
    schema = _json_schema(ctx.request)
    if schema is None or ctx.assistant_prefix:  # (tools with response_format are refused before this)
        return None

    async def finish_cut_json(events):
        text = []
        try:
            async for event in events:
                text.append(event.content)
                if event.finish_reason == "length":
                    tail = completion("".join(text), schema)
                    if tail:
                        event.content += tail
                yield event
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
        constraints.append(JsonSchemaConstraint(param="response_format.json_schema.schema",
                                                schema=schema if schema is not None else {}))
    return constraints
