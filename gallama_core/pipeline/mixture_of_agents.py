"""Mixture of agents: one chat request answered by several models, then combined by an aggregator model.

``extra_body={"mixture_of_agents": {"agents": ["m1", "m2"], "aggregator": "m3"}}`` sends the request (without
this field) to every agent model at once, non-streamed; then the aggregator answers the same conversation with
the agents' drafts in its system prompt. The answer is the aggregator's, streamed when the request streams;
``usage`` adds up every call. Every model is checked before anything runs (404 for a missing one).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gallama_core.api.protocol import ChatCompletionResponse, Usage
from gallama_core.errors import InvalidRequestError

if TYPE_CHECKING:
    from gallama_core.pipeline.serving import Pipeline

FIELD = "mixture_of_agents"

DEFAULT_AGGREGATOR_PROMPT = (
    "You have been given the answers of several assistants to the latest user message. Read them critically: "
    "some may be wrong or incomplete. Write one answer of your own that is accurate, complete and clear; do not "
    "mention the other assistants.\n\n{drafts}")


class MixtureOfAgents(BaseModel):
    """The ``mixture_of_agents`` request field."""

    model_config = ConfigDict(extra="forbid")

    agents: list[str] = Field(min_length=1, max_length=8, description="Models that each draft an answer.")
    aggregator: str = Field(description="The model that writes the final answer from the drafts.")
    agent_max_tokens: int | None = Field(None, ge=1, description="Token limit per draft (default: the request's).")
    aggregator_prompt: str | None = Field(
        None, description="System prompt for the aggregator; '{drafts}' marks where the drafts go.")


def parse_field(value: Any) -> MixtureOfAgents:
    try:
        spec = MixtureOfAgents.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidRequestError(f"{FIELD}{'.' + where if where else ''}: {err['msg']}", param=FIELD) from None
    if spec.aggregator_prompt is not None and "{drafts}" not in spec.aggregator_prompt:
        raise InvalidRequestError(f"{FIELD}.aggregator_prompt must contain '{{drafts}}'", param=FIELD)
    return spec


def draft_text(response: ChatCompletionResponse) -> str:
    message = response.choices[0].message
    if message.tool_calls:
        calls = [{"name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls]
        return (message.content or "") + ("\n" if message.content else "") + "Tool calls: " + json.dumps(calls)
    return message.content or ""


def aggregator_messages(messages: list[dict[str, Any]], drafts: list[tuple[str, str]],
                        prompt: str | None) -> list[dict[str, Any]]:
    """The conversation with the drafts added to its system message (or a new one first)."""
    listed = "\n\n".join(f"Answer {i} (from {name}):\n{text}" for i, (name, text) in enumerate(drafts, 1))
    addition = (prompt or DEFAULT_AGGREGATOR_PROMPT).replace("{drafts}", listed)
    messages = [dict(m) for m in messages]
    if messages and messages[0].get("role") in ("system", "developer") and isinstance(messages[0].get("content"), str):
        messages[0]["content"] = f"{messages[0]['content']}\n\n{addition}"
    else:
        messages.insert(0, {"role": "system", "content": addition})
    return messages


async def run_mixture(pipeline: "Pipeline", body: dict[str, Any]):
    """The aggregator's response (a response model, or SSE payloads when streaming) for a mixture request."""
    spec = parse_field(body.get(FIELD))
    base = {k: v for k, v in body.items() if k != FIELD}
    if not isinstance(base.get("messages"), list):
        raise InvalidRequestError("messages: field required", param="messages")
    models = pipeline.state.models
    for name in [*spec.agents, spec.aggregator]:
        models.find(name)  # 404 before anything runs
    agent_body = {**base, "stream": False, "n": 1}
    agent_body.pop("stream_options", None)
    if spec.agent_max_tokens is not None:
        agent_body.pop("max_completion_tokens", None)
        agent_body["max_tokens"] = spec.agent_max_tokens
    answers = await asyncio.gather(*[pipeline.run("chat", {**agent_body, "model": name}) for name in spec.agents])
    drafts = [(name, draft_text(answer)) for name, answer in zip(spec.agents, answers)]
    used = Usage()
    for answer in answers:
        used.prompt_tokens += answer.usage.prompt_tokens
        used.completion_tokens += answer.usage.completion_tokens
    used.total_tokens = used.prompt_tokens + used.completion_tokens
    final = {**base, "model": spec.aggregator,
             "messages": aggregator_messages(base["messages"], drafts, spec.aggregator_prompt)}
    return await pipeline.run("chat", final, usage_offset=used)
