"""``gallama download NAME:QUANT``: fetch a catalog model with huggingface_hub and register it."""

from __future__ import annotations

from pathlib import Path

import yaml

from gallama_core.config import MODEL_CONFIG_FILE, ensure_home
from gallama_core.errors import ConfigError
from gallama_core.plugin_system.registrations import CatalogEntry
from gallama_core.models.registry import normalize_backend_name


def find_entry(spec: str, backend: str, catalog: list[CatalogEntry]) -> tuple[CatalogEntry, str]:
    name, _, quant = spec.partition(":")
    backend = normalize_backend_name(backend)
    matches = [e for e in catalog if e.name.lower() == name.lower()]
    if not matches:
        raise ConfigError(f"{name!r} is not in the catalog; see `gallama list available`")
    for entry in matches:
        if normalize_backend_name(entry.backend) == backend or entry.kind == "embedding":
            if not quant:
                quant = next(iter(entry.quantizations))
            if quant not in entry.quantizations:
                raise ConfigError(f"{name} has no {quant} quantization for {entry.backend}; available: "
                                  + ", ".join(entry.quantizations))
            return entry, quant
    raise ConfigError(f"{name} is not available for backend {backend}; available for: "
                      + ", ".join(e.backend for e in matches))


def download_catalog_model(spec: str, backend: str, catalog: list[CatalogEntry], console) -> Path:
    entry, quant = find_entry(spec, backend, catalog)
    source = entry.quantizations[quant]
    repo_and_rev, _, filename = source.partition("#")
    repo_id, _, revision = repo_and_rev.partition("@")
    home = ensure_home()
    target = home / "models" / f"{entry.name}-{quant}-{normalize_backend_name(entry.backend)}"
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError as exc:
        raise ConfigError(f"huggingface_hub is needed for downloads: {exc}") from None
    console.print(f"Downloading {repo_id}{'@' + revision if revision else ''} to {target} (resumable: re-run after Ctrl+C)")
    try:
        if filename:
            path = Path(hf_hub_download(repo_id, filename, revision=revision or None, local_dir=target))
        else:
            path = Path(snapshot_download(repo_id, revision=revision or None, local_dir=target))
    except Exception as exc:
        raise ConfigError(f"download of {repo_id} failed: {exc}") from None
    config_path = home / MODEL_CONFIG_FILE
    entries = yaml.safe_load(config_path.read_text()) or {}
    entries[entry.name] = {"model_id": str(path), "backend": normalize_backend_name(entry.backend),
                           **entry.default_settings}
    with open(config_path, "a") as out:
        out.write("\n" + yaml.safe_dump({entry.name: entries[entry.name]}, sort_keys=False))
    return path
