"""gallama core: hook specifications, plugin manager, OpenAI protocol, serving pipeline and CLI.

Plugins implement hooks with :data:`hookimpl`::

    from gallama_core import hookimpl

    @hookimpl
    def gallama_backends():
        return [BackendSpec(name="mine", settings_model=MySettings, load=load_mine)]
"""

import pluggy

__version__ = "0.1.0"

#: Marker for hook implementations in plugins.
hookimpl = pluggy.HookimplMarker("gallama")

__all__ = ["hookimpl", "__version__"]
