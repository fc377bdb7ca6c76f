"""Model settings of the ExLlamaV2 backend: the common keys plus ExLlamaV2's own."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gallama_core.models.settings import ModelSettings


class ExLlamaSettings(ModelSettings):
    """An ExLlamaV2 model entry (``backend: exllama``).

    ``model_id`` is a folder with ``config.json``, ``*.safetensors`` and the tokenizer (EXL2 or FP16/BF16
    HF format). ``max_seq_len`` defaults to the model's own context; ``cache_size`` (tokens, shared by
    concurrent jobs) defaults to ``max_seq_len`` and is rounded up to a multiple of 256. ``cache_quant``
    (default Q4, as gallama always did) picks the cache class: FP16 = ExLlamaV2Cache, Q8 = ExLlamaV2Cache_Q8,
    Q6 = ExLlamaV2Cache_Q6, Q4 = ExLlamaV2Cache_Q4. ``gpus`` is VRAM in GB per GPU (manual split); absent
    means autosplit. ``tp=True`` loads tensor parallel (``load_tp`` + ``ExLlamaV2Cache_TP``).
    """

    cache_quant: Literal["FP16", "Q4", "Q6", "Q8"] | None = Field(
        "Q4", description="KV cache quantization: FP16, Q8, Q6 or Q4 (default Q4).")
    cpu_threads: int = Field(
        1, ge=1, le=256, description="Threads of torch's CPU pool in this model's worker (default 1). The engine "
        "computes on the GPU; torch's default pool (one thread per core) only makes its threads wait for each "
        "other at every step, and for any core another process keeps busy: on an H100 with three busy cores "
        "beside it, ExLlamaV3's decode steps took 2.9x as long with the default pool and 1.17x with 1 thread.")
    max_batch_size: int = Field(32, ge=1, le=256, description="Jobs decoded together (paged mode only).")
    chunk_size: int = Field(2048, ge=256, description="Prompt tokens processed per forward pass.")
    num_draft_tokens: int = Field(4, ge=1, le=16, description="Tokens proposed per step by the draft model.")
    attention: Literal["auto", "flash", "sdpa", "matmul"] = Field(
        "auto", description="Attention path: auto = flash-attn when installed (paged, batched), else matmul; "
                            "every choice is checked against the matmul reference when the model loads.")
    paged: bool | None = Field(None, description="Force paged mode on/off (default: on when flash-attn >= 2.5.7).")
    rope_scale: float | None = Field(None, gt=0)
    rope_alpha: float | None = Field(None, gt=0)
