"""Wire models of /v1/embeddings (OpenAI shape) and /v1/rerank (Jina/Cohere shape), and the pure functions
that check inputs and shape answers. No engine imports here: numpy only.

Input rules (each broken rule is a 400 in the OpenAI error envelope, ``param`` naming the field):

- ``input`` is a non-empty string or a non-empty array of non-empty strings; token-id arrays are refused
  (``code="token_ids_not_supported"``): ids only mean something in the served model's own vocabulary, and
  clients that send them (LangChain's ``OpenAIEmbeddings``) tokenize with OpenAI's tiktoken vocabulary.
- at most ``max_inputs`` strings (model setting, default 2048 as OpenAI) per request (``too_many_inputs``).
- ``dimensions`` between 1 and the model's dimension: the vector is cut to its first ``dimensions``
  components and L2-normalised again.
- rerank: a non-empty ``query``, 1..``max_inputs`` non-empty ``documents``, ``top_n`` >= 1 (larger than the
  number of documents returns them all, as Jina/Cohere do).
"""

from __future__ import annotations

import base64
import uuid
from typing import Any, Literal, Sequence

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field

from gallama_core.errors import InvalidRequestError

# ----------------------------------------------------------------------------------------- embeddings


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    input: Any = Field(description="A string, or an array of strings (token-id arrays are refused).")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


def _is_token_ids(value: Any) -> bool:
    def is_int(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if isinstance(value, list) and value and all(is_int(x) for x in value):
        return True
    return isinstance(value, list) and bool(value) and all(
        isinstance(item, list) and item and all(is_int(x) for x in item) for item in value)


def normalise_input(value: Any) -> list[str]:
    """The request's ``input`` as a list of texts, or an :class:`InvalidRequestError` saying what is wrong."""
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list):
        if not value:
            raise InvalidRequestError("input must not be an empty array", param="input", code="empty_input")
        if _is_token_ids(value):
            raise InvalidRequestError(
                "token-id input is not supported by the embedding backend: send the text (a string or an array "
                "of strings); LangChain's OpenAIEmbeddings needs check_embedding_ctx_length=False",
                param="input", code="token_ids_not_supported")
        bad = next((i for i, item in enumerate(value) if not isinstance(item, str)), None)
        if bad is not None:
            raise InvalidRequestError(f"input[{bad}] must be a string, got {type(value[bad]).__name__}",
                                      param="input", code="invalid_input")
        texts = value
    else:
        raise InvalidRequestError("input must be a string or an array of strings", param="input",
                                  code="invalid_input")
    empty = next((i for i, text in enumerate(texts) if not text), None)
    if empty is not None:
        where = "input" if isinstance(value, str) else f"input[{empty}]"
        raise InvalidRequestError(f"{where} is an empty string; every input needs some text",
                                  param="input", code="empty_input")
    return texts


def check_count(count: int, max_inputs: int, param: str = "input") -> None:
    if count > max_inputs:
        what = "inputs" if param == "input" else param
        raise InvalidRequestError(f"too many {what}: {count} (this model takes at most {max_inputs} per request; "
                                  "split the batch)", param=param, code="too_many_inputs")


def check_dimensions(dimensions: int | None, model_dimension: int, model: str) -> None:
    if dimensions is not None and not 1 <= dimensions <= model_dimension:
        raise InvalidRequestError(f"dimensions must be between 1 and {model_dimension} for model {model!r} "
                                  f"(got {dimensions})", param="dimensions", code="invalid_dimensions")


def truncate_renormalise(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """Keep the first ``dimensions`` components of each row and scale each row back to unit L2 length."""
    if dimensions is None or dimensions >= vectors.shape[1]:
        return vectors
    cut = np.ascontiguousarray(vectors[:, :dimensions], dtype=np.float32)
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return cut / np.where(norms == 0, 1, norms)


def encode_base64(vector: np.ndarray) -> str:
    """OpenAI's base64 format: the little-endian float32 bytes of the vector."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_base64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


def embedding_response_json(vectors: np.ndarray, model: str, prompt_tokens: int, encoding_format: str) -> bytes:
    """The :class:`EmbeddingResponse` as JSON bytes, serialised by orjson straight from the float32 rows.

    Floats are written in their shortest float32 form (``0.1``, not ``0.10000000149011612``): parsed back and
    cast to float32 they are exactly the engine's values, and the body is ~40% smaller than pydantic's float64
    output, which is what a client spends most of its time decoding."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if encoding_format == "base64":
        items = [encode_base64(row) for row in vectors]
    else:
        items = list(vectors)
    body = {"object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": item} for i, item in enumerate(items)],
            "model": model, "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


# --------------------------------------------------------------------------------------------- rerank


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    query: str
    documents: list[str | RerankDocument]
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = True


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    model: str
    results: list[RerankResult]
    usage: RerankUsage


def rerank_documents(request: RerankRequest) -> list[str]:
    """The request's documents as texts, or a 400 naming the rule that was broken."""
    if not request.query:
        raise InvalidRequestError("query must not be empty", param="query", code="empty_input")
    docs = [d if isinstance(d, str) else d.text for d in request.documents]
    if not docs:
        raise InvalidRequestError("documents must not be an empty array", param="documents", code="empty_input")
    empty = next((i for i, d in enumerate(docs) if not d), None)
    if empty is not None:
        raise InvalidRequestError(f"documents[{empty}] is an empty string", param="documents", code="empty_input")
    return docs


def rerank_response(scores: Sequence[float], docs: list[str], model: str, top_n: int | None,
                    return_documents: bool, prompt_tokens: int) -> RerankResponse:
    """Results sorted by score (highest first, ties by original index), cut to ``top_n``."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    if top_n is not None:
        order = order[:top_n]
    results = [RerankResult(index=i, relevance_score=float(scores[i]),
                            document=RerankDocument(text=docs[i]) if return_documents else None) for i in order]
    return RerankResponse(id=f"rerank-{uuid.uuid4().hex}", model=model, results=results,
                          usage=RerankUsage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens))
