"""Hook implementations of gallama-thinking.

Two features:

- **XML thinking templates** (``thinking_template``): a two-pass generation. Pass 1 fills the template,
  forced by a grammar built from the template's element structure (it starts with the root tag and ends
  at its closing tag); pass 2 writes the answer with the filled template in context (same prompt, the
  thinking appended to the assistant turn). ``return_thinking`` decides what the client sees.
- **Native ``<think>`` models**: an answer that starts with ``<think>`` (or a prompt whose chat template
  already opened it) has its reasoning moved into ``reasoning_content``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, AsyncIterator, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gallama_core import hookimpl
from gallama_core.models.backend import GenerationChunk, GenerationRequest
from gallama_core.errors import InvalidRequestError
from gallama_core.plugin_system.registrations import ConfigSection, RequestField
from gallama_core.pipeline.stream_events import StreamEvent

from .splitter import REASONING, ReasoningSplitter
from .templates import (BUILTIN_TEMPLATES, TemplateError, ThinkingTemplate, close_open_tags, parse_template,
                        thinking_instruction)

SECTION = "thinking"
STATE_KEY = "gallama_thinking"

Mode = Literal["hidden", "inline", "separate", "reasoning"]


class ThinkingConfig(BaseModel):
    """The ``thinking`` section of ``gallama.yaml``."""

    model_config = ConfigDict(extra="forbid")

    templates: dict[str, str] = Field(default_factory=dict, description=(
        "Named thinking templates (name -> XML); requests pick one with thinking_template: NAME. "
        "They add to (or replace) the built-in ones: " + ", ".join(sorted(BUILTIN_TEMPLATES)) + "."))
    max_thinking_tokens: int = Field(1024, ge=1, description="Token budget of the thinking pass.")
    max_element_tokens: int | None = Field(128, ge=1, description=(
        "Token cap of the text of each leaf element of a template (null: no cap)."))
    split_native_thinking: bool = Field(True, description=(
        "Move <think>...</think> reasoning of models that think natively into reasoning_content."))
    native_open_tag: str = Field("<think>", min_length=1)
    native_close_tag: str = Field("</think>", min_length=1)

    @field_validator("templates")
    @classmethod
    def _templates_are_valid(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            try:
                parse_template(text)
            except TemplateError as exc:
                raise ValueError(f"template {name!r}: {exc}") from None
        return value

    def library(self) -> dict[str, str]:
        return {**BUILTIN_TEMPLATES, **self.templates}


# The request hooks receive only the request context; the server's validated config section reaches the
# plugin through gallama_routes(app_state), called once when the app is built.
_config = ThinkingConfig()


@dataclass
class TemplatePlan:
    template: ThinkingTemplate
    mode: Mode
    max_thinking_tokens: int
    answer_prefix: str = ""
    prefix_in_output: bool = True


@dataclass
class NativePlan:
    mode: Mode
    open_tag: str
    close_tag: str


# ------------------------------------------------------------------------------------------ registration


@hookimpl
def gallama_config_sections():
    return [ConfigSection(name=SECTION, model=ThinkingConfig)]


@hookimpl
def gallama_request_fields():
    return [
        RequestField("thinking_template", "XML template the model fills before answering, or the name of "
                                          "one in the thinking template library"),
        RequestField("return_thinking", 'false (default): hide the thinking; true: prepend it to the content; '
                                        '"separate": message.thinking and reasoning_content'),
    ]


@hookimpl
def gallama_routes(app_state):
    global _config
    config = app_state.plugin_config.get(SECTION)
    _config = config if isinstance(config, ThinkingConfig) else ThinkingConfig()
    return []


# ----------------------------------------------------------------------------------------- per request


def _return_mode(value: Any, *, template: bool) -> Mode | None:
    """The ``return_thinking`` value as a mode (None when the field was not sent)."""
    if value is None:
        return None
    if value is False or (isinstance(value, str) and value.lower() == "false"):
        return "hidden"
    if value is True or (isinstance(value, str) and value.lower() == "true"):
        return "inline"
    if isinstance(value, str) and value.lower() == "separate":
        return "separate"
    raise InvalidRequestError(f'return_thinking: expected false, true or "separate", got {value!r}',
                              param="return_thinking")


def resolve_template(value: Any, config: ThinkingConfig) -> ThinkingTemplate:
    if not isinstance(value, str):
        raise InvalidRequestError("thinking_template: expected an XML string or a template name",
                                  param="thinking_template")
    library = config.library()
    text = library.get(value.strip(), value) if "<" not in value else value
    if "<" not in text:
        raise InvalidRequestError(f"thinking_template: no template named {value.strip()!r} in the library "
                                  f"(known: {', '.join(sorted(library))}); or send the XML template itself",
                                  param="thinking_template")
    try:
        return parse_template(text, config.max_element_tokens)
    except TemplateError as exc:
        raise InvalidRequestError(f"thinking_template: {exc}", param="thinking_template") from None


@hookimpl(trylast=True)  # after the other preprocessors: it takes over whatever answer prefix they set
def gallama_preprocess_request(ctx):
    extra = ctx.request.model_extra or {}
    template_value = extra.get("thinking_template")
    mode = _return_mode(extra.get("return_thinking"), template=template_value is not None)
    config = _config
    if template_value is None:
        if ctx.endpoint == "chat" and config.split_native_thinking and mode != "inline":
            ctx.state[STATE_KEY] = NativePlan(mode=mode or "reasoning", open_tag=config.native_open_tag,
                                              close_tag=config.native_close_tag)
        return
    if ctx.endpoint != "chat":
        raise InvalidRequestError("thinking_template works with /v1/chat/completions only",
                                  param="thinking_template")
    if extra.get("artifact") not in (None, False):
        raise InvalidRequestError("thinking_template cannot be combined with artifact in one request",
                                  param="thinking_template")
    template = resolve_template(template_value, config)
    ctx.system_prompt_additions.append(thinking_instruction(template))
    plan = TemplatePlan(template=template, mode=mode or "hidden", max_thinking_tokens=config.max_thinking_tokens,
                        answer_prefix=ctx.assistant_prefix, prefix_in_output=ctx.prefix_in_output)
    # The answer prefix (e.g. leading_prompt) belongs after the thinking: the two-pass generator adds it.
    ctx.assistant_prefix = ""
    ctx.state[STATE_KEY] = plan


#: The default grammar of the answer pass: some text that does not start with a tag (a plain regex: cheap
#: to enforce). Stop strings on the template's root tag keep a small model from writing the template again.
ANSWER_GRAMMAR = "start: ANSWER\nANSWER: /[ \\t\\r\\n]*[^<\\s](?s:.*)/\n"


@hookimpl
def gallama_generate(ctx, request: GenerationRequest):
    plan = ctx.state.get(STATE_KEY)
    if not isinstance(plan, TemplatePlan):
        return None
    return _two_pass(ctx, plan, request)


async def _two_pass(ctx, plan: TemplatePlan, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
    template = plan.template
    think_request = GenerationRequest(prompt=request.prompt, max_tokens=plan.max_thinking_tokens,
                                      sampling=request.sampling, grammar=template.grammar,
                                      request_id=f"{request.request_id}-think")
    thinking = ""
    chunks = ctx.backend.generate(think_request)
    try:
        async for chunk in chunks:
            thinking += chunk.text
            # The thinking pass never finishes the choice; its token counts still add up in usage.
            yield dataclasses.replace(chunk, finish_reason=None)
    finally:
        await chunks.aclose()
    # Cut by the token budget: close what is open so the thinking stays well-formed XML.
    if not thinking.strip():
        closing = thinking = template.open_tag + template.close_tag
    else:
        closing = close_open_tags(thinking)
        thinking += closing
    if closing:
        yield GenerationChunk(text=closing)
    if plan.answer_prefix and plan.prefix_in_output:
        yield GenerationChunk(text=plan.answer_prefix)
    answer_request = dataclasses.replace(
        request, prompt=request.prompt + thinking + "\n" + plan.answer_prefix,
        grammar=request.grammar if request.grammar is not None else ANSWER_GRAMMAR,
        stop=[*request.stop, template.open_tag[:-1], template.close_tag[:-1]])
    chunks = ctx.backend.generate(answer_request)
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        await chunks.aclose()


@hookimpl
def gallama_postprocess_stream(ctx):
    plan = ctx.state.get(STATE_KEY)
    if isinstance(plan, TemplatePlan):
        def splitter() -> ReasoningSplitter:
            return ReasoningSplitter(plan.template.open_tag, plan.template.close_tag, keep_tags=True)
    elif isinstance(plan, NativePlan):
        started = (ctx.prompt or "").rstrip().endswith(plan.open_tag)

        def splitter() -> ReasoningSplitter:
            return ReasoningSplitter(plan.open_tag, plan.close_tag, started=started)
    else:
        return None

    def process(events: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
        return split_events(events, splitter(), plan.mode, streaming=bool(ctx.request.stream))

    return process


async def split_events(events: AsyncIterator[StreamEvent], splitter: ReasoningSplitter, mode: Mode,
                       streaming: bool) -> AsyncIterator[StreamEvent]:
    """Move the thinking out of ``content`` according to ``mode``:

    hidden: dropped; inline: kept at the start of the content (a blank line before the answer);
    reasoning: ``reasoning_content``; separate: ``reasoning_content`` and, in a non-streamed response,
    ``message.thinking``.
    """
    thinking: list[str] = []
    separated = False
    thinking_sent = False
    try:
        async for event in events:
            pieces = splitter.feed(event.content) if event.content else []
            if event.finish_reason:
                pieces += splitter.flush()
            reasoning, content = [], []
            for kind, text in pieces:
                if kind == REASONING:
                    thinking.append(text)
                    if mode == "inline":
                        content.append(text)
                    elif mode in ("separate", "reasoning"):
                        reasoning.append(text)
                else:
                    if mode == "inline" and thinking and not separated:
                        content.append("\n\n")
                        separated = True
                    content.append(text)
            extra = event.extra
            if (mode == "separate" and not streaming and not thinking_sent and thinking
                    and (splitter.finished_reasoning or event.finish_reason)):
                extra = {**extra, "thinking": "".join(thinking)}
                thinking_sent = True
            yield dataclasses.replace(event, content="".join(content),
                                      reasoning=event.reasoning + "".join(reasoning), extra=extra)
        rest = splitter.flush()
        if rest:
            yield StreamEvent(content="".join(t for k, t in rest if k != REASONING or mode == "inline"),
                              reasoning="".join(t for k, t in rest if k == REASONING and mode != "inline"
                                                and mode != "hidden"))
    finally:
        await events.aclose()
