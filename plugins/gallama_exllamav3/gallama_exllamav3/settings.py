"""Model settings of the ExLlamaV3 backend: the common keys plus ExLlamaV3's own."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gallama_core.models.settings import ModelSettings

#: cache_quant → ExLlamaV3 cache layer: (layer type, key bits, value bits).
CACHE_LAYERS: dict[str, tuple[str, int, int]] = {
    "FP16": ("fp16", 16, 16),
    "Q8": ("quant", 8, 8),
    "Q6": ("quant", 6, 6),
    "Q4": ("quant", 4, 4),
}


class ExLlamaV3Settings(ModelSettings):
    """An ExLlamaV3 model entry (``backend: exllamav3``).

    ``model_id`` is a folder with ``config.json``, ``*.safetensors`` and the tokenizer (EXL3 or unquantized
    HF format). ``max_seq_len`` (the longest prompt + answer of one request) defaults to the model's
    ``max_position_embeddings``; ``cache_size`` (tokens shared by all concurrent jobs, a multiple of 256)
    defaults to ``max_seq_len``: raise it to batch more long requests at once. ``cache_quant`` picks the
    cache layer: FP16 = ``CacheLayer_fp16``; Q8/Q6/Q4 = ``CacheLayer_quant`` with k_bits = v_bits = 8/6/4
    (default Q4, as gallama always did). ``gpus`` = GB to use per GPU (``use_per_device``; 0 skips a GPU);
    absent = autosplit. ``tp=True`` loads tensor parallel.
    """

    cache_quant: Literal["FP16", "Q4", "Q6", "Q8"] | None = Field(
        "Q4", description="KV cache quantization: FP16, Q8, Q6 or Q4 (default Q4).")
    cpu_threads: int = Field(
        1, ge=1, le=256, description="Threads of torch's CPU pool in this model's worker (default 1). The engine "
        "computes on the GPU; torch's default pool (one thread per core) only makes its threads wait for each "
        "other at every step, and for any core another process keeps busy: on an H100 with three busy cores "
        "beside it, ExLlamaV3's decode steps took 2.9x as long with the default pool and 1.17x with 1 thread.")
    max_batch_size: int = Field(256, ge=1, le=1024, description="Most jobs decoded together.")
    chunk_size: int = Field(2048, ge=256, description="Prompt tokens processed per forward pass.")
    max_rq_tokens: int | None = Field(
        2048, ge=256, description="Cache tokens a job takes per round before it is requeued, so that a request "
                                  "without max_tokens does not reserve the whole cache up front.")
    num_draft_tokens: int = Field(4, ge=1, le=16, description="Tokens proposed per step by the draft model.")
    prefill_cooldown: int = Field(
        0, ge=0, le=64, description="While some jobs generate, generator steps to wait between two prompt passes of "
        "new jobs (ExLlamaV3's own default is 4). 0 ingests every waiting prompt at once: new requests start "
        "together, as a burst does with the raw batched generator; raise it to keep running streams' "
        "inter-token latency steady while prompts keep arriving.")
    shared_chunk_size: int | None = Field(
        None, ge=256, description="Prompt tokens per pass for a new job while others generate (a multiple of 256, "
        "at most chunk_size; default chunk_size). Smaller keeps running streams smoother.")

    @model_validator(mode="after")
    def _check_shared_chunk(self):
        if self.shared_chunk_size is not None and (self.shared_chunk_size % 256 or
                                                   self.shared_chunk_size > self.chunk_size):
            raise ValueError("shared_chunk_size must be a multiple of 256 and at most chunk_size")
        return self
