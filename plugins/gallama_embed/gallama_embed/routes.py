"""HTTP routes of the embedding plugin: ``POST /v1/embeddings`` (OpenAI) and ``POST /v1/rerank`` (Jina/Cohere,
also at ``/rerank`` as llama.cpp and vLLM serve it). Thin: parse, route to a model of the right kind, shape."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gallama_core.api.openapi_bodies import documented_body
from gallama_core.api.state import AppState
from gallama_core.errors import InvalidRequestError, ModelNotFoundError
from gallama_core.models.manager import ModelInstance
from gallama_core.api.routes import read_json
from gallama_core.pipeline.serving import parse_request

from .protocol import (EmbeddingRequest, EmbeddingResponse, RerankRequest, RerankResponse, check_count,
                       check_dimensions, embedding_response_json, normalise_input, rerank_documents, rerank_response,
                       truncate_renormalise)

ENDPOINT_NEEDS = {"embedding": "an embedding model", "rerank": "a cross-encoder reranker (served with backend=embedding)"}


def resolve(state: AppState, name: str, kind: str) -> ModelInstance:
    """The model for an endpoint of ``kind``; a 400 that says why when no loaded model is of that kind."""
    try:
        return state.models.resolve(name, kind)
    except ModelNotFoundError:
        could_serve = [i for i in state.models.instances if i.status != "failed" and
                       (i.kind == kind or (i.status == "loading" and i.settings.backend == "embedding"))]
        if could_serve:
            raise
        loaded = ", ".join(f"{i.name} ({i.kind if i.status == 'ready' else i.status})"
                           for i in state.models.instances) or "none"
        raise InvalidRequestError(f"this endpoint needs {ENDPOINT_NEEDS[kind]}, and none is loaded "
                                  f"(loaded models: {loaded})", param="model", code="wrong_model_kind") from None


def embed_router(state: AppState) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/embeddings", tags=["openai"], response_model=EmbeddingResponse,
                 openapi_extra=documented_body(EmbeddingRequest))
    async def embeddings(request: Request):
        body = parse_request(EmbeddingRequest, await read_json(request))
        texts = normalise_input(body.input)
        instance = resolve(state, body.model, "embedding")
        backend = instance.backend
        check_count(len(texts), backend.settings.max_inputs)
        if backend.dimension:
            check_dimensions(body.dimensions, backend.dimension, instance.name)
        instance.active += 1
        try:
            vectors, tokens = await backend.embed(texts)
        finally:
            instance.active -= 1
        check_dimensions(body.dimensions, vectors.shape[1], instance.name)
        vectors = truncate_renormalise(vectors, body.dimensions)
        return Response(embedding_response_json(vectors, instance.name, tokens, body.encoding_format),
                        media_type="application/json")

    async def rerank(request: Request):
        body = parse_request(RerankRequest, await read_json(request))
        docs = rerank_documents(body)
        instance = resolve(state, body.model, "rerank")
        backend = instance.backend
        check_count(len(docs), backend.settings.max_inputs, "documents")
        instance.active += 1
        try:
            scores, tokens = await backend.rerank(body.query, docs)
        finally:
            instance.active -= 1
        answer = rerank_response(scores, docs, instance.name, body.top_n, body.return_documents, tokens)
        return Response(answer.model_dump_json(exclude_none=True), media_type="application/json")

    for path in ("/v1/rerank", "/rerank"):
        router.add_api_route(path, rerank, methods=["POST"], tags=["rerank"], response_model=RerankResponse,
                             openapi_extra=documented_body(RerankRequest))
    return router
