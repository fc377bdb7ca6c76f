"""Model settings of the llama.cpp backend: the common keys plus llama.cpp's own."""

from __future__ import annotations

from pydantic import Field

from gallama_core.models.settings import ModelSettings


class LlamaCppSettings(ModelSettings):
    """A llama.cpp model entry.

    Context: each of ``n_parallel`` slots holds ``max_seq_len`` tokens (default: the model's training
    context, at most 4096). ``cache_size``, when given, is the whole KV cache and is split evenly over the
    slots. ``cache_quant`` maps to llama.cpp KV types: FP16=f16, Q8=q8_0, Q6=q5_1 (llama.cpp has no 6-bit
    cache type), Q4=q4_0. ``gpus`` sets the tensor split of a CUDA build (ignored, with a log line, on CPU).
    """

    n_parallel: int = Field(4, ge=1, le=256, description="Concurrent sequences (continuous batching slots).")
    n_threads: int | None = Field(None, ge=1, le=1024, description="CPU threads (default: all cores).")
    n_gpu_layers: int | None = Field(None, ge=-1, le=10_000,
                                     description="Layers to offload to GPU (-1 all; default all when gpus given).")
    n_batch: int = Field(512, ge=32, le=1 << 17, description="Prompt tokens per engine step: a request whose client "
                         "left is stopped at the end of the current step (raise it on a GPU for long prompts).")
    flash_attn: bool | None = Field(None, description="Force flash attention on/off (default: auto).")
