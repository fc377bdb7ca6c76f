"""The ``gallama`` command line (typer + rich)."""

from __future__ import annotations

import logging
import os
from typing import List, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from gallama_core.errors import ConfigError

console = Console(stderr=True)
app = typer.Typer(help="gallama: an OpenAI-compatible LLM server for local agentic work (function calling for any "
                       "model, format enforcement, artifacts, thinking templates, several models at once).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
list_app = typer.Typer(help="List models.", no_args_is_help=True)
app.add_typer(list_app, name="list")


def _setup_logging(level: str) -> None:
    """Rich, colored lines on a terminal; plain one-line records (never wrapped) into files and journals."""
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False)
        logging.basicConfig(level=level.upper(), format="%(message)s", datefmt="[%X]", handlers=[handler], force=True)
    else:
        logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            handlers=[logging.StreamHandler()], force=True)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


@app.command()
def run(
    model: Optional[str] = typer.Argument(None, help="Name of a model_config.yaml entry (or a model path). "
                                                      "Omit to serve the built-in default, SmolLM2-135M-Instruct."),
    model_id: Optional[List[str]] = typer.Option(
        None, "-id", "--model-id", help='A model to serve, as "model_id=NAME key=value ...". Keys: model_id, '
        "model_name, gpus, cache_size, cache_quant (FP16/Q4/Q6/Q8), max_seq_len, backend, tp, draft_model_id, "
        "draft_model_name, draft_gpus, draft_cache_size, draft_cache_quant, plus backend-specific keys "
        "(llama_cpp: n_parallel, n_threads, n_gpu_layers). Repeat for several models."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    strict_model_names: bool = typer.Option(False, help="Answer 404 for any model name that is not loaded "
                                            "(by default a lone model of the right kind serves any name)."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
    api_key: Optional[List[str]] = typer.Option(
        None, "--api-key", help="A key that inference routes require (Authorization: Bearer KEY or x-api-key). "
        "Repeat for several; also GALLAMA_API_KEY (comma-separated) and server.api_keys in gallama.yaml."),
    admin_key: Optional[List[str]] = typer.Option(
        None, "--admin-key", help="The key that model management (/add_model, /remove_model...) requires; it also "
        "works for inference. Also GALLAMA_ADMIN_KEY. Without any key, management works only on a loopback bind."),
    cors_origin: Optional[List[str]] = typer.Option(
        None, "--cors-origin", help="A browser origin allowed to call the API (e.g. http://localhost:3000); CORS is "
        "off unless given. Repeatable."),
    max_body_mb: Optional[float] = typer.Option(None, help="Largest request body in MB (default 8): larger ones get "
                                                "a 413 before they are read."),
    log_prompts: bool = typer.Option(False, help="Put each request's rendered prompt in its log line (off by default: "
                                     "prompts stay out of logs)."),
    shutdown_timeout: float = typer.Option(30.0, min=0, help="On SIGTERM or Ctrl+C, seconds that requests in flight "
                                           "may take to finish (new ones get 503) before they are ended with an "
                                           "error; then the server exits 0."),
    ray_address: Optional[str] = typer.Option(
        None, help="Place every model instance on this Ray cluster instead of local processes: auto, HOST:PORT or "
        "ray://HOST:10001 (needs the gallama-ray plugin; also GALLAMA_RAY_ADDRESS and ray.address in gallama.yaml)."),
):
    """Serve models over the OpenAI API (chat, completions, models, health; plugin routes)."""
    from gallama_core.api.app import build_state, create_app
    from gallama_core.api.server import serve
    from gallama_core.config import ensure_home, load_model_config, parse_id_string, resolve_model_settings
    from gallama_core.models.default_model import DEFAULT_MODEL_NAME, ensure_default_model
    from gallama_core.plugin_system.registrations import LoadProgress

    _setup_logging(log_level)
    home = ensure_home()
    if ray_address:
        os.environ["GALLAMA_RAY_ADDRESS"] = ray_address  # read by gallama-ray's launcher hook
    try:
        state = build_state(strict_names=strict_model_names, log_level=log_level, progress_factory=lambda name: LoadProgress(
            lambda message, fraction: console.log(f"[cyan]{name}[/]: {message}"
                                                  + (f" ({fraction:.0%})" if fraction is not None else ""))))
        if os.environ.get("GALLAMA_RAY_ADDRESS") and "ray" not in state.plugin_config:  # before any model fetch
            _fail("--ray-address (GALLAMA_RAY_ADDRESS) needs the gallama-ray plugin: pip install gallama-ray")
        launches = [parse_id_string(text) for text in model_id or []]
        if model:
            launches.insert(0, {"model_id": model})
        if not launches:
            launches = [{"model_id": DEFAULT_MODEL_NAME}]
        entries = load_model_config()
        for raw in launches:  # the built-in default is addressable by its name (unless an entry takes the name)
            if str(raw["model_id"]).lower() == DEFAULT_MODEL_NAME.lower() and raw["model_id"] not in entries:
                raw.update({"model_id": str(ensure_default_model(say=console.log)), "backend": "llama_cpp"})
                raw.setdefault("model_name", DEFAULT_MODEL_NAME)
        settings = [resolve_model_settings(raw, state.registry, config_entries=entries, catalog=_catalog(),
                                           python_for_backend=state.python_for_backend()) for raw in launches]
    except ConfigError as exc:
        _fail(str(exc))
    surface = _surface(state, host, api_key, admin_key, cors_origin, max_body_mb)
    console.log(f"gallama home: {home}")
    if not surface.loopback and not surface.keys_set:
        console.log(f"[bold yellow]warning:[/] listening on {host} without --api-key: anyone who can reach this "
                    "address can use the models (model management stays disabled without --admin-key)")
    for s in settings:
        console.log(f"loading [cyan]{s.served_name}[/] with backend [magenta]{s.backend}[/] from {s.model_id}")
    console.log(f"OpenAI API at http://{host}:{port}/v1 (health: http://{host}:{port}/health)")
    code = serve(create_app(state, settings, surface=surface, log_prompts=log_prompts), host=host, port=port,
                 log_level=log_level.lower(), shutdown_timeout=shutdown_timeout, state=state)
    if code:
        raise typer.Exit(code)


def _surface(state, host: str, api_keys, admin_keys, cors_origins, max_body_mb):
    """What the front lets in: options, then GALLAMA_API_KEY / GALLAMA_ADMIN_KEY, then gallama.yaml's server:."""
    from gallama_core.api.security import SurfaceConfig

    section = state.plugin_config.get("server")

    def merged(given, variable: str, from_file) -> list[str]:
        values = list(given or []) + [v.strip() for v in os.environ.get(variable, "").split(",") if v.strip()]
        return list(dict.fromkeys(values + list(from_file or [])))

    return SurfaceConfig(
        api_keys=merged(api_keys, "GALLAMA_API_KEY", getattr(section, "api_keys", [])),
        admin_keys=merged(admin_keys, "GALLAMA_ADMIN_KEY", getattr(section, "admin_keys", [])),
        cors_origins=merged(cors_origins, "GALLAMA_CORS_ORIGIN", getattr(section, "cors_origins", [])),
        max_body_bytes=int((max_body_mb or getattr(section, "max_body_mb", 8.0)) * (1 << 20)), bind_host=host)


@app.command()
def plugins():
    """List the loaded plugins, their versions and the hooks they implement."""
    from gallama_core.plugin_system.manager import plugin_records

    table = Table(title="gallama plugins")
    for column in ("plugin", "distribution", "version", "hooks"):
        table.add_column(column)
    for record in plugin_records():
        hooks = f"[red]failed: {record.error}[/]" if record.error else ", ".join(record.hooks)
        table.add_row(record.name, record.distribution, record.version, hooks)
    Console().print(table)


def _catalog():
    from gallama_core.plugin_system.manager import model_catalog

    return model_catalog()


@list_app.command("available")
def list_available():
    """Models that `gallama download` knows, per backend and quantization."""
    table = Table(title="Downloadable models")
    for column in ("model", "backend", "kind", "quantizations"):
        table.add_column(column)
    for entry in sorted(_catalog(), key=lambda e: (e.name, e.backend)):
        table.add_row(entry.name, entry.backend, entry.kind, ", ".join(entry.quantizations))
    Console().print(table)


@list_app.command("downloaded")
def list_downloaded():
    """Models fetched with `gallama download`: name, backend, quantization, size on disk, path."""
    from gallama_core.models.downloader import downloaded_models, human_size

    table = Table(title="Downloaded models")
    for column in ("model", "backend", "quant", "size", "path"):
        table.add_column(column)
    for record in downloaded_models():
        table.add_row(record["name"], record.get("backend") or "?", record.get("quant") or "-",
                      human_size(record["bytes"]), record["path"])
    Console().print(table)


@app.command()
def download(
    model: Optional[str] = typer.Argument(None, help="NAME:QUANT from the catalog, e.g. qwen-2.5-7B:4.0 (see "
                                                     "`gallama list available`); the first quantization without :QUANT."),
    backend: Optional[str] = typer.Option(None, help="Which backend's files to fetch (exllama, exllamav3, llama_cpp, "
                                                     "embedding). Default: an installed backend that has the model "
                                                     "(exllama first)."),
    repo: Optional[str] = typer.Option(None, help="Any hub repository instead of a catalog model: OWNER/NAME."),
    revision: Optional[str] = typer.Option(None, help="With --repo: the branch, tag or commit (e.g. 4.0bpw)."),
    include: List[str] = typer.Option([], help="With --repo: fetch only files matching this glob (repeatable), "
                                               "e.g. --include '*Q4_K_M.gguf'."),
    name: Optional[str] = typer.Option(None, help="With --repo: the name to serve it under (default: the repo name)."),
):
    """Download a model from the Hugging Face hub and add it to model_config.yaml, so that `gallama run NAME`
    works right after. Progress per file; Ctrl+C and the same command resumes; HF_TOKEN, HF_ENDPOINT and
    HF_HUB_OFFLINE are honoured. Downloading a model again is a no-op."""
    from gallama_core.models import downloader

    try:
        if (model is None) == (repo is None):
            raise ConfigError("give a catalog model (NAME:QUANT) or --repo OWNER/NAME")
        if repo is None and (revision or include or name):
            raise ConfigError("--revision, --include and --name go with --repo")
        registry = _registry()
        if repo is not None:
            plan = downloader.plan_repo_download(repo, revision, include, name, backend)
        else:
            plan = downloader.plan_catalog_download(model, backend, _catalog(), installed=list(registry.specs))
        path, fetched = downloader.download(plan, console, detect_backend=registry.detect)
    except ConfigError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] run the same command to resume")
        raise typer.Exit(130)
    if not fetched:
        console.print(f"{plan.name} is already downloaded ({path}): nothing to do.")
    else:
        console.print(f"Downloaded to {path}.")
    console.print(f"Serve it with: gallama run {plan.name}")


@app.command()
def remove(
    model: str = typer.Argument(..., help="The name of a downloaded model (see `gallama list downloaded`)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
):
    """Delete a downloaded model's files and its model_config.yaml entry."""
    from gallama_core.models.downloader import downloaded_models, human_size, remove_downloaded

    records = [r for r in downloaded_models() if r["name"].lower() == model.lower()]
    if records and not yes:
        size = human_size(sum(r["bytes"] for r in records))
        folders = ", ".join(r["folder"] for r in records)
        if not typer.confirm(f"Delete {model} ({size}: {folders})?"):
            raise typer.Exit(1)
    try:
        removed = remove_downloaded(model)
    except ConfigError as exc:
        _fail(str(exc))
    console.print(f"Removed {model}: {human_size(sum(r['bytes'] for r in removed))} freed.")


def _registry():
    from gallama_core.models.registry import BackendRegistry
    from gallama_core.plugin_system.manager import get_plugin_manager

    return BackendRegistry(get_plugin_manager())


def main() -> None:
    """Console-script entry point: adds plugin commands, then runs the CLI."""
    if os.environ.get("GALLAMA_NO_PLUGIN_COMMANDS") != "1":
        try:
            from gallama_core.plugin_system.manager import get_plugin_manager

            get_plugin_manager().hook.gallama_commands(cli=app)
        except Exception as exc:  # a strict-mode plugin failure: say it plainly
            console.print(f"[bold red]error:[/] {exc}")
            raise SystemExit(2)
    app()
