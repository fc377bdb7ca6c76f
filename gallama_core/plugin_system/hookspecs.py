"""Every extension point of gallama, as pluggy hook specifications.

Plugins are Python distributions with an entry point in the ``gallama`` group; the module it names
implements some of these hooks with ``@gallama_core.hookimpl``. Hooks run at start-up or once per request,
never per token: per-token work lives in the objects the hooks return (a backend's generator, a compiled
grammar, a stream processor).

Registration hooks (called once at start-up):

- :func:`gallama_backends` — model engines
- :func:`gallama_config_sections` — plugin-owned sections of ``gallama.yaml``
- :func:`gallama_request_fields` — extra request fields a plugin understands
- :func:`gallama_routes` — HTTP routes
- :func:`gallama_commands` — CLI subcommands
- :func:`gallama_model_catalog` — models ``gallama download`` knows
- :func:`gallama_worker_launcher` — where model instances run (local processes by default)

Request hooks (called once per request, in this order):

- :func:`gallama_preprocess_request` — rewrite messages, prompt additions, prefixes, stop strings
- :func:`gallama_token_filters` — add constraints (regex, JSON schema, grammar, choice)
- :func:`gallama_generate` — produce the raw chunks (first result wins; the core's default calls the backend)
- :func:`gallama_postprocess_stream` — wrap the event stream (tool-call parsing, thinking split, artifacts)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, AsyncIterator, Callable

import pluggy

if TYPE_CHECKING:
    import typer
    from fastapi import APIRouter

    from gallama_core.api.state import AppState
    from gallama_core.models.backend import GenerationChunk, GenerationRequest
    from gallama_core.pipeline.constraints import Constraint
    from gallama_core.pipeline.context import RequestContext
    from gallama_core.plugin_system.registrations import BackendSpec, CatalogEntry, ConfigSection, RequestField
    from gallama_core.pipeline.stream_events import StreamEvent
    from gallama_core.workers.launcher import WorkerLauncher

hookspec = pluggy.HookspecMarker("gallama")

#: A function that wraps a stream of events into another stream of events.
StreamProcessor = Callable[["AsyncIterator[StreamEvent]"], "AsyncIterator[StreamEvent]"]


# ------------------------------------------------------------------------------------------ registration


@hookspec
def gallama_backends() -> list[BackendSpec]:
    """Return the model engines this plugin provides.

    Called at start-up. Each :class:`~gallama_core.plugin_system.registrations.BackendSpec` names the backend (``model
    entries say backend: NAME``), the pydantic model that validates its model entries (a subclass of
    :class:`~gallama_core.models.settings.ModelSettings`) and a ``load`` function that imports the engine
    lazily. Two plugins registering the same name is an error naming both.
    """


@hookspec
def gallama_config_sections() -> list[ConfigSection]:
    """Return the plugin's own sections of ``gallama.yaml`` (in the gallama home).

    Called at start-up; each section is validated by its pydantic model and the result is available as
    ``app_state.plugin_config[name]``. A section no plugin claims is reported as an error.
    """


@hookspec
def gallama_request_fields() -> list[RequestField]:
    """Return the extra request fields (``extra_body``) this plugin understands.

    Called at start-up. Requests carrying a field that no installed plugin registered get a 400.
    """


@hookspec
def gallama_routes(app_state: AppState) -> list[APIRouter]:
    """Return FastAPI routers to mount on the server (plugin endpoints, web UIs).

    Called once when the app is built. Two routers claiming the same method and path is an error.
    """


@hookspec
def gallama_commands(cli: typer.Typer) -> None:
    """Add subcommands to the ``gallama`` CLI (``@cli.command()``). Called when the CLI starts."""


@hookspec
def gallama_model_catalog() -> list[CatalogEntry]:
    """Return the models ``gallama download`` and ``gallama list available`` know, per backend."""


@hookspec(firstresult=True)
def gallama_worker_launcher(app_state: AppState) -> WorkerLauncher | None:
    """Return the launcher that starts this server's model instances, or None to leave it to others.

    Called once when the server state is built; the first non-None result is used. The core's own
    implementation (called last) starts one local engine-worker process per instance
    (:class:`~gallama_core.workers.launcher.LocalProcessLauncher`). A plugin returns its own
    :class:`~gallama_core.workers.launcher.WorkerLauncher` to place instances elsewhere (e.g. a Ray cluster),
    usually only when its configuration section asks for it. Everything above the ``Backend`` seam (routing,
    request hooks, features) is unchanged whatever the launcher.
    """


# ----------------------------------------------------------------------------------------- per request


@hookspec
def gallama_preprocess_request(ctx: RequestContext) -> None:
    """Adjust a request before its prompt is rendered.

    Called once per request after validation, in plugin registration order. Change ``ctx.messages``,
    ``ctx.system_prompt_additions``, ``ctx.assistant_prefix``, ``ctx.stop``, ``ctx.constraints``; raise
    :class:`~gallama_core.errors.InvalidRequestError` to refuse the request with a 400.
    """


@hookspec
def gallama_token_filters(ctx: RequestContext) -> list[Constraint]:
    """Return constraints for this request (regex, JSON schema, Lark grammar, choice).

    Called once per request after the prompt is rendered. The core compiles all constraints into one
    grammar and refuses the request (400, naming the field) when it does not compile or when two
    constraints conflict; each backend enforces the grammar with its own mechanism.
    """


@hookspec(firstresult=True)
def gallama_generate(ctx: RequestContext, request: GenerationRequest) -> AsyncIterator[GenerationChunk] | None:
    """Produce the raw generation for one choice of a request.

    Called once per choice; the first non-None result is used. The core's own implementation (called
    last) streams from the model's backend; a plugin can take over generation entirely (e.g. multi-pass
    strategies) by returning its own async iterator, usually built on ``ctx.backend.generate``.
    """


@hookspec
def gallama_postprocess_stream(ctx: RequestContext) -> StreamProcessor | None:
    """Return a processor that wraps the stream of :class:`~gallama_core.pipeline.stream_events.StreamEvent`.

    Called once per request. Processors are chained in plugin registration order (the first returned
    sees the backend's events first). They turn text into tool calls, reasoning or artifact parts; the
    core turns the final events into SSE chunks or one response.
    """
