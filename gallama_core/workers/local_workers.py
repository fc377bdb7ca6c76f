"""The core's default ``gallama_worker_launcher``: one local engine-worker process per model instance."""

from __future__ import annotations

from gallama_core import hookimpl


@hookimpl(trylast=True)
def gallama_worker_launcher(app_state):
    from gallama_core.workers.launcher import LocalProcessLauncher

    backends = app_state.plugin_config.get("backends")
    return LocalProcessLauncher(python_for_backend=backends.python_for_backend() if backends is not None else {},
                                log_level=app_state.log_level)
