"""Hook implementations of gallama-artifact.

``artifact: "Fast"``: one pass. A system prompt explains the artifact format and a grammar
(:data:`~gallama_artifact.grammar.FAST_GRAMMAR`) keeps every ``<artifact ...>`` tag complete, with valid
attributes, and closed.

``artifact: "Slow"``: two passes. First a planning pass writes a JSON plan of the answer's parts (schema
enforced); then the answer is generated with the plan in the system prompt and a grammar built from the
plan, which forces exactly the planned artifacts, in order, with the planned tags.

In both modes the stream processor turns the raw text into parts: one choice per part in a response,
``delta.artifact_meta`` on every streamed chunk.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator

from pydantic import BaseModel, ConfigDict, Field

from gallama_core import hookimpl
from gallama_core.models.backend import GenerationChunk, GenerationRequest
from gallama_core.pipeline.constraints import GrammarConstraint
from gallama_core.errors import InvalidRequestError
from gallama_core.pipeline.prompting import render_chat_prompt
from gallama_core.plugin_system.registrations import ConfigSection, RequestField
from gallama_core.pipeline.stream_events import StreamEvent

from .grammar import FORMAT_PROMPT, fast_grammar, PLAN_PROMPT, plan_grammar, plan_summary, planned_grammar
from .parser import ArtifactParser, text_meta

log = logging.getLogger("gallama.artifact")

SECTION = "artifact"
STATE_KEY = "gallama_artifact"
MODES = {"fast": "Fast", "slow": "Slow"}


class ArtifactConfig(BaseModel):
    """The ``artifact`` section of ``gallama.yaml``."""

    model_config = ConfigDict(extra="forbid")

    ui: bool = Field(True, description="Serve the web UI at /artifact/.")
    max_plan_tokens: int = Field(256, ge=16, description="Token budget of Slow mode's planning pass.")
    max_planned_parts: int = Field(4, ge=1, le=32, description="Most parts a Slow mode plan may have.")
    prompt: str | None = Field(None, description="Replace the built-in format prompt (advanced).")


_config = ArtifactConfig()  # set from the server's config in gallama_routes (called once at app build)


@dataclass
class ArtifactPlan:
    mode: str  # Fast | Slow
    prompt: str
    #: the answer prefix (leading_prompt) ends inside an artifact it opened
    inside_artifact: bool = False


# ------------------------------------------------------------------------------------------ registration


@hookimpl
def gallama_config_sections():
    return [ConfigSection(name=SECTION, model=ArtifactConfig)]


@hookimpl
def gallama_request_fields():
    return [RequestField("artifact", '"Fast" or "Slow": answer as text parts and artifacts')]


@hookimpl
def gallama_routes(app_state):
    global _config
    config = app_state.plugin_config.get(SECTION)
    _config = config if isinstance(config, ArtifactConfig) else ArtifactConfig()
    if not _config.ui:
        return []
    from .web import ui_router

    return [ui_router()]


# ----------------------------------------------------------------------------------------- per request


def _mode(value: Any) -> str | None:
    if value is None or value is False or (isinstance(value, str) and value.lower() in ("no", "off", "none", "")):
        return None
    if isinstance(value, str) and value.lower() in MODES:
        return MODES[value.lower()]
    raise InvalidRequestError(f'artifact: expected "Fast" or "Slow", got {value!r}', param="artifact")


def prefix_state(prefix: str) -> str:
    """Where an answer prefix leaves the artifact format: "text", "artifact" (inside a body) or "tag"."""
    parser = ArtifactParser()
    parser.feed(prefix)
    return parser.mode


@hookimpl(trylast=True)  # after format enforcement has set the answer prefix (leading_prompt)
def gallama_preprocess_request(ctx):
    extra = ctx.request.model_extra or {}
    mode = _mode(extra.get("artifact"))
    if mode is None:
        return
    if ctx.endpoint != "chat":
        raise InvalidRequestError("artifact works with /v1/chat/completions only", param="artifact")
    if extra.get("thinking_template") is not None:
        raise InvalidRequestError("artifact cannot be combined with thinking_template in one request",
                                  param="artifact")
    if getattr(ctx.request, "tools", None) and getattr(ctx.request, "tool_choice", None) != "none":
        raise InvalidRequestError("artifact cannot be combined with tools in one request", param="artifact")
    where = prefix_state(ctx.assistant_prefix)
    if where == "tag":
        raise InvalidRequestError("leading_prompt ends inside an <artifact ...> tag; end it after the tag's '>'",
                                  param="leading_prompt")
    if mode == "Slow" and ctx.assistant_prefix:
        mode = "Fast"  # a plan cannot follow a forced start: the prefix already decides how the answer begins
    prompt = _config.prompt or FORMAT_PROMPT
    ctx.system_prompt_additions.append(prompt)
    ctx.state[STATE_KEY] = ArtifactPlan(mode=mode, prompt=prompt, inside_artifact=where == "artifact")
    if ctx.request.stream:
        # The role chunk that opens a stream carries artifact_meta too: every chunk has it.
        ctx.first_delta_extra["artifact_meta"] = text_meta()


@hookimpl
def gallama_token_filters(ctx):
    plan = ctx.state.get(STATE_KEY)
    if isinstance(plan, ArtifactPlan):
        # Slow mode replaces it with the plan's grammar; declaring it here makes conflicting user constraints
        # (regex_pattern, response_format...) a 400 in both modes.
        return [GrammarConstraint(param="artifact", lark=fast_grammar(plan.inside_artifact))]
    return []


@hookimpl
def gallama_generate(ctx, request: GenerationRequest):
    plan = ctx.state.get(STATE_KEY)
    if not isinstance(plan, ArtifactPlan) or plan.mode != "Slow":
        return None
    return _slow(ctx, request)


def _render(ctx, extra_system: list[str]) -> str:
    """The chat prompt with more system text, rendered like the core renders ``ctx.prompt``."""
    more = dataclasses.replace(ctx, system_prompt_additions=[*ctx.system_prompt_additions, *extra_system])
    return render_chat_prompt(more) + ctx.assistant_prefix


async def _slow(ctx, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
    plan_request = GenerationRequest(prompt=_render(ctx, [PLAN_PROMPT]), max_tokens=_config.max_plan_tokens,
                                     sampling=request.sampling, grammar=plan_grammar(_config.max_planned_parts),
                                     request_id=f"{request.request_id}-plan")
    text = ""
    chunks = ctx.backend.generate(plan_request)
    try:
        async for chunk in chunks:
            text += chunk.text
            if chunk.completion_tokens:  # the plan's tokens count in usage; its text is not shown
                yield GenerationChunk(completion_tokens=chunk.completion_tokens)
    finally:
        await chunks.aclose()
    try:
        parts = json.loads(text)["parts"]
    except (ValueError, KeyError, TypeError):  # cut by the token budget: answer without a plan
        log.info("artifact Slow mode: the plan was incomplete; answering in Fast mode")
        parts = None
    if parts:
        answer = dataclasses.replace(request, prompt=_render(ctx, [plan_summary(parts)]),
                                     grammar=planned_grammar(parts))
    else:
        answer = request
    chunks = ctx.backend.generate(answer)
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        await chunks.aclose()


@hookimpl
def gallama_postprocess_stream(ctx):
    if not isinstance(ctx.state.get(STATE_KEY), ArtifactPlan):
        return None
    return split_parts


async def split_parts(events: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
    """Raw text events -> one event per piece of a part, each with ``part`` and ``artifact_meta``.

    The last event with content also carries the finish reason (and the token counts seen after it), so
    no chunk of the stream is without content once the parts begin.
    """
    parser = ArtifactParser()
    held: StreamEvent | None = None
    finish: str | None = None
    prompt_tokens: int | None = None
    completion_tokens = 0

    def pieces_to_events(pieces) -> list[StreamEvent]:
        return [StreamEvent(content=p.content, part=p.part, extra={"artifact_meta": p.meta}) for p in pieces]

    try:
        async for event in events:
            new = pieces_to_events(parser.feed(event.content) if event.content else [])
            if event.finish_reason:
                new += pieces_to_events(parser.finish())
                finish = event.finish_reason
            prompt_tokens = event.prompt_tokens or prompt_tokens
            completion_tokens += event.completion_tokens or 0
            for item in new:
                if held is not None:
                    held.prompt_tokens, held.completion_tokens = prompt_tokens, completion_tokens or None
                    prompt_tokens, completion_tokens = None, 0
                    yield held
                held = item
        new = pieces_to_events(parser.finish())
        for item in new:
            if held is not None:
                yield held
            held = item
        if held is None:  # nothing at all was generated: one empty text part
            held = StreamEvent(content="", part=0, extra={"artifact_meta": text_meta()})
        held.finish_reason = finish or "stop"
        held.prompt_tokens = prompt_tokens or held.prompt_tokens
        held.completion_tokens = (held.completion_tokens or 0) + completion_tokens or None
        yield held
    finally:
        await events.aclose()
