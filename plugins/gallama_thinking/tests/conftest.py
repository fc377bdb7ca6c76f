"""A real gallama server (SmolLM2 on llama.cpp) with this plugin and a thinking config, shared by the tests."""

from __future__ import annotations

import openai
import pytest

from gallama_core.testing import running_server, smollm2_gguf

GALLAMA_YAML = """\
thinking:
  max_thinking_tokens: 300
  max_element_tokens: 12
  templates:
    mine: |
      <reflection>
        <idea>One idea about the question</idea>
      </reflection>
"""


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    (home / "gallama.yaml").write_text(GALLAMA_YAML)
    with running_server(["-id", f"model_id={smollm2_gguf()} model_name=smol n_parallel=6"], home=home,
                        log_path=home / "server.log") as base_url:
        yield base_url


@pytest.fixture(scope="session")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="x", timeout=900, max_retries=0)
