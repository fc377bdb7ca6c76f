"""/v1/embeddings end to end: the official openai client against ``gallama run`` serving all-MiniLM-L6-v2."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest

MODEL = "all-MiniLM-L6-v2"
DIM = 384


def vec(item) -> np.ndarray:
    return np.asarray(item.embedding, dtype=np.float32)


def post(base_url: str, body, path: str = "/v1/embeddings") -> httpx.Response:
    if isinstance(body, (bytes, str)):
        return httpx.post(base_url + path, content=body, headers={"content-type": "application/json"}, timeout=60)
    return httpx.post(base_url + path, json=body, timeout=60)


def assert_envelope(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    return error


def test_models_lists_every_kind(client):
    cards = {m.id: m for m in client.models.list().data}
    assert cards[MODEL].kind == "embedding" and cards[MODEL].backend == "embedding"
    assert cards["tiny-reranker"].kind == "rerank"
    assert cards["smol"].kind == "chat"


def test_spec_call_with_another_model_name(client):
    """The README's call names gte-large-en-v1.5; the single embedding model loaded answers it."""
    response = client.embeddings.create(input="Your text string for embedding goes here",
                                        model="Alibaba-NLP/gte-large-en-v1.5")
    assert response.model == MODEL
    assert len(response.data) == 1 and response.data[0].index == 0
    assert len(response.data[0].embedding) == DIM
    assert response.usage.prompt_tokens == response.usage.total_tokens
    assert 8 <= response.usage.prompt_tokens <= 12  # 8 words + [CLS]/[SEP] in BERT's vocabulary


def test_vectors_are_unit_length(client):
    texts = ["short", "A considerably longer sentence about embedding servers and their clients.", "ünïcödé ✓"]
    response = client.embeddings.create(input=texts, model=MODEL, encoding_format="float")
    norms = [np.linalg.norm(vec(d)) for d in response.data]
    assert np.allclose(norms, 1.0, atol=1e-5), norms


def test_matches_sentence_transformers(client, minilm_dir):
    """Same numbers as sentence-transformers run directly on the same folder (normalize_embeddings=True)."""
    from sentence_transformers import SentenceTransformer

    texts = ["The cat sits outside", "A man is playing guitar"]
    expected = SentenceTransformer(minilm_dir, device="cpu").encode(texts, normalize_embeddings=True)
    response = client.embeddings.create(input=texts, model=MODEL, encoding_format="float")
    got = np.stack([vec(d) for d in response.data])
    assert np.allclose(got, expected, atol=1e-5), np.abs(got - expected).max()


def test_similar_sentences_score_higher(client):
    triples = [("A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."),
               ("How do I reset my password?", "I forgot my password, how can I change it?",
                "The Eiffel Tower is in Paris."),
               ("Dogs are loyal pets.", "Puppies make faithful companions.", "Quantum computers use qubits.")]
    flat = [t for triple in triples for t in triple]
    data = client.embeddings.create(input=flat, model=MODEL).data
    vectors = [vec(d) for d in data]
    for i in range(len(triples)):
        anchor, similar, unrelated = vectors[3 * i: 3 * i + 3]
        assert float(anchor @ similar) > float(anchor @ unrelated) + 0.2, triples[i]


def test_batch_of_64_keeps_order(client):
    texts = [f"Sentence number {i} talks about topic {i % 7} in its own words." for i in range(64)]
    response = client.embeddings.create(input=texts, model=MODEL, encoding_format="float")
    assert [d.index for d in response.data] == list(range(64))
    assert all(len(d.embedding) == DIM for d in response.data)
    for i in (0, 17, 63):  # each row is that input's own vector, whatever else was in the batch
        alone = vec(client.embeddings.create(input=texts[i], model=MODEL, encoding_format="float").data[0])
        assert np.allclose(vec(response.data[i]), alone, atol=1e-4)
    single = client.embeddings.create(input=texts[0], model=MODEL).usage.prompt_tokens
    assert response.usage.prompt_tokens >= 64 * (single - 2)


def test_base64_decodes_to_the_same_floats(main_server, client):
    texts = ["base64 is how the openai client asks by default", "second input"]
    as_float = post(main_server, {"model": MODEL, "input": texts, "encoding_format": "float"}).json()
    as_b64 = post(main_server, {"model": MODEL, "input": texts, "encoding_format": "base64"}).json()
    for f, b in zip(as_float["data"], as_b64["data"]):
        assert isinstance(b["embedding"], str)
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        assert decoded.shape == (DIM,)
        assert np.array_equal(decoded, np.asarray(f["embedding"], dtype=np.float32))
    # The openai client asks for base64 when no format is given and decodes it itself.
    default = client.embeddings.create(input=texts, model=MODEL)
    assert np.array_equal(vec(default.data[0]), np.asarray(as_float["data"][0]["embedding"], dtype=np.float32))


def test_dimensions_truncate_and_renormalise(client):
    text = "Matryoshka-style truncation of an embedding"
    full = vec(client.embeddings.create(input=text, model=MODEL, encoding_format="float").data[0])
    cut = vec(client.embeddings.create(input=text, model=MODEL, dimensions=64, encoding_format="float").data[0])
    assert cut.shape == (64,)
    assert np.isclose(np.linalg.norm(cut), 1.0, atol=1e-5)
    assert np.allclose(cut, full[:64] / np.linalg.norm(full[:64]), atol=1e-6)
    assert len(client.embeddings.create(input=text, model=MODEL, dimensions=DIM).data[0].embedding) == DIM


@pytest.mark.parametrize("dimensions", [0, DIM + 1, -3])
def test_bad_dimensions_are_400(main_server, dimensions):
    assert_envelope(post(main_server, {"model": MODEL, "input": "x", "dimensions": dimensions}), 400, "dimensions")


def test_long_input_is_truncated_at_the_model_limit(client):
    """Default rule (truncate=true): tokens past the model's 256 are dropped, and usage counts 256."""
    long_text = " ".join(["embedding"] * 400)
    a = client.embeddings.create(input=long_text, model=MODEL, encoding_format="float")
    b = client.embeddings.create(input=long_text + " and a different ending that is cut off", model=MODEL,
                                 encoding_format="float")
    assert a.usage.prompt_tokens == 256
    assert np.allclose(vec(a.data[0]), vec(b.data[0]), atol=1e-5)


BAD_INPUTS = {
    "empty list": ([], "empty_input"),
    "empty string": ("", "empty_input"),
    "empty string in list": (["ok", ""], "empty_input"),
    "token ids": ([101, 2023, 102], "token_ids_not_supported"),
    "token id lists": ([[101, 2023], [101]], "token_ids_not_supported"),
    "number": (5, "invalid_input"),
    "mixed list": (["a", 3], "invalid_input"),
    "object": ({"text": "a"}, "invalid_input"),
    "null": (None, "invalid_input"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_400_and_server_keeps_serving(main_server, client, name):
    value, code = BAD_INPUTS[name]
    error = assert_envelope(post(main_server, {"model": MODEL, "input": value}), 400, "input")
    assert error["code"] == code
    assert len(client.embeddings.create(input="still alive", model=MODEL).data[0].embedding) == DIM


@pytest.mark.parametrize("body, param", [
    ({"model": MODEL}, "input"),
    ({"input": "x"}, "model"),
    ({"model": MODEL, "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": MODEL, "input": "x", "temperature": 1}, "temperature"),
    ([{"model": MODEL, "input": "x"}], None),
])
def test_malformed_requests_are_400(main_server, body, param):
    assert_envelope(post(main_server, body), 400, param)


def test_invalid_json_is_400(main_server):
    assert_envelope(post(main_server, b"{not json"), 400)


def test_bad_request_through_openai_client(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(input=[], model=MODEL)
    assert info.value.status_code == 400
    assert "empty" in info.value.body["message"]


def test_chat_on_embedding_model_is_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert "embedding model" in info.value.body["message"]
    assert info.value.body["code"] == "wrong_model_kind"


def test_embeddings_on_chat_or_rerank_model_is_400(client):
    for name, kind in (("smol", "chat"), ("tiny-reranker", "rerank")):
        with pytest.raises(openai.BadRequestError) as info:
            client.embeddings.create(input="x", model=name)
        assert f"is a {kind} model" in info.value.body["message"]


def test_chat_model_serves_next_to_the_embedding_model(client):
    answer = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Say hi"}],
                                            max_tokens=8, temperature=0)
    assert answer.model == "smol" and answer.choices[0].message.content
    # An unknown chat model name goes to the single chat model, as the unknown embedding name did.
    other = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Say hi"}],
                                           max_tokens=4, temperature=0)
    assert other.model == "smol"
    assert len(client.embeddings.create(input="after chat", model="text-embedding-3-small").data[0].embedding) == DIM


# ------------------------------------------------------------------- limits: truncate=false, 16 tokens, 8 inputs


def test_too_many_inputs_is_400(strict_server, strict_client):
    assert len(strict_client.embeddings.create(input=["x"] * 8, model="strict-minilm").data) == 8
    error = assert_envelope(post(strict_server, {"model": "strict-minilm", "input": ["x"] * 9}), 400, "input")
    assert error["code"] == "too_many_inputs" and "at most 8" in error["message"]


def test_too_long_input_is_400_when_truncation_is_off(strict_server, strict_client):
    ok = strict_client.embeddings.create(input="fourteen tokens " * 3, model="strict-minilm")
    assert ok.usage.prompt_tokens <= 16
    error = assert_envelope(post(strict_server, {"model": "strict-minilm", "input": ["short", "word " * 20]}),
                            400, "input")
    assert error["code"] == "input_too_long" and "input[1]" in error["message"] and "16 tokens" in error["message"]


def test_rerank_without_a_reranker_is_400(strict_server):
    error = assert_envelope(post(strict_server, {"model": "any", "query": "q", "documents": ["d"]}, "/v1/rerank"),
                            400, "model")
    assert error["code"] == "wrong_model_kind" and "reranker" in error["message"]
