"""Limits on structured output (tool-call arguments, ``response_format`` JSON): the ``output_limits`` section of
``gallama.yaml`` and the ``output_limits`` request field (``extra_body``), which overrides it field by field.

    output_limits:
      max_string_length: 8192   # a JSON string whose schema sets no maxLength gets this one (null: none)
      max_array_items: 256      # an array whose schema sets no maxItems gets this one (null: none)
      max_tool_calls: 16        # calls in one answer when parallel calls are allowed
      stop_repetition: true     # a string value that repeats itself is closed there

The caps only narrow the grammar: every output still validates against the request's own schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gallama_core.errors import InvalidRequestError

SECTION = "output_limits"
FIELD = "output_limits"


class OutputLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_string_length: int | None = Field(8192, ge=1, le=1_000_000)
    max_array_items: int | None = Field(256, ge=1, le=100_000)
    max_tool_calls: int = Field(16, ge=1, le=128)
    stop_repetition: bool = True


# The request hooks receive only the request context; the server's validated section reaches them through this
# module (set when the app is built, see function_calling.gallama_routes).
_configured = OutputLimits()


def configure(section: Any) -> None:
    global _configured
    _configured = section if isinstance(section, OutputLimits) else OutputLimits()


def request_limits(request) -> OutputLimits:
    """The server's limits with the request's ``output_limits`` laid over them (400 when malformed)."""
    raw = (getattr(request, "model_extra", None) or {}).get(FIELD)
    if raw is None:
        return _configured
    if not isinstance(raw, dict):
        raise InvalidRequestError(f"{FIELD} must be an object", param=FIELD)
    try:
        return OutputLimits.model_validate({**_configured.model_dump(), **raw})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidRequestError(f"{FIELD}.{where}: {err['msg']}", param=f"{FIELD}.{where}") from None


_NOT_SCHEMA = ("enum", "const", "default", "examples", "required")


def cap_schema(schema: Any, limits: OutputLimits) -> Any:
    """A copy of ``schema`` whose strings and arrays without a bound get the configured one (strings with a
    ``pattern``, ``format``, ``enum`` or ``const`` are left alone: those bound themselves or would not compile
    with a length)."""
    if isinstance(schema, list):
        return [cap_schema(item, limits) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: (value if key in _NOT_SCHEMA else cap_schema(value, limits)) for key, value in schema.items()}
    if "properties" in schema and isinstance(schema["properties"], dict):
        out["properties"] = {name: cap_schema(value, limits) for name, value in schema["properties"].items()}
    kinds = out.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    free = not any(key in out for key in ("enum", "const", "pattern", "format"))
    if "string" in kinds and free and "maxLength" not in out and limits.max_string_length:
        out["maxLength"] = max(limits.max_string_length, int(out.get("minLength") or 0))
    if "array" in kinds and "maxItems" not in out and limits.max_array_items:
        out["maxItems"] = max(limits.max_array_items, int(out.get("minItems") or 0))
    return out
