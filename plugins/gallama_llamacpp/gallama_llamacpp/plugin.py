"""Hook implementations of the llama.cpp backend plugin (importing xllamacpp only when a model loads)."""

from __future__ import annotations

from gallama_core import hookimpl
from gallama_core.models.catalog import packaged_catalog
from gallama_core.plugin_system.registrations import BackendSpec

from .settings import LlamaCppSettings


def _load(settings, progress):
    from .backend import load_llamacpp  # lazy: xllamacpp is imported only here

    return load_llamacpp(settings, progress)


def _detect(model_path: str) -> bool:
    return model_path.lower().endswith(".gguf")


@hookimpl
def gallama_backends():
    return [BackendSpec(name="llama_cpp", settings_model=LlamaCppSettings, load=_load,
                        aliases=("llamacpp", "llama.cpp", "gguf"), detect=_detect,
                        description="llama.cpp via xllamacpp: GGUF models, continuous batching")]


@hookimpl
def gallama_model_catalog():
    """The models `gallama download` can fetch for this backend: data in ``catalog.yaml`` next to this module."""
    return packaged_catalog(__package__, "llama_cpp")

