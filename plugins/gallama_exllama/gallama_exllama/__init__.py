"""gallama backend plugin for ExLlamaV2 (EXL2 and FP16 HF-format models on NVIDIA GPUs)."""
