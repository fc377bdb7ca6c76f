"""The plugin manager: core hook implementations plus every distribution in the ``gallama`` entry point group.

Environment:

- ``GALLAMA_PLUGINS``: comma-separated allow-list of plugin names (entry point names or distribution
  names); when set, only those load.
- ``GALLAMA_STRICT_PLUGINS=1``: a plugin that fails to load is fatal instead of skipped.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from importlib import metadata

import pluggy

from gallama_core.plugin_system import hookspecs

log = logging.getLogger("gallama.plugins")

ENTRY_POINT_GROUP = "gallama"

#: Hook implementations that ship with the core, registered before any plugin.
CORE_PLUGINS = {
    "core.format_enforcement": "gallama_core.pipeline.features.format_enforcement",
    "core.function_calling": "gallama_core.pipeline.features.function_calling",
    "core.generation": "gallama_core.pipeline.features.default_generation",
    "core.local_workers": "gallama_core.workers.local_workers",
}


class PluginLoadError(RuntimeError):
    pass


@dataclass
class PluginRecord:
    name: str
    distribution: str
    version: str
    hooks: list[str]
    error: str | None = None


_pm: pluggy.PluginManager | None = None
_records: list[PluginRecord] = []


def _allow_list() -> set[str] | None:
    raw = os.environ.get("GALLAMA_PLUGINS")
    if raw is None:
        return None
    return {item.strip().lower().replace("_", "-") for item in raw.split(",") if item.strip()}


def _strict() -> bool:
    return os.environ.get("GALLAMA_STRICT_PLUGINS", "").lower() in ("1", "true", "yes")


def _hooks_of(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    return sorted(h.name for h in (pm.get_hookcallers(plugin) or []))


def create_plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    """A fresh manager with the core's hooks and (optionally) every installed plugin."""
    pm = pluggy.PluginManager("gallama")
    pm.add_hookspecs(hookspecs)
    records: list[PluginRecord] = []
    from gallama_core import __version__

    for name, module_name in CORE_PLUGINS.items():
        module = importlib.import_module(module_name)
        pm.register(module, name=name)
        records.append(PluginRecord(name, "gallama-core", __version__, _hooks_of(pm, module)))

    if load_entry_points:
        allowed = _allow_list()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist_name = ep.dist.name if ep.dist else ep.module
            version = ep.dist.version if ep.dist else "?"
            if allowed is not None and not ({ep.name.lower().replace("_", "-"),
                                             dist_name.lower().replace("_", "-")} & allowed):
                continue
            if pm.has_plugin(ep.name):
                continue
            try:
                module = register_checked(pm, ep.load(), ep.name)
            except Exception as exc:  # one broken plugin must not take the server down
                message = f"plugin {ep.name!r} from distribution {dist_name} {version} failed to load: {exc!r}"
                if _strict():
                    raise PluginLoadError(message) from exc
                log.warning("%s (skipped; set GALLAMA_STRICT_PLUGINS=1 to make this fatal)", message)
                records.append(PluginRecord(ep.name, dist_name, version, [], error=repr(exc)))
                continue
            records.append(PluginRecord(ep.name, dist_name, version, _hooks_of(pm, module)))
    global _records
    _records = records
    return pm


def register_checked(pm: pluggy.PluginManager, plugin: object, name: str) -> object:
    """Register ``plugin``; a hook implementation matching no spec (a misspelled ``gallama_*`` name) makes
    the registration fail and is undone, so one bad plugin is reported instead of silently ignored."""
    pm.register(plugin, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError:
        pm.unregister(plugin)
        raise
    return plugin


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager, created on first use."""
    global _pm
    if _pm is None:
        _pm = create_plugin_manager()
    return _pm


def set_plugin_manager(pm: pluggy.PluginManager | None) -> None:
    """Replace the process-wide manager (tests)."""
    global _pm
    _pm = pm


def plugin_records() -> list[PluginRecord]:
    get_plugin_manager()
    return list(_records)


def model_catalog(pm: pluggy.PluginManager | None = None) -> list:
    """Every :class:`~gallama_core.plugin_system.registrations.CatalogEntry` the installed plugins know."""
    pm = pm or get_plugin_manager()
    return [entry for entries in pm.hook.gallama_model_catalog() for entry in entries or []]
