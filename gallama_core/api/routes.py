"""HTTP routes of the core (thin: parsing and response shapes only; logic lives in serving)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gallama_core.api.security import may_manage
from gallama_core.api.request_io import read_json, sse_event, sse_response, unless_disconnected
from gallama_core.api.state import AppState
from gallama_core.config import (check_requested_model, load_model_config, model_dirs,
                                 resolve_model_settings)
from gallama_core.errors import ConfigError, InvalidRequestError
from gallama_core.api.openapi_bodies import documented_body
from gallama_core.api.protocol import (AddModelRequest, ChatCompletionRequest, CompletionRequest, ModelCard, ModelList,
                                       RemoveModelRequest)
from gallama_core.plugin_system.manager import model_catalog
from gallama_core.pipeline.serving import Pipeline, sse_payload


async def _respond(request: Request, endpoint: str, state: AppState) -> Response:
    body = await read_json(request)
    done, result = await unless_disconnected(request, Pipeline(state).run(endpoint, body))
    if not done:
        return Response(status_code=499)
    if isinstance(body, dict) and body.get("stream"):
        return sse_response(result, lambda item: sse_event(sse_payload(item)))
    return Response(result.model_dump_json(exclude_none=True), media_type="application/json")


def core_router(state: AppState) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/chat/completions", tags=["openai"], openapi_extra=documented_body(ChatCompletionRequest))
    async def chat_completions(request: Request):
        return await _respond(request, "chat", state)

    @router.post("/v1/completions", tags=["openai"], openapi_extra=documented_body(CompletionRequest))
    async def completions(request: Request):
        return await _respond(request, "completion", state)

    @router.get("/v1/models", tags=["openai"])
    async def list_models() -> ModelList:
        cards = {}
        for instance in state.models.instances:  # one card per name; ready if any instance is
            card = cards.get(instance.name)
            if card is None or (card.status != "ready" and instance.status == "ready"):
                cards[instance.name] = ModelCard(id=instance.name, created=instance.created,
                                                 backend=instance.settings.backend, kind=instance.kind,
                                                 status=instance.status)
        return ModelList(data=list(cards.values()))

    @router.get("/metrics", tags=["server"], include_in_schema=False)
    async def metrics():
        """Prometheus metrics (requests, tokens, TTFT, inter-token latency, model states, queues, engine steps)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        await state.models.refresh_engine_stats()
        return Response(generate_latest(state.telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    @router.get("/list_loaded_models", tags=["management", "models"])
    async def list_loaded_models() -> list[dict]:
        """One object per model instance: name, backend, status (loading, ready, restarting, failed), the pid
        of its engine worker, active and served requests, restarts, load progress and the last error."""
        return [instance.describe() for instance in state.models.instances]

    @router.get("/health", tags=["server"])
    async def health(request: Request):
        """200 while at least one model can serve (503 while the models given at start-up load, or when none
        can serve); the body gives each model's state (ready when one of its instances is) and, to a caller who
        may manage models (the admin key, or no keys on loopback), each instance's state and where its worker
        runs (``local``, or a Ray node): /health is public, the cluster's layout is not."""
        models = state.models
        statuses = {}
        for instance in models.instances:
            if statuses.get(instance.name) != "ready":
                statuses[instance.name] = instance.status
        body = {"models": statuses}
        if may_manage(getattr(request.app.state, "surface", None), request.scope):
            body["instances"] = [{"model_name": i.name, "status": i.status, "location": i.location}
                                 for i in models.instances]
        if state.draining:
            return JSONResponse({"status": "draining", **body}, status_code=503)
        if models.starting:
            return JSONResponse({"status": "loading", **body}, status_code=503)
        if not models.ready():
            return JSONResponse({"status": "no_model", "detail": "no model can serve", **body}, status_code=503)
        return {"status": "ok", **body}

    @router.post("/add_model", tags=["management"], openapi_extra=documented_body(AddModelRequest))
    async def add_model(request: Request):
        body = await read_json(request)
        items = body if isinstance(body, list) else [body]
        settings = []
        for item in items:
            if not isinstance(item, dict) or "model_id" not in item:
                raise InvalidRequestError("each model to add needs a 'model_id'", param="model_id")
            try:
                entries = load_model_config()
                check_requested_model(item, entries, model_dirs(state.plugin_config.get("server")),
                                      catalog=model_catalog(state.pm))
                settings.append(resolve_model_settings(item, state.registry, config_entries=entries,
                                                       python_for_backend=state.python_for_backend()))
            except ConfigError as exc:
                raise InvalidRequestError(str(exc), param="model_id") from None
        for s in settings:
            state.models.start_loading(s)
        return {"status": "loading", "models": [s.served_name for s in settings]}

    @router.post("/remove_model", tags=["management"], openapi_extra=documented_body(RemoveModelRequest))
    async def remove_model(request: Request):
        body = await read_json(request)
        name = body.get("model_name") if isinstance(body, dict) else None
        if not name:
            raise InvalidRequestError("'model_name' is required", param="model_name")
        removed = await state.models.remove(name)
        return {"status": "removed", "model": name, "instances": removed}

    return router
