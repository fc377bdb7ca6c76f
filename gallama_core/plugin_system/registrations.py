"""Records that plugins return from registration hooks (see :mod:`gallama_core.plugin_system.hookspecs`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from pydantic import BaseModel

from gallama_core.models.settings import ModelSettings

if TYPE_CHECKING:
    from gallama_core.models.backend import Backend


@dataclass(frozen=True)
class BackendSpec:
    """A model engine a plugin provides.

    ``load`` is called once per model instance, in a worker thread, with the validated settings; it
    imports the engine lazily and returns a ready :class:`~gallama_core.models.backend.Backend`. ``detect``
    lets the backend claim a model path when the user named no backend (e.g. ``*.gguf``).
    """

    name: str
    settings_model: type[ModelSettings]
    load: Callable[[ModelSettings, "LoadProgress"], "Backend"]
    aliases: tuple[str, ...] = ()
    description: str = ""
    detect: Callable[[str], bool] | None = None


@dataclass(frozen=True)
class ConfigSection:
    """A plugin-owned top-level section of ``gallama.yaml`` in the gallama home, validated by ``model``."""

    name: str
    model: type[BaseModel]


@dataclass(frozen=True)
class RequestField:
    """An extra request field a plugin understands (sent with the OpenAI client's ``extra_body``).

    The core rejects fields nobody registered, and names the plugin that would own a well-known one.
    """

    name: str
    description: str = ""


@dataclass(frozen=True)
class CatalogEntry:
    """A downloadable model: ``gallama download NAME:QUANT --backend BACKEND``."""

    name: str
    backend: str
    quantizations: dict[str, str] = field(default_factory=dict)  # quant label -> "repo_id[@revision][#filename]"
    kind: str = "llm"  # llm | embedding
    default_settings: dict[str, Any] = field(default_factory=dict)


class LoadProgress:
    """What a backend's ``load`` reports while loading; the CLI shows it as a progress bar."""

    def __init__(self, callback: Callable[[str, float | None], None] | None = None):
        self._callback = callback

    def update(self, message: str, fraction: float | None = None) -> None:
        if self._callback is not None:
            self._callback(message, fraction)


AsyncCallable = Callable[..., Awaitable[Any]]
