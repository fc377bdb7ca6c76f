"""Fixtures of the examples' tests: one real `gallama run` on SmolLM2-135M (llama.cpp), as `examples/README.md`
tells users to start it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gallama_core.testing import running_server, shared_home, smollm2_gguf

ROOT = Path(__file__).parents[2]
LOGS = Path(os.environ.get("GALLAMA_TEST_OUTPUT", ROOT / "test-output"))


@pytest.fixture(scope="session")
def gguf() -> str:
    return smollm2_gguf()


@pytest.fixture(scope="session")
def examples_server(gguf) -> str:
    """The default model under its default name, in the shared test home (whose models/ folder holds the GGUF, so
    the notebook may `/add_model` it again)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    args = ["-id", f"model_id={gguf} model_name=SmolLM2-135M-Instruct n_parallel=4 max_seq_len=2048"]
    with running_server(args, home=shared_home(), log_path=LOGS / "examples-server.log") as url:
        yield url


@pytest.fixture
def examples_env(examples_server, gguf, monkeypatch) -> str:
    """GALLAMA_URL and GALLAMA_GGUF, as the examples read them (the notebook's kernel inherits them)."""
    monkeypatch.setenv("GALLAMA_URL", examples_server)
    monkeypatch.setenv("GALLAMA_GGUF", gguf)
    return examples_server
