"""A real gallama server (SmolLM2 on llama.cpp) with this plugin, shared by the tests of this folder."""

from __future__ import annotations

import openai
import pytest

from gallama_core.testing import running_server, smollm2_gguf


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    model = smollm2_gguf()
    with running_server(["-id", f"model_id={model} model_name=smol n_parallel=8"], home=home,
                        log_path=home / "server.log") as base_url:
        yield base_url


@pytest.fixture(scope="session")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="x", timeout=600, max_retries=0)
