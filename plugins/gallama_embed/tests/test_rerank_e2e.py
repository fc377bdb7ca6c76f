"""/v1/rerank end to end with a real BERT cross-encoder, checked against transformers run directly."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

QUERY = "How do llamas live?"
DOCS = ["Llamas live in herds in the Andes.", "The stock market fell.", "Alpacas are related to llamas.",
        "Python is a programming language.", "Llamas eat grass and hay."]


def rerank(base_url: str, body: dict, path: str = "/v1/rerank") -> httpx.Response:
    return httpx.post(base_url + path, json=body, timeout=60)


@pytest.fixture(scope="module")
def expected_scores(reranker_dir) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(reranker_dir)
    model = AutoModelForSequenceClassification.from_pretrained(reranker_dir).eval()
    features = tokenizer([QUERY] * len(DOCS), DOCS, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**features).logits.flatten()
    return torch.sigmoid(logits).numpy()


def test_rerank_scores_and_order(main_server, expected_scores):
    response = rerank(main_server, {"model": "tiny-reranker", "query": QUERY, "documents": DOCS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tiny-reranker" and body["id"].startswith("rerank-")
    results = body["results"]
    assert sorted(r["index"] for r in results) == list(range(len(DOCS)))
    assert [r["index"] for r in results] == list(np.argsort(-expected_scores, kind="stable"))
    for r in results:
        assert r["document"] == {"text": DOCS[r["index"]]}
        assert r["relevance_score"] == pytest.approx(float(expected_scores[r["index"]]), abs=1e-4)
    assert body["usage"]["prompt_tokens"] > len(DOCS) * 5


def test_rerank_top_n_objects_and_no_documents(main_server, expected_scores):
    body = {"model": "some-jina-reranker", "query": QUERY, "documents": [{"text": d} for d in DOCS],
            "top_n": 2, "return_documents": False}
    response = rerank(main_server, body, "/rerank")  # llama.cpp/vLLM path; any name goes to the one reranker
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(np.argsort(-expected_scores, kind="stable")[:2])
    assert all("document" not in r for r in results)
    big = rerank(main_server, {"model": "tiny-reranker", "query": QUERY, "documents": DOCS, "top_n": 50})
    assert len(big.json()["results"]) == len(DOCS)


def test_rerank_on_embedding_model_is_400(main_server):
    response = rerank(main_server, {"model": "all-MiniLM-L6-v2", "query": QUERY, "documents": DOCS})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "wrong_model_kind" and "embedding model" in error["message"]


@pytest.mark.parametrize("body, param", [
    ({"query": QUERY, "documents": []}, "documents"),
    ({"query": "", "documents": DOCS}, "query"),
    ({"query": QUERY, "documents": ["a", ""]}, "documents"),
    ({"query": QUERY, "documents": DOCS, "top_n": 0}, "top_n"),
    ({"query": QUERY}, "documents"),
    ({"query": QUERY, "documents": [3]}, "documents"),  # "documents[0]..." as the core spells it
    ({"query": QUERY, "documents": DOCS, "rank_fields": ["x"]}, "rank_fields"),
])
def test_bad_rerank_requests_are_400(main_server, body, param):
    response = rerank(main_server, {"model": "tiny-reranker", **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"].startswith(param)
    assert rerank(main_server, {"model": "tiny-reranker", "query": QUERY, "documents": DOCS[:1]}).status_code == 200
