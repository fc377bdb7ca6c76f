"""Client-compatibility fixtures: one `gallama run` on SmolLM2 (llama.cpp), driven by agent frameworks and
client libraries through their ordinary APIs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gallama_core.testing import running_server, smollm2_gguf

LOGS = Path(os.environ.get("GALLAMA_TEST_OUTPUT", Path(__file__).parents[2] / "test-output"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm: no network fetch at import


@pytest.fixture(scope="session")
def server() -> str:
    # strict names: an unknown model is a 404 (else the only model answers to any name)
    args = ["-id", f"model_id={smollm2_gguf()} model_name=smol n_parallel=4 max_seq_len=2048", "--strict-model-names"]
    with running_server(args, log_path=LOGS / "clients-server.log") as url:
        yield url


@pytest.fixture(scope="session")
def base_url(server) -> str:
    return server + "/v1"
