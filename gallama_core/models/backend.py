"""What a backend plugin implements: load a model, generate text from a rendered prompt, close.

The core renders chat templates, compiles constraints and shapes OpenAI responses; a backend only turns a
:class:`GenerationRequest` into :class:`GenerationChunk` pieces. Everything per token happens in the
backend's own loop, never in hooks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, ClassVar, Literal

from gallama_core.pipeline.chat_template import ChatTemplate

FinishReason = Literal["stop", "length"]


@dataclass
class SamplingParams:
    """Sampling settings mapped from the OpenAI request (None = the engine's default)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None


@dataclass
class GenerationRequest:
    """One generation: the full prompt text and how to decode it.

    ``grammar`` is an LLGuidance Lark grammar produced by :mod:`gallama_core.pipeline.constraints` (or None for free
    decoding); every backend enforces it with the same semantics. ``stop`` strings end the generation and
    are not part of the returned text.
    """

    prompt: str
    max_tokens: int | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: list[str] = field(default_factory=list)
    grammar: str | None = None
    banned_strings: list[str] = field(default_factory=list)
    request_id: str = ""
    #: Log probabilities wanted: None = no; N = each token's and its N most likely alternatives'.
    logprobs: int | None = None


@dataclass
class GenerationChunk:
    """A piece of generated text; the last one carries ``finish_reason`` and the token counts."""

    text: str = ""
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    #: With ``GenerationRequest.logprobs``: one entry per token of ``text``, OpenAI's chat shape
    #: ``{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}, ...]}``.
    logprobs: list[dict] | None = None


class Backend(ABC):
    """A loaded model instance. Subclasses live in backend plugins and import their engine lazily."""

    #: What the model serves: "chat" (chat + legacy completions), "embedding", "rerank".
    kind: ClassVar[str] = "chat"
    #: Async methods beyond ``generate`` that the front may call when this backend runs in an engine worker
    #: (e.g. ``("embed", "rerank")``). Their arguments and results cross a process boundary: plain data,
    #: tuples/lists/dicts and numpy arrays only.
    remote_methods: ClassVar[tuple[str, ...]] = ()
    #: Requests the engine runs at once (llama.cpp slots, ExLlama's batch size); more wait in its queue. The front
    #: admits ``concurrency + max_queue`` requests per instance (None: counted as 1).
    concurrency: int | None = None
    #: The model's control-token strings (``<|im_end|>``...). Text that clients send in messages never becomes one
    #: of them: the front breaks such sequences up before the chat template is applied.
    special_tokens: list[str] = []
    #: Whether ``generate`` honours ``GenerationRequest.logprobs`` (requests for them are a 400 otherwise).
    supports_logprobs: bool = False

    def __init__(self, backend_name: str, model_name: str, max_seq_len: int,
                 chat_template: ChatTemplate | None = None):
        self.backend_name = backend_name
        self.model_name = model_name
        self.max_seq_len = max_seq_len
        self.chat_template = chat_template

    @abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream the generation. Raise a GallamaError before the first chunk for a request that cannot
        run (e.g. the prompt exceeds the context). Closing the iterator early (client gone) must cancel
        the job and free its slot."""

    #: Optional second way to generate, for engines with their own thread: a method
    #: ``generate_into(request, target, key) -> cancel`` that starts the generation (raising, as ``generate``
    #: does, for a request that cannot run) and hands its chunks to ``target.post([(key, chunk), ...])`` on the
    #: engine's thread, once per step for all the jobs given that target, then ``(key, None)`` after the last
    #: chunk, or ``(key, error)``. ``cancel()`` stops it and frees its slot. The engine worker uses it where it
    #: exists and writes each step's message from the engine thread: the worker's event loop then runs no Python
    #: per token, which the engine thread would wait for (the GIL). :meth:`EngineLoop.start
    #: <gallama_core.models.engine_thread.EngineLoop.start>` implements it for ``iterate()``-style engines.
    generate_into: ClassVar[Callable[..., Callable[[], None]] | None] = None

    async def close(self) -> None:
        """Free the model (called on unload and shutdown)."""

    def engine_stats(self) -> dict[str, float] | None:
        """Counters of the engine's batched steps since the model loaded, for engines that step a batch of jobs
        (None otherwise): ``steps``, ``step_seconds`` (time inside the engine's step), ``job_steps`` (jobs
        advanced, summed over steps: ``job_steps / steps`` is the mean batch), ``delivery_seconds`` (gallama's
        own work between two steps), ``admissions`` (the times new jobs went into the engine; a burst of
        requests admitted at once counts 1), ``jobs`` and ``queue_seconds`` (jobs enqueued, and their summed wait
        for the running step's end), ``first_tokens`` and ``first_token_seconds`` (jobs that got a first token,
        and their summed time from submission to it). ``/metrics`` shows them as ``gallama_engine_*_total``.
        :meth:`EngineLoop.stats <gallama_core.models.engine_thread.EngineLoop.stats>` keeps them for
        ``iterate()``-style engines. Called often: it must only read counters."""
        return None

    def info(self) -> dict:
        """Extra facts shown in /v1/models and logs."""
        return {}
