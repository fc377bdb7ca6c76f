"""Security tests: real `gallama run` servers (SmolLM2 on llama.cpp) behind keys, driven over real HTTP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gallama_core.testing import running_server, smollm2_gguf

LOGS = Path(os.environ.get("GALLAMA_TEST_OUTPUT", Path(__file__).parents[2] / "test-output"))
API_KEY, ADMIN_KEY = "sk-test-inference-Key", "sk-test-ADMIN-key"  # the same two in test_surface.py


@pytest.fixture(scope="session")
def gguf() -> str:
    return smollm2_gguf()


@pytest.fixture(scope="session")
def keyed_server(gguf):
    args = ["-id", f"model_id={gguf} model_name=smol n_parallel=2 max_seq_len=512 n_threads=1",
            "--api-key", API_KEY, "--admin-key", ADMIN_KEY, "--cors-origin", "http://allowed.example",
            "--max-body-mb", "1"]
    with running_server(args, log_path=LOGS / "security-keyed.log") as url:
        yield url


@pytest.fixture(scope="session")
def open_server(gguf):
    """No keys, loopback bind: inference open, management allowed only through the Host check."""
    args = ["-id", f"model_id={gguf} model_name=smol n_parallel=2 max_seq_len=512 n_threads=1"]
    with running_server(args, log_path=LOGS / "security-open.log") as url:
        yield url
