"""Running the front: uvicorn, with gallama's own exit rules."""

from __future__ import annotations

import contextlib

import uvicorn


class FrontServer(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM or Ctrl+C that shut the server down in order ends the process with
    exit code 0 (uvicorn re-raises the signal after its shutdown, so the process would die by it: -15 for a
    SIGTERM, which service managers report as a failure). The shutdown itself is uvicorn's: stop accepting,
    finish or cut open connections, then the app's lifespan, which stops every engine worker."""

    @contextlib.contextmanager
    def capture_signals(self):
        with super().capture_signals():
            yield
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()


def serve(app, host: str, port: int, log_level: str, graceful_s: float = 5) -> None:
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=graceful_s)
    FrontServer(config).run()
