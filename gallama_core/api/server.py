"""Running the front: uvicorn, with gallama's own shutdown (drain) and exit rules.

On SIGTERM or Ctrl+C the front **drains**: ``/health`` and new requests answer 503 (a load balancer stops sending),
uvicorn stops accepting connections, and requests in flight run to their end for up to ``shutdown_timeout``
seconds. Then the streams still open get an error event followed by ``data: [DONE]`` (non-streamed requests a
503), the engine workers are stopped, and the process exits with code 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Callable

import uvicorn

log = logging.getLogger("gallama.server")


class FrontServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, shutdown_timeout: float = 30.0,
                 on_drain: Callable[[], None] | None = None, on_deadline: Callable[[], None] | None = None,
                 in_flight: Callable[[], int] | None = None, models=None):
        super().__init__(config)
        self.shutdown_timeout = shutdown_timeout
        self.exit_code = 0
        self._models = models
        self._on_drain, self._on_deadline, self._in_flight = on_drain, on_deadline, in_flight
        self._drainer: asyncio.Task | None = None

    @contextlib.contextmanager
    def capture_signals(self):
        # uvicorn re-raises the signal after an orderly shutdown, so the process would die by it (-15 for a
        # SIGTERM, which service managers report as a failure): an orderly shutdown exits 0 instead.
        with super().capture_signals():
            yield
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        loop = asyncio.get_running_loop()
        self._drainer = loop.create_task(self._drain())
        if self._models is not None:
            self._watcher = loop.create_task(self._nothing_to_serve())

    async def _nothing_to_serve(self) -> None:
        """Exit 2 with the reasons when every model given on the command line failed its first load (a server
        with nothing to serve should not look healthy to whoever started it)."""
        models = self._models
        await models.wait_loaded()
        initial = [i for i in models.instances if i.initial]
        if initial and all(i.status == "failed" for i in initial) and not models.ready():
            for instance in initial:
                log.error("model %r could not load: %s", instance.name, instance.error)
            log.error("no model given on the command line could load: exiting")
            self.exit_code = 2
            self.should_exit = True

    async def _drain(self) -> None:
        while not self.should_exit:
            await asyncio.sleep(0.1)
        if self._on_drain is not None:
            self._on_drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_timeout
        waiting = self._in_flight or (lambda: 0)
        if waiting():
            log.warning("draining: %d request(s) in flight, waiting up to %.0fs", waiting(), self.shutdown_timeout)
        while waiting() and loop.time() < deadline and not self.force_exit:
            await asyncio.sleep(0.1)
        if waiting() and self._on_deadline is not None:
            log.warning("shutdown timeout: ending %d request(s) with an error", waiting())
            self._on_deadline()


def serve(app, host: str, port: int, log_level: str, shutdown_timeout: float = 30.0, state=None) -> int:
    """Run the front until it is stopped; the exit code (0, or 2 when no model given at start-up could load)."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,  # ours: one line each
                            timeout_graceful_shutdown=shutdown_timeout + 5)
    hooks = {}
    if state is not None:
        def drain() -> None:
            state.draining = True

        hooks = {"on_drain": drain, "in_flight": lambda: sum(i.active for i in state.models.instances),
                 "on_deadline": lambda: state.models.fail_in_flight("the server is shutting down"),
                 "models": state.models}
    server = FrontServer(config, shutdown_timeout=shutdown_timeout, **hooks)
    server.run()
    return server.exit_code
