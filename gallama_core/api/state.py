"""Server-wide state shared by routers and plugins."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pluggy
from pydantic import BaseModel

from gallama_core.models.registry import BackendRegistry
from gallama_core.models.manager import ModelManager


@dataclass
class AppState:
    pm: pluggy.PluginManager
    registry: BackendRegistry
    models: ModelManager
    plugin_config: dict[str, BaseModel] = field(default_factory=dict)
    #: request field name -> plugin that registered it
    request_fields: dict[str, str] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    log_level: str = "info"
    #: Request log and Prometheus metrics (:mod:`gallama_core.api.observability`), set by ``create_app``.
    telemetry: Any = None
    #: Set on SIGTERM / Ctrl+C: /health and new requests answer 503 while requests in flight finish.
    draining: bool = False

    def python_for_backend(self) -> dict[str, str]:
        """Backend name -> worker interpreter, from the ``backends:`` section of ``gallama.yaml``."""
        section = self.plugin_config.get("backends")
        return section.python_for_backend() if section is not None else {}
