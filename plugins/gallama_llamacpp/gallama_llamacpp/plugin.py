"""Hook implementations of the llama.cpp backend plugin (importing xllamacpp only when a model loads)."""

from __future__ import annotations

from gallama_core import hookimpl
from gallama_core.plugin_system.registrations import BackendSpec, CatalogEntry

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
    def gguf(repo: str, pattern: str, quants: dict[str, str]) -> dict[str, str]:
        return {q: f"{repo}#{pattern.format(quant=name)}" for q, name in quants.items()}

    qwen7 = {"3.0": "q3_k_m", "4.0": "q4_k_m", "5.0": "q5_k_m", "6.0": "q6_k", "8.0": "q8_0"}
    return [
        CatalogEntry("SmolLM2-135M-Instruct", "llama_cpp",
                     {"4.0": "bartowski/SmolLM2-135M-Instruct-GGUF#SmolLM2-135M-Instruct-Q4_K_M.gguf",
                      "8.0": "bartowski/SmolLM2-135M-Instruct-GGUF#SmolLM2-135M-Instruct-Q8_0.gguf"}),
        CatalogEntry("qwen-2.5-7B", "llama_cpp",
                     gguf("Qwen/Qwen2.5-7B-Instruct-GGUF", "qwen2.5-7b-instruct-{quant}.gguf", qwen7)),
        CatalogEntry("llama-3.1-8B", "llama_cpp",
                     {"4.0": "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF#Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
                      "8.0": "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF#Meta-Llama-3.1-8B-Instruct-Q8_0.gguf"}),
    ]
