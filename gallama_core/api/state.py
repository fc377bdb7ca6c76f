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
