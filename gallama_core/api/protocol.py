"""OpenAI wire models (pydantic only: no FastAPI, no serving logic).

Requests keep unknown top-level fields (``extra="allow"``) so that plugin-owned fields sent through the
OpenAI client's ``extra_body`` reach the plugins; the serving layer rejects fields no plugin registered.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# --------------------------------------------------------------------------------------------- requests

#: Most tokens one request may ask for (every integer is range-checked before any engine sees it).
MAX_REQUEST_TOKENS = 1 << 24
#: Most alternatives per token in logprobs (OpenAI's limit).
MAX_TOP_LOGPROBS = 20


def joined_text(content: Any) -> str:
    """Message content as plain text: a string as it is, a list of text parts (anything with ``.text``) joined,
    none as "" (shared by the chat, Anthropic and Responses wire models)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content)


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _only_text_parts(cls, value):
        if isinstance(value, list):
            for part in value:
                if isinstance(part, dict) and part.get("type") != "text":
                    raise ValueError(f"content parts of type {part.get('type')!r} are not supported; only 'text'")
        return value

    @model_validator(mode="after")
    def _check_role_fields(self):
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a message with role 'tool' needs 'tool_call_id'")
        if self.role in ("system", "developer", "user") and self.content is None:
            raise ValueError(f"a message with role {self.role!r} needs 'content'")
        if self.role == "assistant" and self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs 'content' or 'tool_calls'")
        return self

    @property
    def text(self) -> str:
        """The content as plain text (text parts joined)."""
        return joined_text(self.content)


class FunctionDefinition(BaseModel):
    name: str = Field(pattern=r"^[a-zA-Z0-9_.\-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedToolChoiceFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"] = "function"
    function: NamedToolChoiceFunction


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type 'json_schema' needs a 'json_schema' object")
        return self


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingFields(BaseModel):
    """Fields shared by chat and legacy completion requests."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model: str
    max_tokens: int | None = Field(None, ge=1, le=MAX_REQUEST_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0, le=1 << 20)
    min_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = Field(None, ge=-(1 << 63), le=(1 << 64) - 1)
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0)
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    logit_bias: dict[str, float] | None = None

    # gallama format enforcement (extra_body)
    leading_prompt: str | None = None
    regex_pattern: str | None = None
    regex_prefix_pattern: str | None = None
    stop_words: list[str] | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value):
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _unsupported(self):
        if self.logit_bias:
            raise ValueError("logit_bias is not supported by gallama yet")
        return self

    def stop_strings(self) -> list[str]:
        words = list(self.stop or []) + list(self.stop_words or [])
        return [w for w in dict.fromkeys(words) if w]


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_REQUEST_TOKENS)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @model_validator(mode="after")
    def _top_needs_logprobs(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def logprobs_wanted(self) -> int | None:
        """Alternatives per token when log probabilities are asked for (None: not asked for)."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(SamplingFields):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS,
                                 description="Log probabilities of each token and of this many alternatives.")

    @property
    def logprobs_wanted(self) -> int | None:
        return self.logprobs

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, value):
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError("gallama accepts one prompt per request (a string or a list of one string)")
        return value

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens


# -------------------------------------------------------------------------------------------- responses


def new_id(prefix: str, separator: str = "-") -> str:
    return f"{prefix}{separator}{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ResponseMessage(BaseModel):
    """An assistant message; plugins may add fields (``artifact_meta``, ``thinking``...)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = []


class ChoiceLogprobs(BaseModel):
    """Chat ``logprobs``: one entry per generated token."""

    content: list[TokenLogprob] | None = None


class ChatChoice(BaseModel):
    index: int
    message: ResponseMessage
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ToolCallFunctionDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ToolCallFunctionDelta


class Delta(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    """Legacy completions ``logprobs``."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None = None
    text_offset: list[int]

    @classmethod
    def from_entries(cls, entries: list[dict], offset: int = 0) -> "CompletionLogprobs":
        offsets, position = [], offset
        for entry in entries:
            offsets.append(position)
            position += len(entry["token"])
        return cls(tokens=[e["token"] for e in entries], token_logprobs=[e["logprob"] for e in entries],
                   top_logprobs=[{t["token"]: t["logprob"] for t in e.get("top_logprobs") or []} for e in entries],
                   text_offset=offsets)


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None = None
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "gallama"
    backend: str | None = None
    kind: str | None = "chat"
    status: str = "ready"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ------------------------------------------------------------------------------------------ management


class AddModelRequest(BaseModel):
    """``POST /add_model``: one model entry (or a JSON list of them), keys as in ``-id``; the backend's own keys
    are accepted too. Documents the body; the server validates it with the backend's settings model."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model_id: str = Field(description="An entry of model_config.yaml, or a path inside the model folders.")
    model_name: str | None = None
    backend: str | None = None


class RemoveModelRequest(BaseModel):
    """``POST /remove_model``."""

    model_name: str
