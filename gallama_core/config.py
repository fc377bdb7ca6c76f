"""The gallama home folder, ``model_config.yaml`` and the ``-id "key=value ..."`` launch syntax."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from gallama_core.models.registry import DEFAULT_BACKEND, BackendRegistry, normalize_backend_name
from gallama_core.errors import ConfigError
from gallama_core.models.settings import ForeignModelSettings, ModelSettings

MODEL_CONFIG_FILE = "model_config.yaml"
PLUGIN_CONFIG_FILE = "gallama.yaml"

MODEL_CONFIG_EXAMPLE = """\
# gallama model configuration: one entry per model, keyed by the name clients use in `model`.
# `gallama run NAME` or `gallama run -id "model_id=NAME key=value ..."` serves an entry; keys given with
# -id override the entry's. Keys (all optional but model_id):
#   model_id:       path to the model (a folder for exllama/embedding, a .gguf file for llama_cpp) or hub id
#   backend:        exllama | exllamav3 | llama_cpp | embedding   (default: guessed from the path, else exllama)
#   gpus:           VRAM in GB per GPU, e.g. [20, 15, 0]; leave out for auto split
#   cache_size:     KV cache size in tokens (shared by concurrent requests)
#   cache_quant:    FP16 | Q4 | Q6 | Q8
#   max_seq_len:    longest prompt + answer one request may use
#   tp:             true for tensor parallel (exllama)
#   draft_model_id, draft_model_name, draft_gpus, draft_cache_size, draft_cache_quant: speculative decoding
# Backends may accept more keys (e.g. llama_cpp: n_parallel, n_threads); `gallama run --help` lists them.
#
# Example:
# mistral:
#   model_id: /models/Mistral-7B-Instruct-v0.3-exl2-4.0bpw
#   backend: exllama
#   cache_quant: Q8
#   max_seq_len: 32768
#
# smollm2:
#   model_id: /models/SmolLM2-135M-Instruct.Q4_1.gguf
#   backend: llama_cpp
"""


def gallama_home() -> Path:
    """``$GALLAMA_HOME_PATH`` or ``~/gallama``."""
    return Path(os.environ.get("GALLAMA_HOME_PATH") or Path.home() / "gallama").expanduser()


def ensure_home() -> Path:
    """Create the home folder and a commented ``model_config.yaml`` on first run."""
    home = gallama_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / MODEL_CONFIG_FILE
    if not config.exists():
        config.write_text(MODEL_CONFIG_EXAMPLE)
    return home


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of model names to settings")
    return data


def load_model_config() -> dict[str, dict[str, Any]]:
    path = gallama_home() / MODEL_CONFIG_FILE
    entries = _read_yaml(path)
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: model {name!r}: expected a mapping of settings, got {entry!r}")
    return entries


def parse_id_string(text: str) -> dict[str, str]:
    """``"model_id=mistral gpus=20,15 cache_quant=Q8"`` -> ``{"model_id": "mistral", ...}``."""
    result: dict[str, str] = {}
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"-id {text!r}: {exc}") from None
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ConfigError(f"-id {text!r}: expected key=value pairs, got {token!r}")
        if key in result:
            raise ConfigError(f"-id {text!r}: key {key!r} given twice")
        result[key.strip()] = value.strip()
    if "model_id" not in result:
        raise ConfigError(f"-id {text!r}: model_id is required")
    return result


def format_validation_error(model: str, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(entry)"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key {key!r}")
        else:
            problems.append(f"key {key!r}: {err['msg']}")
    return f"model {model!r}: " + "; ".join(problems)


class BackendEnvironment(BaseModel):
    """Where a backend's engine workers run (``backends: {NAME: {...}}`` in ``gallama.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    python: str | None = None


class BackendsSection(RootModel[dict[str, BackendEnvironment]]):
    """The core's ``backends:`` section of ``gallama.yaml``: per backend name, its worker environment::

        backends:
          exllamav3:
            python: /opt/venvs/exl3/bin/python   # workers of exllamav3 models run in that environment
    """

    def python_for_backend(self) -> dict[str, str]:
        from gallama_core.models.registry import normalize_backend_name

        return {normalize_backend_name(name): env.python for name, env in self.root.items() if env.python}


class ServerSection(BaseModel):
    """The core's ``server:`` section of ``gallama.yaml`` (command-line options and ``GALLAMA_*`` variables add to
    it or override it)::

        server:
          api_keys: [sk-local-1]          # inference routes need one of these (or the admin key)
          admin_keys: [sk-admin]          # model management needs one of these
          cors_origins: [http://localhost:3000]
          max_body_mb: 8
          stored_responses: 256           # /v1/responses kept in memory for previous_response_id
    """

    model_config = ConfigDict(extra="forbid")

    api_keys: list[str] = []
    admin_keys: list[str] = []
    cors_origins: list[str] = []
    max_body_mb: float = Field(8.0, gt=0, le=1024)
    #: Folders that /add_model may load model files from (default: the home's models/).
    model_dirs: list[str] = []
    #: Answers of ``/v1/responses`` kept in memory (least recently used first out) so that a later request can
    #: continue them with ``previous_response_id``; 0 refuses ``store``.
    stored_responses: int = Field(256, ge=0, le=100_000)


#: Sections of ``gallama.yaml`` the core owns (plugins register theirs with ``gallama_config_sections``).
CORE_CONFIG_SECTIONS: dict[str, type[BaseModel]] = {"backends": BackendsSection, "server": ServerSection}


def unknown_model_error(name: str, entries: dict[str, dict[str, Any]], catalog: list | None) -> ConfigError:
    """What to say about a model name that is neither configured nor a path: what exists, and how to get it."""
    known = next((e for e in catalog or [] if e.name.lower() == name.lower()), None)
    if known is not None:
        quant = next(iter(known.quantizations), "QUANT")
        return ConfigError(f"model {known.name!r} is not downloaded yet: run `gallama download {known.name}:{quant} "
                           f"--backend {known.backend}` (quantizations: {', '.join(known.quantizations)}), then "
                           f"`gallama run {known.name}`")
    configured = ", ".join(sorted(entries)) or "none"
    return ConfigError(f"unknown model {name!r}: it is not an entry of {gallama_home() / MODEL_CONFIG_FILE} "
                       f"(entries: {configured}) nor a file or folder. `gallama list available` shows the models "
                       "`gallama download NAME:QUANT` can fetch; `gallama run` alone serves the built-in default.")


def resolve_model_settings(raw: dict[str, Any], registry: BackendRegistry,
                           config_entries: dict[str, dict[str, Any]] | None = None,
                           python_for_backend: dict[str, str] | None = None,
                           catalog: list | None = None) -> ModelSettings:
    """Merge a launch request with its ``model_config.yaml`` entry and validate it with the backend's model.

    A backend that is not installed in the server's environment is accepted when the model's worker runs in
    another one (``python`` in the entry, or for its backend in ``gallama.yaml``): the worker validates it."""
    entries = load_model_config() if config_entries is None else config_entries
    raw = dict(raw)
    model_id = str(raw.get("model_id", ""))
    label = raw.get("model_name") or model_id
    merged: dict[str, Any] = {}
    if model_id in entries:
        merged.update(entries[model_id])
        merged.setdefault("model_name", model_id)
    merged.update({k: v for k, v in raw.items() if k != "model_id"})
    merged["model_id"] = str(merged.get("model_id", model_id)) if model_id in entries else model_id
    backend = merged.get("backend")
    if not backend:
        backend = registry.detect(merged["model_id"])
        if backend is None and model_id not in entries and not _exists(merged["model_id"]):
            raise unknown_model_error(model_id, entries, catalog)  # not "backend 'exllama' is not installed"
        backend = backend or DEFAULT_BACKEND
    foreign = (merged.get("python") or (python_for_backend or {}).get(normalize_backend_name(str(backend))))
    try:
        spec = registry.get(str(backend))
    except ConfigError:
        if not foreign:
            raise
        settings_model, merged["backend"] = ForeignModelSettings, normalize_backend_name(str(backend))
    else:
        settings_model, merged["backend"] = spec.settings_model, spec.name
    try:
        return settings_model.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(label), exc)) from None


def _exists(path: str) -> bool:
    try:
        return Path(path).expanduser().exists()
    except (OSError, ValueError):
        return False


def model_dirs(section: BaseModel | None = None) -> list[Path]:
    """Where models asked for over HTTP may live: ``server.model_dirs`` of gallama.yaml, else the home's ``models/``."""
    configured = list(getattr(section, "model_dirs", None) or [])
    return [Path(d).expanduser() for d in configured] or [gallama_home() / "models"]


def check_requested_model(raw: dict[str, Any], entries: dict[str, dict[str, Any]], folders: list[Path],
                          catalog: list | None = None) -> None:
    """A model asked for over HTTP (``/add_model``) names only what the operator made available: an entry of
    ``model_config.yaml``, or a path inside one of the model folders (symbolic links resolved, so ``..`` and links
    out are refused too). The refusal says nothing about whether a path exists. An interpreter (``python``) can
    only come from the configuration files, never from a request."""
    if "python" in raw:
        raise ConfigError("'python' can only be set in model_config.yaml or gallama.yaml, not in a request")
    roots = [os.path.realpath(folder) for folder in folders]
    for key in ("model_id", "draft_model_id"):
        value = raw.get(key)
        if value is None or (key == "model_id" and str(value) in entries):
            continue
        try:
            real = os.path.realpath(os.path.expanduser(str(value)))
        except (ValueError, OSError):  # NUL bytes, unencodable text: no such path can be inside a folder
            real = ""
        if real and any(real == root or real.startswith(root + os.sep) for root in roots):
            continue
        known = next((e for e in catalog or [] if e.name.lower() == str(value).lower()), None)
        if known is not None and key == "model_id":
            quant = next(iter(known.quantizations), "QUANT")
            raise ConfigError(f"model {known.name!r} is in the catalog but not downloaded: run `gallama download "
                              f"{known.name}:{quant} --backend {known.backend}` on the server, then add it")
        raise ConfigError(f"{key} {str(value)!r} is neither an entry of model_config.yaml nor a path inside the "
                          f"model folders ({', '.join(str(f) for f in folders)})")


def load_plugin_config(sections: dict[str, type[BaseModel]]) -> dict[str, BaseModel]:
    """Validate ``gallama.yaml`` in the home: each top-level key belongs to one plugin's section."""
    path = gallama_home() / PLUGIN_CONFIG_FILE
    data = _read_yaml(path)
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(f"{path}: no installed plugin owns the section(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(sections)) or 'none'})")
    result = {}
    for name, model in sections.items():
        try:
            result[name] = model.model_validate(data.get(name) or {})
        except ValidationError as exc:
            raise ConfigError(f"{path}: section {name!r}: " + format_validation_error(name, exc)
                              .split(": ", 1)[1]) from None
    return result
