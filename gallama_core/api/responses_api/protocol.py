"""OpenAI Responses wire models for requests (pydantic only); answers are built as plain dicts in
:mod:`gallama_core.api.responses_api.translate`.

Unknown top-level fields pass through to the chat pipeline as gallama's own request fields (``regex_pattern``,
``thinking_template``...), which rejects the ones no plugin registered. Fields of the Responses API that change
nothing for a local model (``include``, ``truncation``, ``prompt_cache_key``...) are accepted and ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gallama_core.api.protocol import MAX_REQUEST_TOKENS, joined_text


class InputText(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["input_text", "output_text", "text", "summary_text", "reasoning_text"]
    text: str


UNSUPPORTED_PARTS = {"input_image": "images", "input_file": "files", "input_audio": "audio"}


def _text_parts_only(value: Any, where: str) -> Any:
    if isinstance(value, list):
        for part in value:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in UNSUPPORTED_PARTS:
                raise ValueError(f"{where}: {UNSUPPORTED_PARTS[kind]} are not supported by gallama (text models)")
    return value


class MessageItem(BaseModel):
    model_config = ConfigDict(extra="ignore")  # id, status

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputText]

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value):
        return _text_parts_only(value, "content")

    @property
    def text(self) -> str:
        return joined_text(self.content)


class FunctionCallItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class FunctionCallOutputItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call_output"]
    call_id: str
    output: str | list[InputText]

    @field_validator("output", mode="before")
    @classmethod
    def _text_only(cls, value):
        return _text_parts_only(value, "output")

    @property
    def text(self) -> str:
        return joined_text(self.output)


class ReasoningItem(BaseModel):
    """Reasoning from an earlier answer: accepted in the input and not shown to the model again."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["reasoning"]


InputItem = Union[MessageItem, FunctionCallItem, FunctionCallOutputItem, ReasoningItem]
KNOWN_ITEMS = ("message", "function_call", "function_call_output", "reasoning")


class FunctionTool(BaseModel):
    type: Literal["function"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_.\-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(BaseModel):
    type: Literal["function"]
    name: str


class TextFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_given(self):
        if self.type == "json_schema" and self.schema_ is None:
            raise ValueError("a text.format of type 'json_schema' needs a 'schema'")
        return self


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")  # verbosity

    format: TextFormat | None = None


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model: str
    input: str | list[Annotated[InputItem, Field(discriminator="type")]]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(None, ge=1, le=MAX_REQUEST_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = None
    background: bool | None = None
    metadata: dict[str, str] | None = None
    # accepted, no effect on a local model
    reasoning: dict[str, Any] | None = None
    user: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[str] | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None
    stream_options: dict[str, Any] | None = None
    max_tool_calls: int | None = Field(None, ge=1)
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @field_validator("input", mode="before")
    @classmethod
    def _typed_items(cls, value):
        if not isinstance(value, list):
            return value
        items = []
        for i, item in enumerate(value):
            if isinstance(item, dict) and "type" not in item and "role" in item:
                item = {**item, "type": "message"}  # EasyInputMessage
            kind = item.get("type") if isinstance(item, dict) else None
            if kind not in KNOWN_ITEMS:
                raise ValueError(f"input[{i}]: items of type {kind!r} are not supported by gallama "
                                 f"(supported: {', '.join(KNOWN_ITEMS)})")
            if kind == "message":
                _text_parts_only(item.get("content"), f"input[{i}].content")
            items.append(item)
        return items

    @field_validator("tools", mode="before")
    @classmethod
    def _function_tools_only(cls, value):
        for tool in value if isinstance(value, list) else []:
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                raise ValueError(f"tools of type {kind!r} are not supported by gallama: give function tools")
        return value

    @model_validator(mode="after")
    def _unsupported(self):
        if self.background:
            raise ValueError("background responses are not supported by gallama")
        if self.top_logprobs:
            raise ValueError("top_logprobs is not supported on /v1/responses yet (use /v1/chat/completions)")
        return self
