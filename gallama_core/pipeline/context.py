"""The per-request state that request hooks read and change."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from gallama_core.models.backend import GenerationRequest, SamplingParams
from gallama_core.pipeline.constraints import Constraint

if TYPE_CHECKING:
    from gallama_core.models.backend import Backend
    from gallama_core.api.protocol import ChatCompletionRequest, CompletionRequest


@dataclass
class RequestContext:
    """Everything about one request, from parsing to the last chunk.

    Preprocess hooks may change ``messages``, ``system_prompt_additions``, ``assistant_prefix``,
    ``constraints``, ``stop`` and ``max_tokens``; they may keep their own data in ``state`` (keyed by plugin
    name). ``assistant_prefix`` is text the answer is forced to start with: it is appended to the rendered
    prompt and, when ``prefix_in_output`` is true, returned as the start of the content.
    """

    endpoint: Literal["chat", "completion"]
    request: "ChatCompletionRequest | CompletionRequest"
    backend: "Backend"
    request_id: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    prompt: str | None = None
    system_prompt_additions: list[str] = field(default_factory=list)
    assistant_prefix: str = ""
    prefix_in_output: bool = True
    constraints: list[Constraint] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    max_tokens: int | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    tools_in_template: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    #: Extra fields for the role chunk that opens a streamed chat response (e.g. ``artifact_meta``).
    first_delta_extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.backend.model_name

    def generation_request(self, grammar: str | None, choice_index: int = 0) -> GenerationRequest:
        sampling = self.sampling
        if choice_index and sampling.seed is not None:
            sampling = SamplingParams(**{**sampling.__dict__, "seed": sampling.seed + choice_index})
        return GenerationRequest(prompt=self.prompt or "", max_tokens=self.max_tokens, sampling=sampling,
                                 stop=list(self.stop), grammar=grammar, request_id=f"{self.request_id}-{choice_index}",
                                 logprobs=self.request.logprobs_wanted)
