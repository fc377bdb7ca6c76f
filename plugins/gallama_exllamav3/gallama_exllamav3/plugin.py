"""Hook implementations of the ExLlamaV3 backend plugin (torch and exllamav3 are imported only when a model
loads, so the plugin installs and lists on machines without CUDA)."""

from __future__ import annotations

from gallama_core import hookimpl
from gallama_core.models.catalog import packaged_catalog
from gallama_core.plugin_system.registrations import BackendSpec

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
    """The models `gallama download` can fetch for this backend: data in ``catalog.yaml`` next to this module."""
    return packaged_catalog(__package__, "exllamav3")

