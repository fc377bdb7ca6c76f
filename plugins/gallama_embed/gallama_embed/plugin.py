"""Hook implementations of the embedding plugin (infinity-emb and torch are imported only when a model loads)."""

from __future__ import annotations

from pathlib import Path

from gallama_core import hookimpl
from gallama_core.models.catalog import packaged_catalog
from gallama_core.plugin_system.registrations import BackendSpec

from .settings import EmbeddingSettings


def _load(settings, progress):
    from .backend import load_embedding  # lazy: infinity_emb / torch are imported only here

    return load_embedding(settings, progress)


def _detect(model_path: str) -> bool:
    """Claim local sentence-transformers folders when the user named no backend."""
    folder = Path(model_path).expanduser()
    return folder.is_dir() and any((folder / marker).is_file()
                                   for marker in ("config_sentence_transformers.json", "modules.json"))


@hookimpl
def gallama_backends():
    return [BackendSpec(name="embedding", settings_model=EmbeddingSettings, load=_load,
                        aliases=("infinity", "embeddings", "rerank"),
                        detect=_detect, description="text embeddings and cross-encoder reranking via infinity-emb")]


@hookimpl
def gallama_routes(app_state):
    from .routes import embed_router

    return [embed_router(app_state)]


@hookimpl
def gallama_model_catalog():
    """The models `gallama download` can fetch for this backend: data in ``catalog.yaml`` next to this module."""
    return packaged_catalog(__package__, "embedding")

