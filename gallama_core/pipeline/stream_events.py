"""The events a generation stream carries between the backend and the HTTP response.

Stream processors (``gallama_postprocess_stream``) map events to events. The core then turns them into
OpenAI chunks (streaming) or folds them into one response: consecutive events with the same ``part`` go
into one choice; a new ``part`` value starts a new choice (artifact mode's one-choice-per-part).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gallama_core.api.protocol import ToolCallDelta


@dataclass
class StreamEvent:
    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: str | None = None
    #: Extra fields for the delta / message (e.g. ``{"artifact_meta": {...}}``).
    extra: dict[str, Any] = field(default_factory=dict)
    #: Identifies the response part this event belongs to; None = the single default part.
    part: Any = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    #: Log probabilities of the tokens behind this event's text (when the request asked for them).
    logprobs: list[dict] | None = None

    @property
    def is_empty(self) -> bool:
        return not (self.content or self.reasoning or self.tool_calls or self.finish_reason or self.extra
                    or self.logprobs)
