"""One server, two Python environments: the embedding model in the server's own (infinity-emb, numpy<2) and a
chat model whose engine worker runs in another environment with numpy>=2.1 (as gallama-exllamav3 needs), which
could never be installed beside it. Both answer through the same server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from gallama_core.testing import make_venv, running_server, smollm2_gguf

ROOT = Path(__file__).parents[3]
LOGS = Path(os.environ.get("GALLAMA_TEST_OUTPUT", ROOT / "test-output"))
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def numpy2_python(tmp_path_factory) -> str:
    """gallama-core + the llama.cpp backend + numpy>=2.1, in a virtual environment of its own."""
    return make_venv(tmp_path_factory.mktemp("numpy2") / "venv",
                     ["-e", str(ROOT), "-e", str(ROOT / "plugins" / "gallama_llamacpp"), "numpy>=2.1"])


def _numpy_major(python: str) -> int:
    out = subprocess.run([python, "-c", "import numpy; print(numpy.__version__)"], capture_output=True, text=True)
    return int(out.stdout.split(".")[0])


def test_embedding_and_chat_from_two_environments(minilm_dir, numpy2_python, tmp_path):
    assert _numpy_major(sys.executable) < 2 <= _numpy_major(numpy2_python)  # the two could not share one env
    home = tmp_path / "home"
    home.mkdir()
    (home / "gallama.yaml").write_text(f"backends:\n  llama_cpp:\n    python: {numpy2_python}\n")
    args = ["-id", f"model_id={minilm_dir} model_name=minilm backend=embedding model_warmup=false",
            "-id", f"model_id={smollm2_gguf()} model_name=smol n_parallel=1 max_seq_len=512 n_threads=1"]
    with running_server(args, home=home, env=OFFLINE, log_path=LOGS / "embed-two-envs.log", timeout=300) as url:
        rows = {r["model_name"]: r for r in httpx.get(url + "/list_loaded_models").json()}
        assert rows["minilm"]["status"] == rows["smol"]["status"] == "ready"
        assert Path(f"/proc/{rows['smol']['pid']}/cmdline").read_text().startswith(numpy2_python)
        assert not Path(f"/proc/{rows['minilm']['pid']}/cmdline").read_text().startswith(numpy2_python)
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120)
        vectors = client.embeddings.create(model="minilm", input=["a llama", "an alpaca"])
        assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384
        answer = client.chat.completions.create(model="smol", max_tokens=5,
                                                messages=[{"role": "user", "content": "Say hi."}])
        assert answer.choices[0].message.content and answer.usage.completion_tokens > 0
