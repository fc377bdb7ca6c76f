"""The model manager's supervision of workers, with fake launchers (tests/e2e/test_workers.py does it with real
processes): restart with backoff, give up after N failures in a row, a failed first load, the launcher hook."""

from __future__ import annotations

import asyncio

import pytest
from fake_backend import EchoBackend

from gallama_core import hookimpl
from gallama_core.models.manager import ModelManager, RestartPolicy
from gallama_core.models.registry import BackendRegistry
from gallama_core.models.settings import ModelSettings
from gallama_core.plugin_system.registrations import LoadProgress
from gallama_core.workers.client import WorkerLoadError
from gallama_core.workers.launcher import Worker, WorkerLauncher


class DyingWorker(Worker):
    def __init__(self, settings, lives: float):
        self.backend = EchoBackend(settings)
        self.pid = 4242
        self._lives = lives

    async def wait(self) -> str:
        await asyncio.sleep(self._lives)
        return "the engine worker (pid 4242) was killed by SIGSEGV"

    async def stop(self, timeout: float = 10.0) -> None:
        self.stopped = True


class FlakyLauncher(WorkerLauncher):
    """Every worker dies after ``lives`` seconds; launches after the first can be made to fail."""

    def __init__(self, lives: float = 0.01, fail_restarts: bool = False, fail_first: bool = False):
        self.launches = 0
        self.lives, self.fail_restarts, self.fail_first = lives, fail_restarts, fail_first

    async def launch(self, settings, progress: LoadProgress) -> Worker:
        self.launches += 1
        if self.fail_first or (self.fail_restarts and self.launches > 1):
            raise WorkerLoadError("CUDA out of memory")
        progress.update("loading", 0.5)
        return DyingWorker(settings, self.lives)


def _manager(pm, launcher, **policy) -> ModelManager:
    return ModelManager(BackendRegistry(pm), launcher=launcher,
                        restart_policy=RestartPolicy(backoff_s=0.001, max_backoff_s=0.002, **policy))


async def _until(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_a_dying_worker_is_restarted_then_given_up_with_the_reason(pm):
    launcher = FlakyLauncher()
    manager = _manager(pm, launcher, max_restarts=3)
    instance = manager.start_loading(ModelSettings(model_id="m", backend="echo"))
    await _until(lambda: instance.status == "failed")
    assert launcher.launches == 4 and instance.restarts == 3  # the first start and three restarts
    assert "SIGSEGV" in instance.error
    with pytest.raises(Exception) as info:
        manager.resolve("m")
    assert info.value.status_code == 503 and "SIGSEGV" in info.value.message
    await manager.close()


async def test_a_worker_that_served_long_enough_resets_the_count(pm):
    launcher = FlakyLauncher(lives=0.05)
    manager = _manager(pm, launcher, max_restarts=2, stable_s=0.02)
    instance = manager.start_loading(ModelSettings(model_id="m", backend="echo"))
    await _until(lambda: launcher.launches >= 6)
    assert instance.status != "failed"  # every worker served 50 ms > stable_s: never two failures in a row
    await manager.close()
    assert not manager.instances


async def test_restart_failures_count_and_a_failed_first_load_is_final(pm):
    launcher = FlakyLauncher(fail_restarts=True)
    manager = _manager(pm, launcher, max_restarts=2)
    instance = manager.start_loading(ModelSettings(model_id="m", backend="echo"))
    await _until(lambda: instance.status == "failed")
    assert "restart failed: CUDA out of memory" in instance.error

    first = FlakyLauncher(fail_first=True)
    manager = _manager(pm, first, max_restarts=5)
    instance = manager.start_loading(ModelSettings(model_id="m", backend="echo"))
    await manager.wait_loaded()
    assert instance.status == "failed" and instance.error == "CUDA out of memory" and first.launches == 1


async def test_restarting_instance_gives_503_and_a_ready_twin_serves(pm):
    gate = asyncio.Event()

    class GatedLauncher(FlakyLauncher):
        async def launch(self, settings, progress):
            if settings.model_id == "dies" and self.launches:
                await gate.wait()  # the restart hangs until the test lets it through
            return await super().launch(settings, progress)

    launcher = GatedLauncher(lives=0.01)
    manager = _manager(pm, launcher, max_restarts=5)
    dying = manager.start_loading(ModelSettings(model_id="dies", model_name="m", backend="echo"))
    await _until(lambda: dying.status == "restarting")
    with pytest.raises(Exception) as info:
        manager.resolve("m")
    assert info.value.status_code == 503 and "restarting" in info.value.message
    launcher.lives = 3600
    twin = manager.start_loading(ModelSettings(model_id="twin", model_name="m", backend="echo"))
    await _until(lambda: twin.status == "ready")
    assert manager.resolve("m") is twin
    rows = [i.describe() for i in manager.instances]
    assert [r["status"] for r in rows] == ["restarting", "ready"] and rows[1]["pid"] == 4242
    gate.set()
    await manager.close()


async def test_a_plugin_launcher_places_the_models(pm, home):
    from gallama_core.api.app import build_state

    launcher = FlakyLauncher(lives=3600)

    class Placement:
        @hookimpl
        def gallama_worker_launcher(self, app_state):
            return launcher

    pm.register(Placement(), name="placement")
    state = build_state(pm)
    assert state.models.launcher is launcher
    instance = state.models.start_loading(ModelSettings(model_id="m", backend="echo"))
    await state.models.wait_loaded()
    assert instance.status == "ready" and launcher.launches == 1
    await state.models.close()


def test_without_a_plugin_the_core_starts_local_processes(pm, home):
    from gallama_core.api.app import build_state
    from gallama_core.workers.launcher import InProcessLauncher, LocalProcessLauncher

    assert isinstance(build_state(pm).models.launcher, LocalProcessLauncher)
    assert isinstance(build_state(pm, in_process=True).models.launcher, InProcessLauncher)


async def test_failed_loads_do_not_pile_up(pm):
    from gallama_core.models.manager import MAX_FAILED_KEPT

    manager = _manager(pm, FlakyLauncher(fail_first=True))
    for i in range(MAX_FAILED_KEPT + 12):
        manager.start_loading(ModelSettings(model_id=f"m{i}", backend="echo"))
        await manager.wait_loaded()
    assert len(manager.instances) == MAX_FAILED_KEPT + 1  # the kept failures and the newest
    again = manager.start_loading(ModelSettings(model_id=f"m{MAX_FAILED_KEPT + 11}", backend="echo"))
    await manager.wait_loaded()
    assert [i.name for i in manager.instances].count(again.name) == 1  # a reload replaces its own failure
