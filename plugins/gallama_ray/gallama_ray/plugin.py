"""gallama-ray's hooks: the ``ray:`` config section and, when a cluster address is given, the launcher that
puts model instances on it. Without an address nothing about Ray is imported."""

from __future__ import annotations

import os

from gallama_core import hookimpl
from gallama_core.plugin_system.registrations import ConfigSection

from .settings import RaySection

#: Set by ``gallama run --ray-address``; wins over ``ray.address`` in gallama.yaml.
ADDRESS_VARIABLE = "GALLAMA_RAY_ADDRESS"


@hookimpl
def gallama_config_sections():
    return [ConfigSection("ray", RaySection)]


@hookimpl
def gallama_worker_launcher(app_state):
    section = app_state.plugin_config.get("ray") or RaySection()
    address = os.environ.get(ADDRESS_VARIABLE) or section.address
    if not address:
        return None
    from .launcher import RayLauncher

    return RayLauncher(address, section, log_level=app_state.log_level)
