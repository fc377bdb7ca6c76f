"""End-to-end fixtures: real `gallama run` servers on SmolLM2-135M (llama.cpp), driven by the openai client."""

from __future__ import annotations

import os
from pathlib import Path

import openai
import pytest

from gallama_core.testing import running_server, shared_home, smollm2_gguf

LOGS = Path(os.environ.get("GALLAMA_TEST_OUTPUT", Path(__file__).parents[2] / "test-output"))


@pytest.fixture(scope="session")
def gguf() -> str:
    return smollm2_gguf()


@pytest.fixture(scope="session")
def default_server(gguf):
    """`gallama run` with no arguments: the built-in default model, as the README's first command."""
    LOGS.mkdir(parents=True, exist_ok=True)
    with running_server([], home=shared_home(), log_path=LOGS / "default-server.log") as url:
        yield url


@pytest.fixture(scope="session")
def multi_server(gguf):
    """Two models in one server: 'smol' (4 slots x 2048 tokens) and 'smol-small' (2 slots x 256 tokens)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    args = ["-id", f"model_id={gguf} model_name=smol n_parallel=4 max_seq_len=2048 n_threads=1",
            "-id", f"model_id={gguf} model_name=smol-small n_parallel=2 max_seq_len=256 n_threads=1"]
    with running_server(args, log_path=LOGS / "multi-server.log") as url:
        yield url


@pytest.fixture
def client(multi_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=multi_server + "/v1", api_key="test", max_retries=0, timeout=900)


@pytest.fixture
def async_client(multi_server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=multi_server + "/v1", api_key="test", max_retries=0, timeout=900)
