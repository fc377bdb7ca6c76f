"""gallama-embed: text embeddings (``/v1/embeddings``) and reranking (``/v1/rerank``) through infinity-emb."""

__version__ = "0.1.0"
