"""gallama backend plugin for ExLlamaV3 (EXL3 and unquantized HF-format models on NVIDIA GPUs)."""
