"""Hook implementations of the ExLlamaV2 backend plugin (torch and exllamav2 are imported only when a model
loads, so the plugin installs and lists on machines without CUDA)."""

from __future__ import annotations

from gallama_core import hookimpl
from gallama_core.plugin_system.registrations import BackendSpec, CatalogEntry

from .settings import ExLlamaSettings


def _load(settings, progress):
    from .backend import load_exllama  # lazy: torch/exllamav2 only here

    return load_exllama(settings, progress)


def _detect(model_path: str) -> bool:
    """An EXL2 folder is ours; unquantized HF folders are left to the default backend (which is this one)."""
    from gallama_core.models.hf_model_dir import is_model_dir, quant_method

    return is_model_dir(model_path) and quant_method(model_path) == "exl2"


@hookimpl
def gallama_backends():
    return [BackendSpec(name="exllama", settings_model=ExLlamaSettings, load=_load, aliases=("exllamav2", "exl2"),
                        detect=_detect,
                        description="ExLlamaV2: EXL2 and FP16 models on NVIDIA GPUs, dynamic generator, LLGuidance")]


@hookimpl
def gallama_model_catalog():
    def exl2(repo: str, quants: dict[str, str]) -> dict[str, str]:
        return {q: f"{repo}@{branch}" for q, branch in quants.items()}

    bpw = {"3.0": "3.0bpw", "4.0": "4.0bpw", "5.0": "5.0bpw", "6.0": "6.0bpw", "8.0": "8.0bpw"}
    return [
        CatalogEntry("qwen-2.5-7B", "exllama", exl2("turboderp/Qwen2.5-7B-Instruct-exl2", bpw)),
        CatalogEntry("llama-3.1-8B", "exllama", exl2("turboderp/Llama-3.1-8B-Instruct-exl2", bpw)),
        CatalogEntry("mistral", "exllama", exl2("turboderp/Mistral-7B-instruct-v0.3-exl2", bpw)),
    ]
