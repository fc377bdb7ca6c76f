"""Unit tests: input rules, vector shaping, rerank shaping, settings, plugin registration (no model needed)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from gallama_core.errors import InvalidRequestError
from gallama_embed.protocol import (EmbeddingResponse, RerankRequest, check_count, check_dimensions, decode_base64,
                                    embedding_response_json, encode_base64, normalise_input, rerank_documents,
                                    rerank_response, truncate_renormalise)
from gallama_embed.settings import EmbeddingSettings


def test_normalise_input_accepts_text():
    assert normalise_input("hello") == ["hello"]
    assert normalise_input(["a", "b c"]) == ["a", "b c"]
    assert normalise_input([" "]) == [" "]  # whitespace is text; only "" is empty


@pytest.mark.parametrize("value, code", [
    ([], "empty_input"), ("", "empty_input"), (["a", ""], "empty_input"),
    ([1, 2], "token_ids_not_supported"), ([[1], [2, 3]], "token_ids_not_supported"),
    ([True, False], "invalid_input"), (["a", None], "invalid_input"), (3.5, "invalid_input"), ([[]], "invalid_input"),
])
def test_normalise_input_refuses(value, code):
    with pytest.raises(InvalidRequestError) as info:
        normalise_input(value)
    assert info.value.code == code and info.value.param == "input" and info.value.status_code == 400


def test_check_count_and_dimensions():
    check_count(8, 8)
    with pytest.raises(InvalidRequestError, match="too many documents: 9"):
        check_count(9, 8, "documents")
    check_dimensions(None, 384, "m")
    check_dimensions(1, 384, "m")
    with pytest.raises(InvalidRequestError, match="between 1 and 384"):
        check_dimensions(385, 384, "m")


def test_truncate_renormalise():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, 10)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert truncate_renormalise(vectors, None) is vectors
    assert truncate_renormalise(vectors, 10) is vectors
    cut = truncate_renormalise(vectors, 4)
    assert cut.shape == (3, 4) and cut.dtype == np.float32
    assert np.allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-6)
    assert np.allclose(cut[1] * np.linalg.norm(vectors[1, :4]), vectors[1, :4], atol=1e-6)
    zeros = truncate_renormalise(np.zeros((1, 5), np.float32), 2)
    assert np.array_equal(zeros, np.zeros((1, 2), np.float32))  # no division by zero


def test_base64_round_trip_and_response_shape():
    vectors = np.array([[0.1, -0.5, 0.25], [1.0, 0.0, -1.0]], dtype=np.float32)
    assert np.array_equal(decode_base64(encode_base64(vectors[0])), vectors[0])
    as_b64 = json.loads(embedding_response_json(vectors, "m", 7, "base64"))
    as_float = json.loads(embedding_response_json(vectors, "m", 7, "float"))
    assert as_float == {"object": "list", "model": "m", "usage": {"prompt_tokens": 7, "total_tokens": 7},
                        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.5, 0.25]},
                                 {"object": "embedding", "index": 1, "embedding": [1.0, 0.0, -1.0]}]}
    assert np.array_equal(np.asarray([d["embedding"] for d in as_float["data"]], dtype=np.float32), vectors)
    cut = json.loads(embedding_response_json(vectors[:, :2], "m", 7, "float"))  # a non-contiguous view
    assert cut["data"][1]["embedding"] == [1.0, 0.0]
    EmbeddingResponse.model_validate(as_float)
    EmbeddingResponse.model_validate(as_b64)
    assert [np.array_equal(decode_base64(d["embedding"]), vectors[d["index"]]) for d in as_b64["data"]] == [True, True]


def test_rerank_shaping_sorts_cuts_and_keeps_indices():
    docs = ["a", "b", "c", "d"]
    response = rerank_response([0.2, 0.9, 0.2, 0.5], docs, "r", top_n=3, return_documents=True, prompt_tokens=12)
    assert [(r.index, r.relevance_score, r.document.text) for r in response.results] == \
        [(1, 0.9, "b"), (3, 0.5, "d"), (0, 0.2, "a")]  # ties keep document order
    bare = json.loads(rerank_response([0.1, 0.3], docs[:2], "r", None, False, 4).model_dump_json(exclude_none=True))
    assert bare["results"] == [{"index": 1, "relevance_score": 0.3}, {"index": 0, "relevance_score": 0.1}]
    assert bare["usage"] == {"prompt_tokens": 4, "total_tokens": 4} and bare["model"] == "r"


def test_rerank_documents_rules():
    request = RerankRequest.model_validate({"model": "r", "query": "q", "documents": ["x", {"text": "y"}]})
    assert rerank_documents(request) == ["x", "y"]
    for body, param in (({"query": "", "documents": ["x"]}, "query"), ({"query": "q", "documents": []}, "documents"),
                        ({"query": "q", "documents": [{"text": ""}]}, "documents")):
        with pytest.raises(InvalidRequestError) as info:
            rerank_documents(RerankRequest.model_validate({"model": "r", **body}))
        assert info.value.param == param


def test_settings_parse_id_string_values():
    settings = EmbeddingSettings.model_validate(
        {"model_id": "/m/all-MiniLM", "backend": "embedding", "device": "cpu", "device_id": "0,1", "batch_size": "64",
         "truncate": "false", "dtype": "float16", "max_seq_len": "128"})
    assert settings.device_id == [0, 1] and settings.batch_size == 64 and settings.truncate is False
    assert settings.served_name == "all-MiniLM" and settings.max_seq_len == 128


@pytest.mark.parametrize("extra, message", [
    ({"gpus": "20"}, "gpus does not apply"), ({"cache_quant": "Q4"}, "cache_quant does not apply"),
    ({"tp": "true"}, "tp does not apply"), ({"device": "tpu"}, "device"), ({"batch_size": 0}, "batch_size"),
    ({"n_parallel": 4}, "n_parallel"),
])
def test_settings_refuse_keys_that_do_not_apply(extra, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        EmbeddingSettings.model_validate({"model_id": "m", **extra})


def test_plugin_registers_backend_routes_and_imports_no_engine(tmp_path, minilm_dir):
    """Registration is cheap: building the app imports neither infinity_emb nor torch."""
    script = f"""
import sys, json
from gallama_core.api.app import build_state, create_app
from gallama_core.config import resolve_model_settings
state = build_state()
app = create_app(state)
schema = app.openapi()
paths = sorted(path for path, ops in schema['paths'].items() if 'post' in ops)
bodies = {{path: schema['paths'][path]['post']['requestBody']['content']['application/json']['schema']['$ref']
          for path in paths}}
spec = state.registry.get('infinity')
detected = state.registry.detect({minilm_dir!r})
settings = resolve_model_settings({{'model_id': {minilm_dir!r}, 'model_name': 'mini'}}, state.registry, {{}})
print(json.dumps({{'paths': paths, 'bodies': bodies, 'backend': spec.name, 'detected': detected, 'resolved': settings.backend,
                  'heavy': [m for m in ('infinity_emb', 'torch', 'transformers') if m in sys.modules]}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={"GALLAMA_HOME_PATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"/v1/embeddings", "/v1/rerank", "/rerank"} <= set(facts["paths"])
    assert facts["bodies"]["/v1/embeddings"].endswith("/EmbeddingRequest")  # documented in /openapi.json
    assert facts["bodies"]["/v1/rerank"].endswith("/RerankRequest")
    assert facts["backend"] == "embedding" and facts["detected"] == "embedding" and facts["resolved"] == "embedding"
    assert facts["heavy"] == []
