"""Request-body schemas in ``/openapi.json`` for routes that read their JSON body themselves.

The chat and completion routes (and plugin routes such as ``/v1/embeddings``) parse the raw body so that
unknown fields get gallama's own 400s (plugin-owned fields, typos) in the OpenAI error envelope. FastAPI then
knows nothing of the body; :func:`documented_body` gives such a route the schema of the pydantic model that does
the parsing, so ``/docs`` and client generators (and fuzzers) see it::

    @router.post("/v1/embeddings", openapi_extra=documented_body(EmbeddingRequest))
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_MODELS: dict[str, type[BaseModel]] = {}
_REF = "#/components/schemas/{model}"


def documented_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a POST route whose body ``model`` parses."""
    _MODELS[model.__name__] = model
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": _REF.format(model=model.__name__)}}}}}


def add_body_schemas(schema: dict[str, Any]) -> dict[str, Any]:
    """Put every documented body model (and the models it nests) into ``components.schemas``."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, model in _MODELS.items():
        body = model.model_json_schema(ref_template=_REF)
        components.update(body.pop("$defs", {}))
        components[name] = body
    return schema
