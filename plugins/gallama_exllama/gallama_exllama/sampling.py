"""OpenAI sampling settings mapped onto ExLlamaV2's ``ExLlamaV2Sampler.Settings`` attributes (pure Python).

``temperature=0`` means greedy (top_k=1). Unset values keep the engine's defaults, except the repetition
penalty: ExLlamaV2 defaults to 1.025 where the OpenAI API means "no penalty", so it is 1.0 unless asked.
"""

from __future__ import annotations

from typing import Any

from gallama_core.models.backend import SamplingParams


def sampler_attributes(s: SamplingParams) -> dict[str, Any]:
    out: dict[str, Any] = {"token_repetition_penalty": 1.0}
    if s.temperature is not None:
        if s.temperature <= 0:
            out.update(temperature=1.0, top_k=1, top_p=1.0, min_p=0.0)
        else:
            out["temperature"] = float(s.temperature)
    if s.top_p is not None and out.get("top_k") != 1:
        out["top_p"] = float(s.top_p)
    if s.top_k is not None and out.get("top_k") != 1:
        out["top_k"] = max(int(s.top_k), 0)  # 0 = off in ExLlamaV2, as in the OpenAI-style APIs
    if s.min_p is not None and out.get("top_k") != 1:
        out["min_p"] = float(s.min_p)
    if s.presence_penalty is not None:
        out["token_presence_penalty"] = float(s.presence_penalty)
    if s.frequency_penalty is not None:
        out["token_frequency_penalty"] = float(s.frequency_penalty)
    if s.repetition_penalty is not None:
        out["token_repetition_penalty"] = float(s.repetition_penalty)
    return out
