"""Server-wide state shared by routers and plugins."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pluggy
from pydantic import BaseModel

from .backend_registry import BackendRegistry
from .model_manager import ModelManager


@dataclass
class AppState:
    pm: pluggy.PluginManager
    registry: BackendRegistry
    models: ModelManager
    plugin_config: dict[str, BaseModel] = field(default_factory=dict)
    #: request field name -> plugin that registered it
    request_fields: dict[str, str] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
