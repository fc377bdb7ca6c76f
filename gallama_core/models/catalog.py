"""The model catalog as data: each backend plugin ships a ``catalog.yaml`` of the models ``gallama download``
can fetch for it, read and validated here (a malformed entry is an error naming the file and the entry).

.. code-block:: yaml

    - name: qwen-2.5-7B                       # what users type: gallama download qwen-2.5-7B:4.0
      repo: bartowski/Qwen2.5-7B-Instruct-GGUF
      quantizations:                          # bpw label -> a branch (EXL2/EXL3) or a file (GGUF)
        "4.0": {file: Qwen2.5-7B-Instruct-Q4_K_M.gguf}
        "5.0": {repo: other/repo, file: x.gguf}   # a quantization may live in another repo
        "8.0": {files: "Q8_0/*.gguf"}             # several files (a split GGUF: served from its first part)
      kind: llm                               # or embedding
      settings: {max_seq_len: 8192}           # optional model-entry defaults
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, field_validator, model_validator

from gallama_core.errors import ConfigError
from gallama_core.plugin_system.registrations import CatalogEntry

#: ``owner/name`` as the Hugging Face hub spells repository ids.
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")
#: A quantization label: bits per weight, as the spec writes them ("4.0", "2.75", "16.0").
QUANT_LABEL = re.compile(r"^\d{1,2}\.\d{1,2}$")


def _check_repo(value: str | None) -> str | None:
    if value is not None and (not REPO_ID.match(value) or ".." in value or value.endswith((".", "-"))):
        raise ValueError(f"{value!r} is not a hub repository id (owner/name)")
    return value


class QuantSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo: str | None = None
    revision: str | None = Field(None, min_length=1, max_length=128)
    file: str | None = Field(None, min_length=1, max_length=512)
    files: str | None = Field(None, min_length=1, max_length=512, description="a glob of main-branch files")

    _repo = field_validator("repo")(classmethod(lambda cls, v: _check_repo(v)))

    @model_validator(mode="after")
    def _one_source(self):
        given = [key for key in ("revision", "file", "files") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'revision' (a branch), 'file' (a file of the main branch) or "
                             "'files' (a glob of main-branch files)")
        path = self.file or self.files
        if path is not None and (path.startswith("/") or ".." in path.split("/")):
            raise ValueError(f"{path!r} must be a path inside the repository")
        if self.file is not None and "*" in self.file:
            raise ValueError(f"file {self.file!r} is a glob: use 'files'")
        if self.files is not None and "*" not in self.files:
            raise ValueError(f"files {self.files!r} is not a glob: use 'file'")
        return self

    def encoded(self, default_repo: str) -> str:
        """``repo_id[@revision][#filename or glob]``, the form :class:`CatalogEntry` keeps."""
        path = self.file or self.files
        return (self.repo or default_repo) + (f"@{self.revision}" if self.revision else "") + (f"#{path}" if path else "")


class CatalogFileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
    repo: str
    quantizations: dict[str, QuantSource] = Field(min_length=1)
    kind: Literal["llm", "embedding"] = "llm"
    settings: dict[str, Any] = Field(default_factory=dict)

    _repo = field_validator("repo")(classmethod(lambda cls, v: _check_repo(v)))

    @field_validator("quantizations")
    @classmethod
    def _labels(cls, value):
        for label in value:
            if not QUANT_LABEL.match(label):
                raise ValueError(f"quantization {label!r} is not a bits-per-weight label such as \"4.0\"")
        return value


class CatalogFile(RootModel[list[CatalogFileEntry]]):
    @model_validator(mode="after")
    def _unique(self):
        seen = set()
        for entry in self.root:
            if entry.name.lower() in seen:
                raise ValueError(f"model {entry.name!r} is listed twice")
            seen.add(entry.name.lower())
        return self


def load_catalog(path: str | Path, backend: str) -> list[CatalogEntry]:
    """The entries of one plugin's catalog file, for ``backend``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        parsed = CatalogFile.model_validate(data if data is not None else [])
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"model catalog {path}: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"model catalog {path}: {where}: {err['msg'].removeprefix('Value error, ')}") from None
    return [CatalogEntry(name=e.name, backend=backend, kind=e.kind, default_settings=dict(e.settings),
                         quantizations={label: q.encoded(e.repo) for label, q in e.quantizations.items()})
            for e in parsed.root]


def packaged_catalog(package: str, backend: str, filename: str = "catalog.yaml") -> list[CatalogEntry]:
    """The catalog file shipped inside a plugin's package (what its ``gallama_model_catalog`` hook returns)."""
    from importlib.resources import files

    return load_catalog(Path(str(files(package) / filename)), backend)
