"""Hook implementations of the ExLlamaV3 backend plugin (torch and exllamav3 are imported only when a model
loads, so the plugin installs and lists on machines without CUDA)."""

from __future__ import annotations

from gallama_core import hookimpl
from gallama_core.plugin_system.registrations import BackendSpec, CatalogEntry

from .settings import ExLlamaV3Settings


def _load(settings, progress):
    from .backend import load_exllamav3  # lazy: torch/exllamav3 only here

    return load_exllamav3(settings, progress)


def _detect(model_path: str) -> bool:
    """EXL3 folders (config.json says quant_method exl3) are ours."""
    from gallama_core.models.hf_model_dir import is_model_dir, quant_method

    return is_model_dir(model_path) and quant_method(model_path) == "exl3"


@hookimpl
def gallama_backends():
    return [BackendSpec(name="exllamav3", settings_model=ExLlamaV3Settings, load=_load, aliases=("exl3",),
                        detect=_detect,
                        description="ExLlamaV3: EXL3 and unquantized models on NVIDIA GPUs, batched paged attention")]


@hookimpl
def gallama_model_catalog():
    def exl3(repo: str, quants: dict[str, str]) -> dict[str, str]:
        return {q: f"{repo}@{branch}" for q, branch in quants.items()}

    bpw = {"3.0": "3.0bpw", "4.0": "4.0bpw", "5.0": "5.0bpw", "6.0": "6.0bpw", "8.0": "8.0bpw"}
    return [
        CatalogEntry("qwen-2.5-7B", "exllamav3", exl3("turboderp/Qwen2.5-7B-Instruct-exl3", bpw)),
        CatalogEntry("llama-3.1-8B", "exllamav3", exl3("turboderp/Llama-3.1-8B-Instruct-exl3", bpw)),
        CatalogEntry("mistral", "exllamav3", exl3("turboderp/Mistral-7B-instruct-v0.3-exl3", bpw)),
    ]
