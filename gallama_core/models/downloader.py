"""``gallama download``: fetch a catalog model (or any hub repository), show rich progress per file, resume an
interrupted download (:mod:`gallama_core.models.hub_transfer`), and register the model in ``model_config.yaml``.

huggingface_hub reads ``HF_TOKEN``, ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` itself. Each downloaded model folder
holds a ``.gallama-download.json`` record (name, backend, quantization, source): what ``gallama list downloaded``
and ``gallama remove`` read, and how a second download of the same model knows it has nothing to do.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gallama_core.config import MODEL_CONFIG_FILE, ensure_home, load_model_config
from gallama_core.errors import ConfigError
from gallama_core.models.registry import normalize_backend_name
from gallama_core.plugin_system.registrations import CatalogEntry

RECORD = ".gallama-download.json"
#: Which backend's files ``gallama download`` fetches when ``--backend`` is not given and several installed
#: backends have the model (the spec's default first).
BACKEND_PREFERENCE = ("exllama", "exllamav3", "llama_cpp", "embedding")


@dataclass
class DownloadPlan:
    """What to fetch and where: a file of a repository (GGUF) or a snapshot of one revision (folders)."""

    name: str
    backend: str | None
    quant: str | None
    repo: str
    revision: str | None = None
    file: str | None = None
    include: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def folder_name(self) -> str:
        return "-".join(filter(None, [self.name, self.quant, self.backend]))

    def source(self) -> dict[str, Any]:
        return {"repo": self.repo, "revision": self.revision, "file": self.file, "include": self.include}


# ------------------------------------------------------------------------------------------------ planning


def _split_source(source: str) -> tuple[str, str | None, str | None]:
    repo_and_rev, _, filename = source.partition("#")
    repo, _, revision = repo_and_rev.partition("@")
    return repo, revision or None, filename or None


def plan_catalog_download(spec: str, backend: str | None, catalog: list[CatalogEntry],
                          installed: list[str]) -> DownloadPlan:
    """The plan for ``NAME[:QUANT]``; errors list what exists (names, backends, quantizations)."""
    name, _, quant = spec.partition(":")
    matches = [e for e in catalog if e.name.lower() == name.strip().lower()]
    if not matches:
        names = ", ".join(sorted({e.name for e in catalog})) or "none (install a backend plugin)"
        raise ConfigError(f"{name!r} is not in the catalog. Known models: {names}. See `gallama list available`, "
                          "or fetch any hub repository with `gallama download --repo OWNER/NAME`.")
    installed = [normalize_backend_name(b) for b in installed]
    if backend is not None:
        wanted = normalize_backend_name(backend)
        entry = next((e for e in matches if normalize_backend_name(e.backend) == wanted), None)
        if entry is None:
            raise ConfigError(f"{matches[0].name} is not available for backend {backend!r}; available for: "
                              + ", ".join(sorted(e.backend for e in matches)))
    else:
        usable = [e for e in matches if normalize_backend_name(e.backend) in installed]
        if not usable:
            backends = ", ".join(sorted(e.backend for e in matches))
            raise ConfigError(f"{matches[0].name} is available for {backends}, and none of these backends is "
                              "installed; install one, or pass --backend to fetch its files anyway")
        usable.sort(key=lambda e: BACKEND_PREFERENCE.index(normalize_backend_name(e.backend))
                    if normalize_backend_name(e.backend) in BACKEND_PREFERENCE else len(BACKEND_PREFERENCE))
        entry = usable[0]
    if not quant:
        quant = next(iter(entry.quantizations))
    if quant not in entry.quantizations:
        raise ConfigError(f"{entry.name} has no {quant} quantization for {entry.backend}; available: "
                          + ", ".join(entry.quantizations))
    repo, revision, filename = _split_source(entry.quantizations[quant])
    pattern = filename if filename and "*" in filename else None
    return DownloadPlan(name=entry.name, backend=normalize_backend_name(entry.backend), quant=quant, repo=repo,
                        revision=revision, file=None if pattern else filename, include=[pattern] if pattern else [],
                        settings=dict(entry.default_settings))


def plan_repo_download(repo: str, revision: str | None, include: list[str], name: str | None,
                       backend: str | None) -> DownloadPlan:
    """The plan for ``--repo OWNER/NAME`` (a model outside the catalog)."""
    from gallama_core.models.catalog import REPO_ID

    if not REPO_ID.match(repo):
        raise ConfigError(f"--repo {repo!r} is not a hub repository id (OWNER/NAME)")
    default = repo.split("/", 1)[1] + (f"-{revision}" if revision and revision != "main" else "")
    return DownloadPlan(name=name or default, backend=normalize_backend_name(backend) if backend else None,
                        quant=None, repo=repo, revision=revision, include=list(include))


# ------------------------------------------------------------------------------------------------ fetching


def _fetch(plan: DownloadPlan, target: Path, console) -> Path:
    """Download the plan's files; the path to serve: the file (the first part of a split GGUF) or the folder."""
    from gallama_core.models import hub_transfer

    commit, files = hub_transfer.resolve(plan.repo, plan.revision, plan.file, plan.include)
    paths = hub_transfer.fetch(plan.repo, commit, files, target, console)
    ggufs = sorted(p for p in paths if p.suffix == ".gguf")
    if plan.file or (ggufs and not (target / "config.json").exists()):
        return ggufs[0] if ggufs else paths[0]
    return target


def _has_downloaded_bytes(folder: Path) -> bool:
    return folder.exists() and any(p.is_file() and p.stat().st_size > 0 for p in folder.rglob("*"))


def read_record(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None


def download(plan: DownloadPlan, console, detect_backend=None) -> tuple[Path, bool]:
    """Fetch the plan's files into the models folder and register the model; ``(model path, fetched)``.

    A model already downloaded from the same source is not fetched again (``fetched`` is False). An interrupted
    download resumes when run again (huggingface_hub keeps the partial files); one that fails before any byte
    arrived leaves no folder and no config entry behind."""
    home = ensure_home()
    target = home / "models" / plan.folder_name
    record = read_record(target)
    if record is not None and record.get("source") == plan.source() and Path(record["path"]).exists():
        _register(home, plan, Path(record["path"]), record.get("backend"))
        return Path(record["path"]), False
    existed = target.exists()
    where = plan.repo + (f"@{plan.revision}" if plan.revision else "") + (f" {plan.file}" if plan.file else "")
    console.print(f"Downloading {where} to {target} (Ctrl+C stops; the same command resumes)")
    try:
        path = _fetch(plan, target, console)
    except KeyboardInterrupt:
        _clean_failed(target, existed)
        raise
    except Exception as exc:
        _clean_failed(target, existed)
        raise ConfigError(f"download of {where} failed: {_reason(exc)}") from None
    backend = plan.backend or (detect_backend(str(path)) if detect_backend else None)
    record = {"name": plan.name, "backend": backend, "quant": plan.quant, "path": str(path), "source": plan.source()}
    (target / RECORD).write_text(json.dumps(record, indent=1))
    _register(home, plan, path, backend)
    return path, True


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _clean_failed(target: Path, existed: bool) -> None:
    if not existed and not _has_downloaded_bytes(target):
        shutil.rmtree(target, ignore_errors=True)


def _register(home: Path, plan: DownloadPlan, path: Path, backend: str | None) -> None:
    """Add (or update) the model's entry in model_config.yaml, keeping the file's comments when adding."""
    config_path = home / MODEL_CONFIG_FILE
    entries = load_model_config()
    entry: dict[str, Any] = {"model_id": str(path), **({"backend": backend} if backend else {}), **plan.settings}
    current = entries.get(plan.name)
    if current == entry:
        return
    if current is None:
        with open(config_path, "a", encoding="utf-8") as out:
            out.write("\n" + yaml.safe_dump({plan.name: entry}, sort_keys=False))
    else:
        entries[plan.name] = {**current, **entry}
        config_path.write_text(yaml.safe_dump(entries, sort_keys=False))


# ------------------------------------------------------------------------------------- listing, removing


def downloaded_models() -> list[dict[str, Any]]:
    """One record per downloaded model folder, with its size on disk."""
    models = ensure_home() / "models"
    found = []
    for folder in sorted(models.iterdir()) if models.exists() else []:
        record = read_record(folder) if folder.is_dir() else None
        if record is None:
            continue
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        found.append({**record, "folder": str(folder), "bytes": size})
    return found


def remove_downloaded(name: str) -> list[dict[str, Any]]:
    """Delete the folders of a downloaded model and its model_config.yaml entry; the records removed."""
    records = [r for r in downloaded_models() if r["name"].lower() == name.lower()]
    if not records:
        have = ", ".join(sorted({r["name"] for r in downloaded_models()})) or "none"
        raise ConfigError(f"no downloaded model named {name!r} (downloaded: {have})")
    for record in records:
        shutil.rmtree(record["folder"], ignore_errors=True)
    home = ensure_home()
    entries = load_model_config()
    folders = [r["folder"] for r in records]
    stale = [key for key, entry in entries.items()
             if key.lower() == name.lower() and any(str(entry.get("model_id", "")).startswith(f) for f in folders)]
    if stale:
        for key in stale:
            entries.pop(key)
        (home / MODEL_CONFIG_FILE).write_text(yaml.safe_dump(entries, sort_keys=False) if entries else "")
    return records


def human_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"

