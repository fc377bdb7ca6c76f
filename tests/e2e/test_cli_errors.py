"""What `gallama run` says when the model it is asked for cannot be served: the real reason, and an exit code."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from gallama_core.testing import free_port, running_server, shared_home

from .conftest import LOGS


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from gallama_core.cli import main; main()", "run",
                           "--port", str(free_port()), *args], capture_output=True, text=True, timeout=timeout,
                          env={**__import__("os").environ, "GALLAMA_HOME_PATH": str(shared_home()),
                               "COLUMNS": "300"})


@pytest.mark.parametrize("args, expected", [
    (["mistral-9000"], "unknown model 'mistral-9000'"),
    (["mistral"], "gallama download mistral:"),  # in the llama_cpp catalog, not downloaded
    (["-id", "model_id=no-such-model"], "unknown model 'no-such-model'"),
    (["llama-3.1-8B"], "gallama download llama-3.1-8B:"),
])
def test_unknown_or_not_downloaded_model_names_say_so(args, expected):
    out = _run(*args)
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 2 and expected in text, text[-2000:]
    assert "exllama' is not installed" not in text


def test_a_server_whose_models_all_failed_exits_2_with_the_reason(tmp_path):
    broken = shared_home() / "models" / "broken-for-cli.gguf"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"not a model")
    out = _run("-id", f"model_id={broken}", "--log-level", "warning")
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 2, text[-2000:]
    assert "is not a GGUF file" in text and "no model given on the command line could load" in text


def test_the_built_in_default_is_addressable_by_name(gguf):
    with running_server(["SmolLM2-135M-Instruct"], log_path=LOGS / "cli-default-by-name.log") as url:
        models = httpx.get(url + "/v1/models").json()["data"]
        assert [m["id"] for m in models] == ["SmolLM2-135M-Instruct"] and models[0]["backend"] == "llama_cpp"


def test_a_missing_plugin_field_names_an_install_that_works_from_a_checkout(client):
    r = httpx.post(str(client.base_url).removesuffix("/v1/") .removesuffix("/v1") + "/v1/chat/completions", json={
        "model": "smol", "messages": [{"role": "user", "content": "hi"}], "thinking_template": "<x></x>"})
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "plugin_not_installed"
    assert "pip install ./plugins/gallama_thinking" in error["message"]
