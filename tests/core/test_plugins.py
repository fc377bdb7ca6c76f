"""The plugin system: loading from entry points, failures, allow-list, misspelled hooks, `gallama plugins`,
and a third-party plugin built and installed in a temp dir that extends gallama without touching the core."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pluggy
import pytest

from gallama_core import hookimpl
from gallama_core.plugin_system.manager import PluginLoadError, create_plugin_manager, register_checked

THIRD_PARTY_MODULE = '''
"""A third-party gallama plugin: a backend, a route, a config section, a CLI command, request hooks."""
from fastapi import APIRouter
from pydantic import BaseModel

from gallama_core import hookimpl
from gallama_core.models.backend import Backend, GenerationChunk
from gallama_core.pipeline.chat_template import CHATML_TEMPLATE, ChatTemplate
from gallama_core.models.settings import ModelSettings
from gallama_core.plugin_system.registrations import BackendSpec, ConfigSection, RequestField


class HelloConfig(BaseModel):
    greeting: str = "hi"


class ReverseSettings(ModelSettings):
    flip_case: bool = False


class ReverseBackend(Backend):
    def __init__(self, settings):
        super().__init__("reverse", settings.served_name, 512, ChatTemplate(CHATML_TEMPLATE))
        self.flip = settings.flip_case

    async def generate(self, request):
        line = [l for l in request.prompt.split("\\n") if l.endswith("<|im_end|>")][-1]
        text = line.replace("<|im_end|>", "")[::-1]
        yield GenerationChunk(text=text.swapcase() if self.flip else text, finish_reason="stop",
                              prompt_tokens=3, completion_tokens=1)


@hookimpl
def gallama_backends():
    return [BackendSpec(name="reverse", settings_model=ReverseSettings, load=lambda s, p: ReverseBackend(s))]


@hookimpl
def gallama_config_sections():
    return [ConfigSection(name="hello", model=HelloConfig)]


@hookimpl
def gallama_request_fields():
    return [RequestField(name="shout", description="answer in capitals")]


@hookimpl
def gallama_routes(app_state):
    router = APIRouter()

    @router.get("/hello")
    def hello():
        return {"greeting": app_state.plugin_config["hello"].greeting, "models": app_state.models.names()}
    return [router]


@hookimpl
def gallama_commands(cli):
    @cli.command()
    def hello(name: str = "world"):
        """Say hello (from a third-party plugin)."""
        print(f"hello {name} from thirdparty")


@hookimpl
def gallama_preprocess_request(ctx):
    if (ctx.request.model_extra or {}).get("shout"):
        ctx.assistant_prefix = "loud: "


@hookimpl
def gallama_postprocess_stream(ctx):
    if not (ctx.request.model_extra or {}).get("shout"):
        return None

    async def upper(events):
        async for event in events:
            event.content = event.content.upper()
            yield event
    return upper
'''


def _pyproject(name: str, module: str) -> str:
    return textwrap.dedent(f'''
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [project]
        name = "{name}"
        version = "1.2.3"
        dependencies = ["gallama-core"]

        [project.entry-points.gallama]
        {module} = "{module}"

        [tool.hatch.build.targets.wheel]
        packages = ["{module}"]
    ''')


def _install(*paths: Path) -> None:
    uv = shutil.which("uv")
    cmd = [uv, "pip", "install", "--python", sys.executable, "--no-deps"] if uv else \
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
    subprocess.run([*cmd, *map(str, paths)], check=True, capture_output=True)


def _uninstall(*names: str) -> None:
    uv = shutil.which("uv")
    cmd = [uv, "pip", "uninstall", "--python", sys.executable] if uv else [sys.executable, "-m", "pip", "uninstall", "-y"]
    subprocess.run([*cmd, *names], capture_output=True)


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory):
    """Builds and installs two distributions: a working third-party plugin and one that fails to import."""
    root = tmp_path_factory.mktemp("plugins")
    good = root / "good"
    (good / "gallama_thirdparty").mkdir(parents=True)
    (good / "pyproject.toml").write_text(_pyproject("gallama-thirdparty", "gallama_thirdparty"))
    (good / "gallama_thirdparty" / "__init__.py").write_text(THIRD_PARTY_MODULE)
    bad = root / "bad"
    (bad / "gallama_broken").mkdir(parents=True)
    (bad / "pyproject.toml").write_text(_pyproject("gallama-broken", "gallama_broken"))
    (bad / "gallama_broken" / "__init__.py").write_text("import a_module_that_does_not_exist\n")
    _install(good, bad)
    import importlib

    importlib.invalidate_caches()
    yield
    _uninstall("gallama-thirdparty", "gallama-broken")


def _gallama(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from gallama_core.cli import main; main()", *args],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "250", **(env or {})})


def test_broken_plugin_is_skipped_with_a_message(installed_plugins, caplog, monkeypatch):
    monkeypatch.delenv("GALLAMA_PLUGINS", raising=False)
    pm = create_plugin_manager()
    assert pm.has_plugin("gallama_thirdparty") and not pm.has_plugin("gallama_broken")
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "gallama-broken" in message and "a_module_that_does_not_exist" in message


def test_strict_mode_makes_failure_fatal(installed_plugins, monkeypatch):
    monkeypatch.setenv("GALLAMA_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError, match="gallama-broken"):
        create_plugin_manager()


def test_allow_list(installed_plugins, monkeypatch):
    monkeypatch.setenv("GALLAMA_PLUGINS", "gallama-broken")
    monkeypatch.setenv("GALLAMA_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError):
        create_plugin_manager()
    monkeypatch.setenv("GALLAMA_PLUGINS", "gallama-thirdparty")
    pm = create_plugin_manager()
    assert pm.has_plugin("gallama_thirdparty")
    assert not any(pm.has_plugin(n) for n in ("gallama_broken", "llama_cpp"))


def test_misspelled_hook_is_caught():
    pm = create_plugin_manager(load_entry_points=False)
    typo = types.ModuleType("typo")

    @hookimpl
    def gallama_backendz():
        return []

    typo.gallama_backendz = gallama_backendz
    with pytest.raises(pluggy.PluginValidationError, match="gallama_backendz"):
        register_checked(pm, typo, "typo")
    assert not pm.has_plugin("typo")


def test_every_hookspec_is_documented():
    from gallama_core.plugin_system import hookspecs

    docs = (Path(__file__).parents[2] / "docs" / "plugins.md").read_text()
    names = [n for n in dir(hookspecs) if n.startswith("gallama_")]
    assert len(names) >= 10
    for name in names:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), f"{name} has no docstring"
        assert f"`{name}" in docs, f"{name} is not described in docs/plugins.md"


def test_plugins_command_lists_hooks(installed_plugins):
    result = _gallama("plugins")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "gallama_thirdparty" in out and "1.2.3" in out and "gallama_preprocess_request" in out
    assert "gallama-broken" in out and "failed" in out


def test_third_party_plugin_end_to_end(installed_plugins, tmp_path):
    import openai

    from gallama_core.testing import running_server

    assert "hello world from thirdparty" in _gallama("hello").stdout
    assert "Say hello" in _gallama("--help").stdout

    home = tmp_path / "home"
    home.mkdir()
    (home / "gallama.yaml").write_text("hello:\n  greeting: bonjour\n")
    with running_server(["-id", "model_id=rev backend=reverse flip_case=true"], home=home) as base:
        import httpx

        assert httpx.get(base + "/hello").json() == {"greeting": "bonjour", "models": ["rev"]}
        client = openai.OpenAI(base_url=base + "/v1", api_key="x")
        plain = client.chat.completions.create(model="rev", messages=[{"role": "user", "content": "abc"}])
        assert plain.choices[0].message.content == "CBA"
        loud = client.chat.completions.create(model="rev", messages=[{"role": "user", "content": "xyz"}],
                                              extra_body={"shout": True})
        assert loud.choices[0].message.content == "LOUD: ZYX"
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="rev", messages=[{"role": "user", "content": "x"}],
                                           extra_body={"whisper": True})


def test_unknown_config_section_is_an_error(installed_plugins, tmp_path):
    home = tmp_path / "home2"
    home.mkdir()
    (home / "gallama.yaml").write_text("goodbye:\n  x: 1\n")
    result = _gallama("run", "-id", "model_id=rev backend=reverse", env={"GALLAMA_HOME_PATH": str(home)})
    assert result.returncode != 0
    assert "goodbye" in result.stderr
