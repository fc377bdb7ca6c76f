"""Hook implementations of the ExLlamaV2 backend plugin (torch and exllamav2 are imported only when a model
loads, so the plugin installs and lists on machines without CUDA)."""

from __future__ import annotations

from gallama_core import hookimpl
from gallama_core.models.catalog import packaged_catalog
from gallama_core.plugin_system.registrations import BackendSpec

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
    """The models `gallama download` can fetch for this backend: data in ``catalog.yaml`` next to this module."""
    return packaged_catalog(__package__, "exllama")

