"""The FastAPI application: core routes, plugin routes, OpenAI error envelopes, model loading at start-up."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import pluggy
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from gallama_core.api.state import AppState
from gallama_core.models.registry import BackendRegistry
from gallama_core.config import CORE_CONFIG_SECTIONS, load_plugin_config
from gallama_core.errors import ConfigError, GallamaError, QueueFullError, error_body, error_envelope
from gallama_core.models.manager import ModelManager
from gallama_core.models.settings import ModelSettings
from gallama_core.plugin_system.manager import get_plugin_manager
from gallama_core.api.routes import core_router
from gallama_core.api.anthropic_api.routes import anthropic_router
from gallama_core.api.responses_api.routes import responses_router
from gallama_core.api.openapi_bodies import add_body_schemas
from gallama_core.api.observability import RequestLogMiddleware, Telemetry
from gallama_core.api.security import DOCS_ASSETS, SurfaceConfig, SurfaceMiddleware, route_classifier
from gallama_core.workers.launcher import InProcessLauncher

log = logging.getLogger("gallama.app")


def build_state(pm: pluggy.PluginManager | None = None, strict_names: bool = False, progress_factory=None,
                in_process: bool = False, log_level: str = "info") -> AppState:
    """The server's state. Model instances run in engine-worker processes (or wherever a launcher plugin
    puts them); ``in_process`` loads them in this process instead (unit tests with fake backends)."""
    pm = pm or get_plugin_manager()
    registry = BackendRegistry(pm)
    sections = dict(CORE_CONFIG_SECTIONS)
    for section_list in pm.hook.gallama_config_sections():
        for section in section_list or []:
            if section.name in sections:
                raise ConfigError(f"config section {section.name!r} is registered twice (by a plugin and "
                                  f"{'the core' if section.name in CORE_CONFIG_SECTIONS else 'another plugin'})")
            sections[section.name] = section.model
    fields = {"mixture_of_agents": "core"}
    for impl in pm.hook.gallama_request_fields.get_hookimpls():
        for field in impl.function() or []:
            fields[field.name] = impl.plugin_name
    models = ModelManager(registry, launcher=InProcessLauncher(registry.get), strict_names=strict_names,
                          progress_factory=progress_factory)
    state = AppState(pm=pm, registry=registry, plugin_config=load_plugin_config(sections), request_fields=fields,
                     models=models, log_level=log_level)
    if not in_process:
        models.launcher = pm.hook.gallama_worker_launcher(app_state=state)
    return state


def _route_keys(router) -> set[tuple[str, str]]:
    return {(method, route.path) for route in router.routes for method in (getattr(route, "methods", None) or ("GET",))
            if getattr(route, "path", None)}


def _mount_plugin_routes(app: FastAPI, state: AppState, taken: set[tuple[str, str]]) -> None:
    for impl in state.pm.hook.gallama_routes.get_hookimpls():
        for router in impl.function(app_state=state) or []:
            keys = _route_keys(router)
            clash = sorted(keys & taken)
            if clash:
                method, path = clash[0]
                raise ConfigError(f"plugin {impl.plugin_name!r} route {method} {path} collides with an existing route")
            taken |= keys
            app.include_router(router)


def _error(request: Request, envelope: dict, status_code: int, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(request.url.path, envelope, status_code), status_code=status_code,
                        headers=headers)


def create_app(state: AppState, models: list[ModelSettings] | None = None,
               surface: SurfaceConfig | None = None, log_prompts: bool = False) -> FastAPI:
    """The server app; ``models`` start loading when the app starts (``/health`` is 503 until ready).

    ``surface`` (keys, Host check, CORS, content type, body size: :mod:`gallama_core.api.security`) is what
    ``gallama run`` always passes; without it (in-process unit tests) every route is open."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for settings in models or []:
            state.models.start_loading(settings, initial=True)
        yield
        await state.models.close()

    # Swagger UI and ReDoc from the assets fastapi-offline ships: /docs works without internet
    app = FastAPIOffline(title="gallama", description="OpenAI-compatible server for local agentic work",
                         lifespan=lifespan, static_url=DOCS_ASSETS)
    app.state.gallama = state
    app.state.surface = surface
    state.telemetry = Telemetry(state.models, log_prompts=log_prompts)

    @app.exception_handler(GallamaError)
    async def gallama_error(request: Request, exc: GallamaError):
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, QueueFullError) else None
        return _error(request, exc.envelope(), exc.status_code, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(request, error_envelope(f"{param}: {first['msg']}", param=param or None), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error(request, error_envelope(f"{request.method} {request.url.path}: {exc.detail}", kind),
                      exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error serving %s", request.url.path)
        return _error(request, error_envelope(f"internal error: {type(exc).__name__}", "server_error"), 500)

    core = core_router(state)
    app.include_router(core)
    app.include_router(anthropic_router(state))
    app.include_router(responses_router(state))
    _mount_plugin_routes(app, state, _route_keys(app.router))
    if surface is not None:
        app.add_middleware(SurfaceMiddleware, config=surface, classify=route_classifier(app),
                           draining=lambda: state.draining)
    app.add_middleware(RequestLogMiddleware, telemetry=state.telemetry)  # outermost: refusals are logged too
    default_openapi = app.openapi

    def openapi():
        if app.openapi_schema is None:
            app.openapi_schema = add_body_schemas(default_openapi())
        return app.openapi_schema

    app.openapi = openapi
    return app
