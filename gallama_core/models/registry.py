"""Backends collected from the ``gallama_backends`` hook, looked up by name or alias."""

from __future__ import annotations

import pluggy

from gallama_core.errors import ConfigError
from gallama_core.plugin_system.registrations import BackendSpec

# Backends the project ships as separate distributions: named in errors when one is not installed.
KNOWN_BACKEND_DISTRIBUTIONS = {
    "llama_cpp": "gallama-llamacpp",
    "exllama": "gallama-exllama",
    "exllamav3": "gallama-exllamav3",
    "embedding": "gallama-embed",
}
DEFAULT_BACKEND = "exllama"


def install_hint(distribution: str) -> str:
    """``pip install gallama-x (from a source checkout: pip install ./plugins/gallama_x)``: the distributions are
    not on the package index yet, so the hint must also work from a clone of the repository."""
    folder = distribution.replace("-", "_")
    return f"pip install {distribution} (from a source checkout: pip install ./plugins/{folder})"


def normalize_backend_name(name: str) -> str:
    key = name.strip().lower().replace("-", "_").replace(".", "_")
    return {"llamacpp": "llama_cpp", "exllamav2": "exllama", "exl2": "exllama", "exl3": "exllamav3",
            "embed": "embedding", "embeddings": "embedding", "infinity": "embedding"}.get(key, key)


class BackendRegistry:
    def __init__(self, pm: pluggy.PluginManager):
        self.specs: dict[str, BackendSpec] = {}
        self._aliases: dict[str, str] = {}
        owners: dict[str, str] = {}
        for impl in pm.hook.gallama_backends.get_hookimpls():
            for spec in impl.function() or []:
                name = normalize_backend_name(spec.name)
                for key in (name, *map(normalize_backend_name, spec.aliases)):
                    if key in owners and owners[key] != impl.plugin_name:
                        raise ConfigError(f"backend name {key!r} is registered by both plugin "
                                          f"{owners[key]!r} and plugin {impl.plugin_name!r}")
                    owners[key] = impl.plugin_name
                    self._aliases[key] = name
                self.specs[name] = spec

    def get(self, name: str) -> BackendSpec:
        key = self._aliases.get(normalize_backend_name(name))
        if key is None:
            wanted = normalize_backend_name(name)
            dist = KNOWN_BACKEND_DISTRIBUTIONS.get(wanted)
            hint = f" Install it with: {install_hint(dist)}" if dist else ""
            have = ", ".join(sorted(self.specs)) or "none"
            raise ConfigError(f"backend {name!r} is not installed (installed backends: {have}).{hint}")
        return self.specs[key]

    def detect(self, model_path: str) -> str | None:
        """The backend that claims a model path, when the user named none."""
        for name, spec in self.specs.items():
            if spec.detect is not None and spec.detect(model_path):
                return name
        return None
