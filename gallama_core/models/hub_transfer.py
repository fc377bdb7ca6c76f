"""Resumable downloads from the Hugging Face hub, with rich progress per file.

huggingface_hub does everything but the transfer: the endpoint (``HF_ENDPOINT``), the token (``HF_TOKEN``),
offline mode (``HF_HUB_OFFLINE``), resolving a revision to its commit, listing a repository's files, its HTTP
session. The transfer is ours because huggingface_hub (1.x) restarts from zero a file that an interrupted
process left half done; here the bytes already on disk (``FILE.part``, next to the destination) are kept and the
rest is asked for with an HTTP range, so Ctrl+C and the same command continues where it stopped.
"""

from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from pathlib import Path

from gallama_core.errors import ConfigError

CHUNK = 1 << 16


def _hub():
    from huggingface_hub import HfApi, constants, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    return HfApi, constants, hf_hub_url, build_hf_headers


@contextmanager
def _get(url: str, headers: dict[str, str]):
    """A streamed GET through huggingface_hub's own session (httpx from 1.0, requests before: both work, as
    plugins such as gallama-embed still pin huggingface_hub < 1.0); yields (status, iterator of byte chunks)."""
    from huggingface_hub.utils import get_session

    session = get_session()
    if callable(getattr(session, "stream", None)):  # httpx (a requests session has a boolean .stream)
        with session.stream("GET", url, headers=headers, follow_redirects=True, timeout=60) as response:
            yield response.status_code, response.iter_bytes(CHUNK)
    else:  # requests
        response = session.get(url, headers=headers, stream=True, allow_redirects=True, timeout=60)
        try:
            yield response.status_code, response.iter_content(CHUNK)
        finally:
            response.close()


def resolve(repo: str, revision: str | None, file: str | None, include: list[str]) -> tuple[str, list[tuple[str, int | None]]]:
    """The commit of ``revision`` and the files to fetch with their sizes: ``file`` alone, or every file of
    the revision that matches ``include`` (all files without it)."""
    HfApi, constants, _, _ = _hub()
    if constants.HF_HUB_OFFLINE:
        raise ConfigError("HF_HUB_OFFLINE is set: downloads are off")
    api = HfApi()
    commit = api.model_info(repo, revision=revision).sha or revision or "main"
    from huggingface_hub.hf_api import RepoFile

    listing = [(entry.path, entry.size) for entry in api.list_repo_tree(repo, revision=commit, recursive=True)
               if isinstance(entry, RepoFile)]
    if file is not None:
        chosen = [(path, size) for path, size in listing if path == file]
        if not chosen:
            raise ConfigError(f"{repo} has no file {file!r} at {revision or 'main'}")
        return commit, chosen
    chosen = [(path, size) for path, size in listing
              if not include or any(fnmatch.fnmatch(path, pattern) for pattern in include)]
    if not chosen:
        raise ConfigError(f"no file of {repo} at {revision or 'main'} matches {', '.join(include)}")
    return commit, chosen


def fetch(repo: str, commit: str, files: list[tuple[str, int | None]], target: Path, console) -> list[Path]:
    """Download ``files`` into ``target`` (resuming partial files), one progress bar per file."""
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    paths = []
    with Progress(*columns, console=console, transient=False) as progress:
        for path, size in files:
            destination = target / path
            task = progress.add_task(path, total=size)
            _fetch_one(repo, commit, path, size, destination, lambda n, t=task: progress.update(t, advance=n),
                       lambda done, t=task: progress.update(t, completed=done))
            paths.append(destination)
    return paths


def _fetch_one(repo: str, commit: str, path: str, size: int | None, destination: Path, advance, set_done) -> None:
    _, _, hf_hub_url, build_hf_headers = _hub()
    if destination.exists() and (size is None or destination.stat().st_size == size):
        set_done(destination.stat().st_size)
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    headers = build_hf_headers()
    if have and (size is None or have < size):
        headers["Range"] = f"bytes={have}-"
    if size is None or have < size:
        with _get(hf_hub_url(repo, path, revision=commit), headers) as (status, chunks):
            if status != 416:  # 416: nothing left to send, the part is the whole file
                if status >= 400:
                    raise ConfigError(f"{repo}/{path}: HTTP {status}")
                if have and status != 206:  # the server ignored the range: start over
                    have = 0
                set_done(have)
                with open(part, "ab" if have else "wb") as out:
                    for chunk in chunks:
                        out.write(chunk)
                        out.flush()
                        advance(len(chunk))
    else:
        set_done(have)
    if size is not None and part.stat().st_size != size:
        raise ConfigError(f"{repo}/{path}: got {part.stat().st_size} of {size} bytes (run again to resume)")
    part.replace(destination)
