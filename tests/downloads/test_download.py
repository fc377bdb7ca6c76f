"""`gallama download` / `list downloaded` / `remove` against a hub on loopback (HF_ENDPOINT): real files through
huggingface_hub, resume after a killed download, the config entry, and errors that list what exists."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import FakeHub

from gallama_core.testing import running_server, smollm2_gguf

pytestmark = pytest.mark.e2e

SMOL_REPO = "bartowski/SmolLM2-135M-Instruct-GGUF"
SMOL_FILE = "SmolLM2-135M-Instruct-Q4_K_M.gguf"
LOGS = Path(os.environ.get("GALLAMA_TEST_OUTPUT", Path(__file__).parents[2] / "test-output"))


def _cli(home: Path, endpoint: str, *args: str, wait: bool = True, stdin: str | None = None):
    env = {**os.environ, "GALLAMA_HOME_PATH": str(home), "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(home / "hf"), "COLUMNS": "300", "HF_HUB_ETAG_TIMEOUT": "5"}
    command = [sys.executable, "-c", "from gallama_core.cli import main; main()", *args]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, input=stdin)
    return out.returncode, " ".join((out.stdout + out.stderr).split())


def _config(home: Path) -> dict:
    return yaml.safe_load((home / "model_config.yaml").read_text()) or {}


def test_catalog_download_registers_and_serves(tmp_path):
    """The built-in default from the llama_cpp catalog (no --backend: the installed backend that has it), then
    a no-op second download, the listing, `gallama run NAME` with a chat answer, and removal."""
    gguf = Path(smollm2_gguf())
    home = tmp_path / "home"
    with FakeHub({SMOL_REPO: {"main": {SMOL_FILE: gguf}}}) as endpoint:
        code, text = _cli(home, endpoint, "download", "SmolLM2-135M-Instruct:4.0")
        assert code == 0, text
        entry = _config(home)["SmolLM2-135M-Instruct"]
        path = Path(entry["model_id"])
        assert entry["backend"] == "llama_cpp" and path.read_bytes() == gguf.read_bytes()
        code, again = _cli(home, endpoint, "download", "SmolLM2-135M-Instruct:4.0")
        assert code == 0 and "already downloaded" in again
        code, listing = _cli(home, endpoint, "list", "downloaded")
        assert "SmolLM2-135M-Instruct" in listing and "llama_cpp" in listing and "MiB" in listing
    with running_server(["SmolLM2-135M-Instruct", "--log-level", "warning"], home=home,
                        log_path=LOGS / "download-run.log") as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        answer = client.chat.completions.create(model="SmolLM2-135M-Instruct", max_tokens=3,
                                                messages=[{"role": "user", "content": "Hi"}])
        assert answer.choices[0].message.content
    code, text = _cli(home, "http://127.0.0.1:9", "remove", "SmolLM2-135M-Instruct", "--yes")
    assert code == 0 and "freed" in text
    assert not path.exists() and "SmolLM2-135M-Instruct" not in _config(home)


def test_resume_after_a_killed_download_fetches_no_byte_twice(tmp_path):
    data = os.urandom(3 << 20)
    hub = FakeHub({"someone/big-model": {"main": {"big.gguf": data, "README.md": b"readme"}}},
                  bytes_per_second=1 << 20)
    home = tmp_path / "home"
    with hub as endpoint:
        first = _cli(home, endpoint, "download", "--repo", "someone/big-model", "--include", "*.gguf", wait=False)
        deadline = time.monotonic() + 60
        while hub.served.get("someone/big-model@main/big.gguf", 0) < (1 << 20) and time.monotonic() < deadline:
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait()
        sent_before = hub.served["someone/big-model@main/big.gguf"]
        assert 0 < sent_before < len(data)
        code, text = _cli(home, endpoint, "download", "--repo", "someone/big-model", "--include", "*.gguf")
        assert code == 0, text
    total = hub.served["someone/big-model@main/big.gguf"]
    assert total < len(data) + (256 << 10), (sent_before, total)  # the second run asked only for the rest
    entry = _config(home)["big-model"]
    path = Path(entry["model_id"])  # a GGUF is served from its file
    assert path.name == "big.gguf" and path.read_bytes() == data and not (path.parent / "README.md").exists()
    assert entry["backend"] == "llama_cpp"  # detected from the file


def test_branch_per_bpw_and_failures_leave_nothing_behind(tmp_path):
    repo = {"4.0bpw": {"config.json": b'{"bpw": 4}', "output.safetensors": b"4" * 1000},
            "6.0bpw": {"config.json": b'{"bpw": 6}', "output.safetensors": b"6" * 1000}}
    home = tmp_path / "home"
    with FakeHub({"someone/model-exl2": repo}) as endpoint:
        code, text = _cli(home, endpoint, "download", "--repo", "someone/model-exl2", "--revision", "6.0bpw",
                          "--backend", "exllama", "--name", "model-6")
        assert code == 0, text
        entry = _config(home)["model-6"]
        assert entry["backend"] == "exllama"
        assert (Path(entry["model_id"]) / "config.json").read_bytes() == b'{"bpw": 6}'
        code, text = _cli(home, endpoint, "download", "--repo", "someone/missing")
        assert code == 2 and "someone/missing" in text
        code, text = _cli(home, endpoint, "download", "--repo", "someone/model-exl2", "--revision", "9.9bpw")
        assert code == 2
    folders = sorted(p.name for p in (home / "models").iterdir())
    assert folders == ["model-6-exllama"] and set(_config(home)) == {"model-6"}


def test_unknown_names_and_quantizations_list_what_exists(tmp_path):
    home = tmp_path / "home"
    code, text = _cli(home, "http://127.0.0.1:9", "download", "no-such-model:4.0")
    assert code == 2 and "not in the catalog" in text and "SmolLM2-135M-Instruct" in text
    code, text = _cli(home, "http://127.0.0.1:9", "download", "SmolLM2-135M-Instruct:3.3")
    assert code == 2 and "no 3.3 quantization" in text and "4.0" in text and "8.0" in text
    code, text = _cli(home, "http://127.0.0.1:9", "remove", "nothing-here", "--yes")
    assert code == 2 and "no downloaded model" in text
