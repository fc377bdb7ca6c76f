"""Model settings of the embedding backend: the common keys plus infinity-emb's engine options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gallama_core.models.settings import ModelSettings

#: OpenAI's own limit on inputs per /v1/embeddings request.
DEFAULT_MAX_INPUTS = 2048


class EmbeddingSettings(ModelSettings):
    """An embedding (or reranker) model entry, served through infinity-emb's Python engine.

    ``max_seq_len`` (a common key) lowers the model's own token limit per input (it never raises it past
    what the model was trained for). ``truncate`` decides what happens to a longer input: cut to the limit
    (the sentence-transformers rule, default) or refused with a 400. The keys ``gpus``, ``cache_size``,
    ``cache_quant``, ``tp`` and ``draft_*`` mean nothing to an embedding model and are refused.
    """

    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Where the model runs: auto (cuda when available, else cpu), cpu, cuda, mps.")
    device_id: list[int] | None = Field(
        None, description="CUDA device indices, e.g. 0,1 (one engine replica per device); default: all visible.")
    dtype: Literal["auto", "float32", "float16", "bfloat16", "int8", "fp8"] = Field(
        "auto", description="Weights dtype: auto (float16 on cuda, float32 on cpu), float32, float16, bfloat16, "
                            "int8 or fp8 (quantised).")
    batch_size: int = Field(32, ge=1, le=4096, description="Largest batch the engine runs at once.")
    engine: Literal["torch", "optimum", "ctranslate2"] = Field(
        "torch", description="infinity inference engine (optimum and ctranslate2 need infinity-emb's extras).")
    pooling_method: Literal["auto", "mean", "cls"] = Field(
        "auto", description="Pooling of token embeddings (auto: the model's sentence-transformers config).")
    bettertransformer: bool = Field(
        True, description="Use BetterTransformer fast paths when the model and installed libraries allow it.")
    compile: bool = Field(False, description="torch.compile the model (slow start, faster steady state).")
    model_warmup: bool = Field(True, description="Run warm-up batches at load time.")
    trust_remote_code: bool = Field(
        True, description="Allow model code from the model folder/repo (needed by e.g. gte-large-en-v1.5).")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for hub ids.")
    lengths_via_tokenize: bool = Field(
        False, description="Let infinity batch by token counts instead of character counts.")
    truncate: bool = Field(
        True, description="Cut inputs longer than the model's token limit (true) or answer 400 (false).")
    max_inputs: int = Field(
        DEFAULT_MAX_INPUTS, ge=1, description="Most inputs (or rerank documents) one request may send.")

    @field_validator("device_id", mode="before")
    @classmethod
    def _parse_device_id(cls, value):
        if isinstance(value, int):
            return [value]
        if isinstance(value, str):
            return [int(p) for p in value.replace(" ", "").strip("[]").split(",") if p]
        return value

    @field_validator("gpus", "cache_size", "cache_quant", "draft_model_id", "draft_model_name", "draft_gpus",
                     "draft_cache_size", "draft_cache_quant")
    @classmethod
    def _not_for_embeddings(cls, value, info):
        if value is not None:
            hint = " (use device/device_id to place the model)" if info.field_name == "gpus" else ""
            raise ValueError(f"{info.field_name} does not apply to the embedding backend{hint}")
        return value

    @field_validator("tp")
    @classmethod
    def _no_tp(cls, value):
        if value:
            raise ValueError("tp does not apply to the embedding backend")
        return value
