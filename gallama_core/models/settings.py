"""The settings of one model instance: a ``model_config.yaml`` entry or one ``-id "key=value ..."`` string.

:class:`ModelSettings` holds the keys every backend understands (the spec's launch keys). A backend that
needs more keys subclasses it and names the subclass in its :class:`~gallama_core.plugin_system.registrations.BackendSpec`;
the entry is then validated by that subclass, so unknown keys are errors that name the model and the key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CacheQuant = Literal["FP16", "Q4", "Q6", "Q8"]

#: Upper bounds of the launch keys (a request to /add_model cannot ask an engine for absurd sizes).
MAX_TOKENS = 1 << 24  # 16M tokens of context or cache
MAX_GPU_GB = 4096.0


def _float_list(value):
    if value is None or isinstance(value, list):
        return value
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").strip("[]").split(",") if p]
        return [float(p) for p in parts]
    return value


class ModelSettings(BaseModel):
    """Launch settings shared by every backend (names and meanings from gallama's user documentation)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_assignment=True)

    model_id: str = Field(description="Name of an entry in model_config.yaml, a local path, or a hub id.")
    model_name: str | None = Field(None, description="Name clients use in `model`; defaults to the last part of model_id.")
    backend: str | None = Field(None, description="Engine: exllama, exllamav3, llama_cpp, embedding (case-insensitive).")
    gpus: list[float] | None = Field(None, max_length=64,
                                     description="VRAM (GB) per GPU, e.g. 20,15,0; absent means auto split.")
    cache_size: int | None = Field(None, gt=0, le=MAX_TOKENS,
                                   description="KV cache size in tokens, shared by concurrent requests.")
    cache_quant: CacheQuant | None = Field(None, description="KV cache quantization: FP16, Q4, Q6 or Q8.")
    max_seq_len: int | None = Field(None, gt=0, le=MAX_TOKENS,
                                    description="Longest sequence (prompt + answer) one request may use.")
    tp: bool = Field(False, description="Tensor parallel across the listed GPUs (ExLlama backends).")
    draft_model_id: str | None = Field(None, description="Draft model for speculative decoding (same vocabulary).")
    draft_model_name: str | None = None
    draft_gpus: list[float] | None = Field(None, max_length=64)
    draft_cache_size: int | None = Field(None, gt=0, le=MAX_TOKENS)
    draft_cache_quant: CacheQuant | None = None
    max_queue: int | None = Field(None, ge=0, le=100_000, description="Requests that may wait for a free slot of "
                                  "this instance; past it a request gets a 429 with Retry-After (default 64).")
    python: str | None = Field(None, description="Python interpreter of the environment the model's engine worker "
                               "runs in (e.g. /opt/venvs/exl3/bin/python); default: the server's own.")

    @field_validator("gpus", "draft_gpus", mode="before")
    @classmethod
    def _parse_gpus(cls, value):
        return _float_list(value)

    @field_validator("gpus", "draft_gpus")
    @classmethod
    def _gpu_shares(cls, value):
        if value is not None and any(not 0 <= share <= MAX_GPU_GB for share in value):
            raise ValueError(f"each GPU's share must be between 0 and {MAX_GPU_GB} GB")
        return value

    @field_validator("cache_quant", "draft_cache_quant", mode="before")
    @classmethod
    def _upper_quant(cls, value):
        return value.upper() if isinstance(value, str) else value

    @property
    def served_name(self) -> str:
        """The name clients put in `model`."""
        if self.model_name:
            return self.model_name
        return self.model_id.rstrip("/").split("/")[-1]


class ForeignModelSettings(ModelSettings):
    """A model whose backend is installed only in its worker's environment (``python`` points there): the front
    checks the common keys and passes the rest on; the worker validates the entry with the backend's own model."""

    model_config = ConfigDict(extra="allow", protected_namespaces=(), validate_assignment=True)
