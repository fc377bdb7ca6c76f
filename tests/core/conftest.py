from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_backend import EchoPlugin  # noqa: E402

from gallama_core.api.app import build_state, create_app  # noqa: E402
from gallama_core.models.settings import ModelSettings  # noqa: E402
from gallama_core.plugin_system.manager import create_plugin_manager  # noqa: E402


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GALLAMA_HOME_PATH", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def pm():
    manager = create_plugin_manager(load_entry_points=False)
    manager.register(EchoPlugin(), name="echo")
    return manager


@pytest.fixture
async def client(pm, home):
    """An httpx client on an app serving two echo models, 'echo-a' and 'echo-b'."""
    state = build_state(pm, strict_names=True, in_process=True)
    app = create_app(state, [ModelSettings(model_id="echo-a", backend="echo"),
                             ModelSettings(model_id="echo-b", backend="echo")])
    async with app.router.lifespan_context(app):
        await state.models.wait_loaded()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            http.state = state
            yield http
