"""Format enforcement request fields: leading_prompt, regex_pattern, regex_prefix_pattern, response_format.

(``stop_words`` joins OpenAI's ``stop`` in :meth:`SamplingFields.stop_strings`.)
"""

from __future__ import annotations

from gallama_core import hookimpl
from gallama_core.pipeline.constraints import JsonSchemaConstraint, RegexConstraint


@hookimpl
def gallama_preprocess_request(ctx):
    request = ctx.request
    if request.leading_prompt:
        ctx.assistant_prefix += request.leading_prompt


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
