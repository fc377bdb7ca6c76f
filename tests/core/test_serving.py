"""The serving pipeline and HTTP layer against an in-process fake backend."""

from __future__ import annotations

import json

import pytest

CHAT = "/v1/chat/completions"


def user(text):
    return {"role": "user", "content": text}


def assert_envelope(response, status, param=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return error


async def test_chat_response_shape(client):
    r = await client.post(CHAT, json={"model": "echo-a", "messages": [user("one two three")]})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "echo-a"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "one two three"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 3
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 3


async def test_max_tokens_gives_length(client):
    r = await client.post(CHAT, json={"model": "echo-a", "messages": [user("a b c d")], "max_completion_tokens": 2})
    assert r.json()["choices"][0]["message"]["content"] == "a b"
    assert r.json()["choices"][0]["finish_reason"] == "length"


async def test_sampling_and_stop_reach_backend(client):
    body = {"model": "echo-b", "messages": [user("x")], "temperature": 0.3, "top_p": 0.9, "top_k": 5, "min_p": 0.1,
            "seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.5, "stop": "END", "stop_words": ["FIN"]}
    assert (await client.post(CHAT, json=body)).status_code == 200
    backend = next(i.backend for i in client.state.models.instances if i.name == "echo-b")
    request = backend.requests[-1]
    assert (request.sampling.temperature, request.sampling.top_p, request.sampling.top_k) == (0.3, 0.9, 5)
    assert (request.sampling.min_p, request.sampling.seed) == (0.1, 7)
    assert (request.sampling.presence_penalty, request.sampling.frequency_penalty) == (0.5, -0.5)
    assert request.stop == ["END", "FIN"]
    assert request.prompt.endswith("<|im_start|>assistant\n")


async def test_stream_chunks_and_usage(client):
    body = {"model": "echo-a", "messages": [user("alpha beta")], "stream": True,
            "stream_options": {"include_usage": True}}
    async with client.stream("POST", CHAT, json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in r.aiter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "alpha beta"
    finals = [c for c in chunks if c["choices"] and c["choices"][0].get("finish_reason")]
    assert [c["choices"][0]["finish_reason"] for c in finals] == ["stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2


async def test_n_choices(client):
    r = await client.post(CHAT, json={"model": "echo-a", "messages": [user("p q")], "n": 3, "seed": 1})
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert all(c["message"]["content"] == "p q" for c in choices)
    backend = next(i.backend for i in client.state.models.instances if i.name == "echo-a")
    assert sorted(r.sampling.seed for r in backend.requests[-3:]) == [1, 2, 3]


async def test_legacy_completion(client):
    r = await client.post("/v1/completions", json={"model": "echo-a", "prompt": "hello\nworld wide\n", "echo": True})
    body = r.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "hello\nworld wide\nworld wide"


async def test_leading_prompt_is_forced_and_returned(client):
    r = await client.post(CHAT, json={"model": "echo-a", "messages": [user("z")], "leading_prompt": "Answer:"})
    backend = next(i.backend for i in client.state.models.instances if i.name == "echo-a")
    assert backend.requests[-1].prompt.endswith("assistant\nAnswer:")
    assert r.json()["choices"][0]["message"]["content"].startswith("Answer:")


@pytest.mark.parametrize("body,status,param", [
    ({"model": "echo-a", "messages": []}, 400, "messages"),
    ({"model": "echo-a", "messages": [user("x")], "max_tokens": -1}, 400, "max_tokens"),
    ({"model": "echo-a", "messages": [user("x")], "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "echo-a", "messages": [user("x")], "temperature": 5}, 400, "temperature"),
    ({"model": "echo-a", "messages": [{"role": "wizard", "content": "x"}]}, 400, None),
    ({"model": "echo-a", "messages": [{"role": "tool", "content": "x"}]}, 400, None),
    ({"model": "echo-a", "messages": [user("x")], "n": 0}, 400, "n"),
    ({"model": "echo-a", "messages": [user("x")], "logprobs": True}, 400, None),
    ({"model": "echo-a", "messages": [user("x")], "bogus": 1}, 400, "bogus"),
    ({"model": "echo-a", "messages": [user("x")], "artifact": "Fast"}, 400, "artifact"),
    ({"model": "echo-a", "messages": [user("TOO LONG")]}, 400, None),
    ({"messages": [user("x")]}, 400, "model"),
    ({"model": "nope", "messages": [user("x")]}, 404, "model"),
    ({"model": "echo-a", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400, None),
])
async def test_bad_requests_get_envelope(client, body, status, param):
    assert_envelope(await client.post(CHAT, json=body), status, param)
    ok = await client.post(CHAT, json={"model": "echo-a", "messages": [user("still fine")]})
    assert ok.status_code == 200


async def test_bad_stream_request_fails_before_streaming(client):
    r = await client.post(CHAT, json={"model": "echo-a", "messages": [user("TOO LONG")], "stream": True})
    assert_envelope(r, 400)


async def test_malformed_json(client):
    error = assert_envelope(await client.post(CHAT, content=b"{nope", headers={"content-type": "application/json"}), 400)
    assert error["code"] == "invalid_json"


async def test_unknown_route_and_method(client):
    assert_envelope(await client.get("/v2/nothing"), 404)
    assert_envelope(await client.get(CHAT), 405)


async def test_models_and_health(client):
    models = (await client.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == ["echo-a", "echo-b"]
    assert all(m["object"] == "model" and m["status"] == "ready" for m in models["data"])
    assert (await client.get("/health")).status_code == 200


async def test_remove_and_add_model(client, home):
    assert (await client.post("/remove_model", json={"model_name": "echo-b"})).status_code == 200
    assert_envelope(await client.post(CHAT, json={"model": "echo-b", "messages": [user("x")]}), 404)
    r = await client.post("/add_model", json=[{"model_id": str(home / "models" / "echo-c"), "backend": "echo"}])
    assert r.status_code == 200
    await client.state.models.wait_loaded()
    assert (await client.post(CHAT, json={"model": "echo-c", "messages": [user("x")]})).status_code == 200
    inside = str(home / "models" / "x")
    assert_envelope(await client.post("/add_model", json={"model_id": inside, "backend": "nope"}), 400)
    assert_envelope(await client.post("/add_model", json={"model_id": inside, "backend": "echo", "colour": 1}), 400)


async def test_add_model_loads_only_what_the_operator_made_available(client, home, tmp_path):
    """Request-supplied model ids: entries of model_config.yaml or paths inside the model folders; nothing else, and
    the refusal reveals nothing about the file system. Bounds on numeric keys; no interpreter from a request."""
    (home / "models").mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (home / "models" / "escape").symlink_to(outside)
    (home / "model_config.yaml").write_text("configured:\n  model_id: /anywhere/configured\n  backend: echo\n")
    refused = {"/etc/shadow": "absolute path elsewhere", "/etc/nonexistent-file": "same answer when absent",
               str(home / "models" / ".." / "model_config.yaml"): "dot-dot out of the folder",
               str(home / "models" / "escape" / "m"): "a link out of the folder", "relative/../../x": "relative",
               "a\x00b": "a NUL byte (found by the fuzzer: was a 500)", "\udba6x": "a lone surrogate"}
    messages = set()
    for model_id in refused:
        body = json.dumps({"model_id": model_id, "backend": "echo"})  # ASCII, with \u escapes for the odd ones
        error = assert_envelope(await client.post("/add_model", content=body,
                                                  headers={"content-type": "application/json"}), 400, "model_id")
        messages.add(error["message"].split(" is neither", 1)[1])
    assert len(messages) == 1  # one answer whether the file exists or not
    assert_envelope(await client.post("/add_model", json={"model_id": str(home / "models" / "m"), "backend": "echo",
                                                          "draft_model_id": "/etc/passwd"}), 400, "model_id")
    assert_envelope(await client.post("/add_model", json={"model_id": str(home / "models" / "m"), "backend": "echo",
                                                          "python": "/bin/sh"}), 400, "model_id")
    for key, value in (("max_seq_len", 10**12), ("cache_size", 10**15), ("gpus", [1e9]), ("max_queue", -1)):
        error = assert_envelope(await client.post("/add_model", json={"model_id": str(home / "models" / "m"),
                                                                      "backend": "echo", key: value}), 400)
        assert key in error["message"]
    r = await client.post("/add_model", json={"model_id": "configured"})
    assert r.status_code == 200 and r.json()["models"] == ["configured"]


async def test_every_post_route_documents_its_request_body(client):
    """/openapi.json describes what each POST route reads (so /docs, client generators and fuzzers see it)."""
    schema = (await client.get("/openapi.json")).json()
    components = schema["components"]["schemas"]
    posts = {path: ops["post"] for path, ops in schema["paths"].items() if "post" in ops}
    assert {"/v1/chat/completions", "/v1/completions", "/add_model", "/remove_model"} <= set(posts)
    for path, op in posts.items():
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        body = components[ref.rsplit("/", 1)[1]]
        assert body["properties"], path
    chat = components["ChatCompletionRequest"]
    assert {"messages", "tools", "response_format", "max_tokens"} <= set(chat["properties"])
    for name, definition in components.items():  # every $ref inside resolves
        for ref in __import__("re").findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(definition)):
            assert ref in components, (name, ref)


async def test_api_docs_work_offline(client):
    """Swagger UI and ReDoc load their scripts from the server itself, never from a CDN."""
    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = (await client.get(page)).text
        assert f"/static-offline-docs/{asset}" in html and "cdn.jsdelivr" not in html and "unpkg.com" not in html
        script = await client.get(f"/static-offline-docs/{asset}")
        assert script.status_code == 200 and len(script.content) > 100_000


async def test_logprobs_need_a_backend_that_gives_them(client):
    error = assert_envelope(await client.post(CHAT, json={"model": "echo-a", "messages": [user("x")],
                                                          "logprobs": True, "top_logprobs": 2}), 400, "logprobs")
    assert error["code"] == "logprobs_not_supported" and "echo backend" in error["message"]
    assert_envelope(await client.post(CHAT, json={"model": "echo-a", "messages": [user("x")], "top_logprobs": 2}),
                    400)
    assert_envelope(await client.post(CHAT, json={"model": "echo-a", "messages": [user("x")], "logprobs": True,
                                                  "top_logprobs": 21}), 400, "top_logprobs")
    assert_envelope(await client.post("/v1/completions", json={"model": "echo-a", "prompt": "x", "logprobs": 2}),
                    400, "logprobs")
