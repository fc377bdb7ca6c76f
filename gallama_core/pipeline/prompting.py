"""Turning a request context's messages into the prompt text the backend sees."""

from __future__ import annotations

from typing import Any

from gallama_core.pipeline.context import RequestContext
from gallama_core.errors import InvalidRequestError


ZERO_WIDTH_SPACE = "\u200b"


def neutralize_special_tokens(text: str, special_tokens: list[str]) -> str:
    """``text`` with every occurrence of a control-token string broken by a zero-width space after its first
    character (``<|im_end|>`` -> ``<\u200b|im_end|>``): a client cannot close its turn and forge a system message
    by typing the model's special tokens. The text reads the same; it tokenizes as ordinary text."""
    for token in special_tokens:
        if token and token in text:
            text = text.replace(token, token[0] + ZERO_WIDTH_SPACE + token[1:])
    return text


def chat_messages(ctx: RequestContext, messages: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The messages with the plugins' system prompt additions merged in and 'developer' read as 'system'."""
    messages = [dict(m) for m in (ctx.messages if messages is None else messages)]
    if ctx.system_prompt_additions:
        addition = "\n\n".join(ctx.system_prompt_additions)
        if messages and messages[0]["role"] in ("system", "developer"):
            messages[0]["content"] = f"{messages[0]['content']}\n\n{addition}".strip()
        else:
            messages.insert(0, {"role": "system", "content": addition})
    for m in messages:
        if m["role"] == "developer":
            m["role"] = "system"
    return messages


def render_chat_prompt(ctx: RequestContext, messages: list[dict[str, Any]] | None = None) -> str:
    """The chat template applied to the messages, with the generation prompt (no forced prefix)."""
    template = ctx.backend.chat_template
    if template is None:
        raise InvalidRequestError(f"model {ctx.model_name!r} has no chat template; use /v1/completions")
    tools = ctx.state.get("template_tools") if ctx.tools_in_template else None
    return template.render(chat_messages(ctx, messages), add_generation_prompt=True, tools=tools)
