"""The embedding backend: infinity-emb's ``AsyncEngineArray`` in-process (not its HTTP server).

``load`` runs in a worker thread: it builds the engine (model weights, warm-up) there. The engine's batching
loop must live on the server's event loop, so it is started on the first request (``_ensure_started``).
infinity batches concurrent requests together; this class adds what the OpenAI/Jina endpoints need on top:
token counts for ``usage`` and the max-length rule (a private copy of the model's fast tokenizer), and the
kind of model ("embedding" or "rerank") that the core's :class:`ModelManager` routes by.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
from typing import Any, AsyncIterator, Sequence

import numpy as np

from gallama_core.models.backend import Backend, GenerationChunk, GenerationRequest
from gallama_core.errors import InvalidRequestError
from gallama_core.plugin_system.registrations import LoadProgress

from .settings import EmbeddingSettings

log = logging.getLogger("gallama.embedding")

#: transformers' loading (meta-device init) is not thread-safe: two models loading at once in the core's
#: worker threads fail with "Cannot copy out of meta tensor". Loads of this backend take turns.
_LOAD_LOCK = threading.Lock()

#: Above this many characters in one request, counting tokens moves off the event loop.
_TOKENIZE_INLINE_CHARS = 20_000


def engine_args(settings: EmbeddingSettings):
    """infinity ``EngineArgs`` for the settings (also used by the benchmark for the raw-engine side)."""
    from infinity_emb import EngineArgs

    return EngineArgs(
        model_name_or_path=settings.model_id, served_model_name=settings.served_name,
        batch_size=settings.batch_size, revision=settings.revision, trust_remote_code=settings.trust_remote_code,
        engine=settings.engine, model_warmup=settings.model_warmup, device=settings.device,
        device_id=settings.device_id or [], compile=settings.compile, bettertransformer=settings.bettertransformer,
        dtype=settings.dtype, pooling_method=settings.pooling_method,
        lengths_via_tokenize=settings.lengths_via_tokenize)


class TokenCounter:
    """Counts tokens as the model sees them (special tokens included) with a private copy of its fast
    tokenizer, so counting never races the engine's own tokenizer."""

    def __init__(self, hf_tokenizer: Any):
        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        self._tokenizer = copy.deepcopy(backend) if backend is not None else None
        if self._tokenizer is not None:
            self._tokenizer.no_truncation()
            self._tokenizer.no_padding()

    @property
    def available(self) -> bool:
        return self._tokenizer is not None

    def count(self, items: Sequence[str | tuple[str, str]]) -> list[int]:
        encodings = self._tokenizer.encode_batch(list(items), add_special_tokens=True)
        return [len(e.ids) for e in encodings]


class InfinityBackend(Backend):
    """A text embedding model (``kind = "embedding"``) or a cross-encoder reranker (``kind = "rerank"``)."""

    kind = "embedding"
    remote_methods = ("embed", "rerank")

    def __init__(self, settings: EmbeddingSettings, engine: Any, kind: str, max_tokens: int,
                 dimension: int | None, counter: TokenCounter):
        super().__init__("embedding", settings.served_name, max_tokens)
        self.kind = kind  # instance attribute: one backend class serves both kinds
        self.settings = settings
        self.concurrency = settings.batch_size
        self.engine = engine
        self.dimension = dimension
        self.counter = counter
        self._started = False
        self._start_lock = asyncio.Lock()

    # ------------------------------------------------------------------------------------------ engine
    async def _ensure_started(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if not self._started:
                await self.engine.astart()
                self._started = True

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self.engine.astop()

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        raise InvalidRequestError(f"model {self.model_name!r} is an {self.kind} model and cannot generate text",
                                  param="model", code="wrong_model_kind")

    def info(self) -> dict:
        return {"kind": self.kind, "dimension": self.dimension, "max_tokens": self.max_seq_len}

    # ---------------------------------------------------------------------------------------- counting
    async def _token_counts(self, items: Sequence[str | tuple[str, str]]) -> list[int] | None:
        if not self.counter.available:
            return None
        chars = sum(len(i) if isinstance(i, str) else len(i[0]) + len(i[1]) for i in items)
        if chars > _TOKENIZE_INLINE_CHARS:
            return await asyncio.to_thread(self.counter.count, items)
        return self.counter.count(items)

    def _apply_length_rule(self, counts: list[int] | None, param: str) -> int | None:
        """Total tokens processed after the length rule; raises the 400 when truncation is off."""
        if counts is None:
            return None
        limit = self.max_seq_len
        if not self.settings.truncate:
            over = next((i for i, n in enumerate(counts) if n > limit), None)
            if over is not None:
                what = f"{param}[{over}]" + (" with the query" if param == "documents" else "")
                raise InvalidRequestError(
                    f"{what} is {counts[over]} tokens, more than the {limit} tokens model {self.model_name!r} "
                    "takes (this model is served with truncate=false)", param=param, code="input_too_long")
        return sum(min(n, limit) for n in counts)

    # ---------------------------------------------------------------------------------------- requests
    async def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """Unit-length (L2) vectors, one row per text, and the prompt tokens."""
        await self._ensure_started()
        if self.settings.truncate and self.counter.available:
            # Nothing to refuse: count the tokens for `usage` in a worker thread (the Rust tokenizer releases
            # the GIL) while the engine embeds, so counting adds no latency to the request.
            counting = asyncio.ensure_future(asyncio.to_thread(self.counter.count, texts))
            try:
                vectors, _ = await self.engine.embed(sentences=texts)
            finally:
                counts = await counting
            return np.asarray(vectors, dtype=np.float32), self._apply_length_rule(counts, "input")
        tokens = self._apply_length_rule(await self._token_counts(texts), "input")
        vectors, usage = await self.engine.embed(sentences=texts)
        return np.asarray(vectors, dtype=np.float32), tokens if tokens is not None else int(usage)

    async def rerank(self, query: str, docs: list[str]) -> tuple[list[float], int]:
        """Relevance scores (sigmoid of the cross-encoder logit) in document order, and the prompt tokens."""
        tokens = self._apply_length_rule(await self._token_counts([(query, d) for d in docs]), "documents")
        await self._ensure_started()
        results, usage = await self.engine.rerank(query=query, docs=docs, raw_scores=False)
        scores = [0.0] * len(docs)
        for r in results:
            scores[r.index] = float(r.relevance_score)
        return scores, tokens if tokens is not None else int(usage)


def _limit(replica: Any, kind: str, requested: int | None) -> int:
    if kind == "embedding":
        model_limit = int(getattr(replica, "max_seq_length", None) or 512)
    else:
        tokenizer = replica.tokenizer
        model_limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
        positions = getattr(getattr(replica, "config", None), "max_position_embeddings", None)
        if not model_limit or model_limit > 1_000_000:  # tokenizer without a limit: use the model's
            model_limit = int(positions or 512)
    if requested and requested < model_limit:
        return requested
    if requested and requested > model_limit:
        log.warning("max_seq_len %d is above the model's limit %d; using %d", requested, model_limit, model_limit)
    return model_limit


def load_embedding(settings: EmbeddingSettings, progress: LoadProgress) -> InfinityBackend:
    """Build the infinity engine for one model (runs in a worker thread)."""
    progress.update(f"loading {settings.model_id} with infinity-emb ({settings.engine}, device={settings.device})")
    from infinity_emb import AsyncEngineArray  # lazy: infinity, torch and transformers load only here

    with _LOAD_LOCK:
        array = AsyncEngineArray.from_args([engine_args(settings)])
    engine = next(iter(array))
    capabilities = set(engine.capabilities)
    if "embed" in capabilities:
        kind = "embedding"
    elif "rerank" in capabilities:
        kind = "rerank"
    else:
        raise ValueError(f"{settings.model_id} is a model with capabilities {sorted(capabilities)}; the embedding "
                         "backend serves text embedding models and cross-encoder rerankers")
    replicas = list(getattr(engine, "_model_replicas", []))
    if not replicas:
        raise RuntimeError("infinity-emb engine has no model replica (unexpected infinity-emb version)")
    first = replicas[0]
    if getattr(first, "mode_colbert", False):
        raise ValueError(f"{settings.model_id} is a ColBERT (multi-vector) model, which /v1/embeddings cannot serve")
    limit = _limit(first, kind, settings.max_seq_len)
    for replica in replicas:  # apply the (possibly lowered) limit to every replica
        if kind == "embedding":
            replica.max_seq_length = limit
        else:
            replica.tokenizer.model_max_length = limit
    dimension = None
    if kind == "embedding":
        get_dim = getattr(first, "get_sentence_embedding_dimension", None)
        dimension = int(get_dim()) if get_dim is not None and get_dim() else None
    counter = TokenCounter(getattr(first, "tokenizer", None))
    if not counter.available:
        log.warning("%s: no fast tokenizer; usage counts come from infinity and truncate=false cannot be checked",
                    settings.served_name)
    backend = InfinityBackend(settings, engine, kind, limit, dimension, counter)
    progress.update(f"ready: {kind} model, {limit} tokens per input" + (f", dimension {dimension}" if dimension else ""),
                    1.0)
    return backend
