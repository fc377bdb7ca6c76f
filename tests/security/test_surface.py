"""Keys, the closed surface and bounded input (issue: security and robustness), through real HTTP."""

from __future__ import annotations

import httpx
import openai
import pytest

from gallama_core.api.app import build_state, create_app
from gallama_core.api.security import SurfaceConfig, iter_routes

# The keys keyed_server runs with (tests/security/conftest.py).
API_KEY, ADMIN_KEY = "sk-test-inference-Key", "sk-test-ADMIN-key"
CHAT = {"model": "smol", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
PUBLIC = {"/health", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"}


def _envelope(r: httpx.Response, status: int, error_type: str) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == error_type
    return error


async def test_nothing_but_the_allow_list_answers_without_a_key(tmp_path, monkeypatch):
    """Every route of the app (plugin routes included), every method, path variants: 2xx only for the public
    allow-list (and GET routes a plugin tagged public: static web UI files) when keys are set."""
    monkeypatch.setenv("GALLAMA_HOME_PATH", str(tmp_path))
    state = build_state()
    app = create_app(state, [], surface=SurfaceConfig(api_keys=[API_KEY], admin_keys=[ADMIN_KEY]))
    routes = []
    for route in iter_routes(app):
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            path = route.path.replace("{name}", "index.html")
            for key in [k for k in route.__dict__.get("param_convertors", {})]:
                path = path.replace("{" + key + "}", "x")
            routes.append((method, path, set(getattr(route, "tags", None) or ())))
    assert {(m, p) for m, p, _ in routes} >= {("POST", "/v1/chat/completions"), ("POST", "/add_model"),
                                               ("GET", "/list_loaded_models"), ("GET", "/v1/models"),
                                               ("POST", "/v1/messages"), ("POST", "/v1/messages/count_tokens"),
                                               ("POST", "/v1/responses"), ("GET", "/v1/responses/x"),
                                               ("DELETE", "/v1/responses/x")}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
        for method, path, tags in routes:
            public = method in ("GET", "HEAD") and (path in PUBLIC or "public" in tags or path.startswith("/static-offline"))
            variants = {path, "/" + path, path + "/", path.replace("/", "//"), path.upper(),
                        path.replace("/", "%2F", 2)}
            for variant in variants:
                for headers in ({}, {"authorization": "Bearer wrong"}, {"x-api-key": API_KEY.lower()}):
                    r = await http.request(method, variant, headers={"content-type": "application/json", **headers},
                                           content=b"{}" if method == "POST" else None)
                    if not (public and variant == path):
                        assert not 200 <= r.status_code < 300, (method, variant, headers, r.status_code)
            if not public and "management" not in tags and method == "GET":
                ok = await http.request(method, path, headers={"authorization": f"Bearer {API_KEY}"})
                assert ok.status_code != 401  # the right key passes (case-sensitive: the lowered one did not)


def test_keys_on_inference_and_management(keyed_server, gguf):
    no_key = httpx.post(keyed_server + "/v1/chat/completions", json=CHAT)
    assert _envelope(no_key, 401, "authentication_error")["code"] == "invalid_api_key"
    client = openai.OpenAI(base_url=keyed_server + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**CHAT)
    for key in (API_KEY, ADMIN_KEY):
        ok = openai.OpenAI(base_url=keyed_server + "/v1", api_key=key, max_retries=0).chat.completions.create(**CHAT)
        assert ok.choices[0].message.content is not None
    assert httpx.post(keyed_server + "/v1/chat/completions", json=CHAT,
                      headers={"x-api-key": API_KEY}).status_code == 200
    add = {"model_id": gguf, "model_name": "other"}
    _envelope(httpx.post(keyed_server + "/add_model", json=add, headers={"x-api-key": API_KEY}), 401,
              "authentication_error")
    _envelope(httpx.post(keyed_server + "/remove_model", json={"model_name": "smol"},
                         headers={"authorization": f"Bearer {API_KEY}"}), 401, "authentication_error")
    _envelope(httpx.get(keyed_server + "/list_loaded_models", headers={"x-api-key": API_KEY}), 401,
              "authentication_error")
    assert httpx.get(keyed_server + "/list_loaded_models", headers={"x-api-key": ADMIN_KEY}).status_code == 200
    health = httpx.get(keyed_server + "/health")
    assert health.status_code == 200 and set(health.json()) <= {"status", "models"}  # no hosts to the public
    for key in (API_KEY, "sk-wrong"):
        assert "instances" not in httpx.get(keyed_server + "/health", headers={"x-api-key": key}).json()
    admin = httpx.get(keyed_server + "/health", headers={"x-api-key": ADMIN_KEY}).json()
    assert [(i["model_name"], i["location"]) for i in admin["instances"]] == [("smol", "local")]


def test_host_header_check_stops_dns_rebinding(open_server):
    port = open_server.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
        r = httpx.post(open_server + "/remove_model", json={"model_name": "smol"}, headers={"host": host})
        assert _envelope(r, 403, "permission_error")["code"] == "bad_host"
        assert httpx.get(open_server + "/v1/models", headers={"host": host}).status_code == 403
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
        assert httpx.get(open_server + "/v1/models", headers={"host": host}).status_code == 200
    assert httpx.get(open_server + "/health").json()["models"] == {"smol": "ready"}


def test_json_routes_need_json(open_server, keyed_server):
    body = b'{"model": "smol", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"content-type": content_type} if content_type else {}
        r = httpx.post(open_server + "/v1/chat/completions", content=body, headers=headers)
        assert _envelope(r, 415, "invalid_request_error")["code"] == "unsupported_media_type"
        r = httpx.post(open_server + "/add_model", content=b'{"model_id": "x"}', headers=headers)
        assert r.status_code == 415
    ok = httpx.post(open_server + "/v1/chat/completions", content=body,
                    headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


def test_cors_is_off_unless_configured(open_server, keyed_server):
    origin = {"origin": "http://evil.example"}
    r = httpx.get(open_server + "/v1/models", headers=origin)
    assert "access-control-allow-origin" not in r.headers
    pre = httpx.options(open_server + "/v1/chat/completions",
                        headers={**origin, "access-control-request-method": "POST"})
    assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
    allowed = {"origin": "http://allowed.example", "x-api-key": API_KEY}
    r = httpx.get(keyed_server + "/v1/models", headers=allowed)
    assert r.headers["access-control-allow-origin"] == "http://allowed.example"
    assert "access-control-allow-credentials" not in r.headers
    pre = httpx.options(keyed_server + "/v1/chat/completions",
                        headers={"origin": "http://allowed.example", "access-control-request-method": "POST"})
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "http://allowed.example"
    r = httpx.get(keyed_server + "/v1/models", headers={"origin": "http://evil.example", "x-api-key": API_KEY})
    assert "access-control-allow-origin" not in r.headers


def test_body_size_is_bounded_before_parsing(keyed_server):
    headers = {"x-api-key": API_KEY, "content-type": "application/json"}
    big = b'{"model": "smol", "messages": [{"role": "user", "content": "' + b"x" * (2 << 20) + b'"}]}'
    r = httpx.post(keyed_server + "/v1/chat/completions", content=big, headers=headers, timeout=30)
    assert _envelope(r, 413, "invalid_request_error")["code"] == "request_too_large"

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"model": "smol", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"y" * (64 << 10)
        yield b'"}]}'

    r = httpx.post(keyed_server + "/v1/chat/completions", content=chunks(), headers=headers, timeout=30)
    assert r.status_code == 413
    assert httpx.get(keyed_server + "/health").status_code == 200


async def test_management_is_refused_on_a_public_bind_without_an_admin_key(tmp_path, monkeypatch):
    monkeypatch.setenv("GALLAMA_HOME_PATH", str(tmp_path))
    state = build_state()
    for surface, expected in ((SurfaceConfig(bind_host="0.0.0.0"), 403),
                              (SurfaceConfig(bind_host="0.0.0.0", api_keys=[API_KEY]), 403),
                              (SurfaceConfig(bind_host="127.0.0.1"), 400)):  # 400: reaches the route (bad body)
        app = create_app(state, [], surface=surface)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
            r = await http.post("/add_model", json={}, headers={"x-api-key": API_KEY})
            assert r.status_code == expected, r.text


def test_header_limits(open_server):
    many = {f"x-h{i}": "v" for i in range(10_000)}
    r = httpx.get(open_server + "/v1/models", headers=many)
    assert r.status_code == 431 and r.json()["error"]["code"] == "headers_too_large"
    r = httpx.get(open_server + "/v1/models", headers={"x-big": "a" * (1 << 20)})
    assert r.status_code in (431, 400)  # 400: the HTTP parser's own limit, when it comes first
    assert httpx.get(open_server + "/v1/models", headers={f"x-h{i}": "v" for i in range(50)}).status_code == 200
