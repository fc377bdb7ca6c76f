"""Anthropic Messages wire models (pydantic only).

Requests keep unknown top-level fields: gallama's own request fields (``regex_pattern``, ``thinking_template``,
``response_format``...) pass through to the chat pipeline, which rejects the ones no plugin registered.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gallama_core.api.protocol import MAX_REQUEST_TOKENS, joined_text


class _Block(BaseModel):
    model_config = ConfigDict(extra="ignore")  # cache_control, citations...: accepted, no effect here


class TextBlock(_Block):
    type: Literal["text"]
    text: str


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock] | None = None
    is_error: bool | None = None

    @property
    def text(self) -> str:
        return joined_text(self.content)

    @field_validator("content", mode="before")
    @classmethod
    def _only_text(cls, value):
        _check_blocks(value, "tool_result content", ("text",))
        return value


class ThinkingBlock(_Block):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Block):
    type: Literal["redacted_thinking"]
    data: str


UNSUPPORTED_BLOCKS = {"image": "images", "document": "documents", "search_result": "search results",
                      "server_tool_use": "server tools", "web_search_tool_result": "server tools",
                      "container_upload": "containers"}


def _check_blocks(value: Any, where: str, allowed: tuple[str, ...]) -> None:
    """A clear message for content gallama cannot take (before pydantic's union errors)."""
    if isinstance(value, list):
        for block in value:
            kind = block.get("type") if isinstance(block, dict) else None
            if isinstance(kind, str) and kind in UNSUPPORTED_BLOCKS:  # a non-string type is an unknown one, below
                raise ValueError(f"{where}: {UNSUPPORTED_BLOCKS[kind]} are not supported by gallama (text models)")
            if isinstance(block, dict) and kind not in allowed:
                raise ValueError(f"{where}: unknown content block type {kind!r} (expected one of {', '.join(allowed)})")


ContentBlock = Union[TextBlock, ToolUseBlock, ToolResultBlock, ThinkingBlock, RedactedThinkingBlock]


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock] = Field(union_mode="left_to_right")

    @field_validator("content", mode="before")
    @classmethod
    def _supported_blocks(cls, value):
        _check_blocks(value, "content", ("text", "tool_use", "tool_result", "thinking", "redacted_thinking"))
        return value


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="ignore")  # cache_control

    type: Literal["custom"] | None = None
    name: str = Field(pattern=r"^[a-zA-Z0-9_\-]{1,128}$")
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoice(BaseModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingConfig(BaseModel):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=1, le=MAX_REQUEST_TOKENS)


class OutputFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(BaseModel):
    """Structured output: the answer is JSON valid for ``format.schema`` (enforced by a grammar)."""

    model_config = ConfigDict(extra="ignore")  # effort: no effect here

    format: OutputFormat | None = None


class Metadata(BaseModel):
    user_id: str | None = None


class CountTokensRequest(BaseModel):
    """``POST /v1/messages/count_tokens``: the conversation part of a message request."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model: str
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None

    @field_validator("tools", mode="before")
    @classmethod
    def _custom_tools_only(cls, value):
        for tool in value if isinstance(value, list) else []:
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind not in (None, "custom"):
                raise ValueError(f"server tools ({kind!r}) are not supported by gallama: give client tools "
                                 "with 'name', 'description' and 'input_schema'")
        return value


class MessagesRequest(CountTokensRequest):
    """``POST /v1/messages``."""

    max_tokens: int = Field(ge=1, le=MAX_REQUEST_TOKENS)
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0, le=1 << 20)
    metadata: Metadata | None = None
    service_tier: str | None = None
    output_config: OutputConfig | None = None
    # accepted, no effect on a local model
    cache_control: dict[str, Any] | None = None
    diagnostics: dict[str, Any] | None = None
    inference_geo: str | None = None
    speed: str | None = None
    user_profile_id: str | None = None
    workspace_id: str | None = None
