"""The front's closed surface, checked before any route runs (one pure-ASGI middleware, no per-token cost).

In this order, for every HTTP request:

0. **Header limits**: more than 128 headers or 64 KiB of them is a 431.
1. **Host check** (binds on loopback only): the ``Host`` header must name this machine (``localhost``,
   ``127.0.0.1``, ``[::1]``, with or without the port), so that a web page whose DNS name was re-pointed at
   127.0.0.1 (DNS rebinding) reaches nothing.
2. **CORS**: off unless ``--cors-origin`` lists origins; then those origins (never a wildcard with credentials)
   get the CORS headers and their preflights are answered.
3. **Keys**: with ``--api-key`` / ``--admin-key`` set, inference routes need an API key or the admin key and
   management routes (``/add_model``, ``/remove_model``, routes tagged ``management``) need the admin key, sent
   as ``Authorization: Bearer KEY`` or ``x-api-key: KEY`` and compared in constant time. Without any key,
   management is refused unless the server listens on loopback (where the Host check holds). Public without
   a key: ``GET /health`` (its per-instance list, which names hosts, only for a caller who may manage models),
   the API docs (``/docs``, ``/redoc``, ``/openapi.json``, their assets) and GET routes tagged
   ``public`` (a plugin's static web UI).
4. **Content type**: a POST needs ``application/json`` (415 otherwise): a browser can then not send one as a
   "simple request" without a CORS preflight.
5. **Body size**: a body over ``max_body_bytes`` is refused (413) from its ``Content-Length``, or as soon as
   the bytes read pass the limit, before anything parses it.

While the server drains (SIGTERM, Ctrl+C), every request but ``/health`` gets a 503.

Every refusal is an OpenAI error envelope (Anthropic's error shape on the Messages routes).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from starlette.routing import Match

from gallama_core.errors import error_body

#: Header limits: more, or larger, is a 431 before anything else runs.
MAX_HEADERS = 128
MAX_HEADER_BYTES = 64 << 10

PUBLIC_PATHS = {"/health", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"}
MANAGEMENT_PATHS = {"/add_model", "/remove_model"}
#: Where Swagger UI's and ReDoc's own files are served from (public like the docs pages).
DOCS_ASSETS = "/static-offline-docs"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class SurfaceConfig:
    """What the front lets in (``gallama run`` options, ``GALLAMA_*`` variables and ``server:`` in gallama.yaml)."""

    api_keys: list[str] = field(default_factory=list)
    admin_keys: list[str] = field(default_factory=list)
    cors_origins: list[str] = field(default_factory=list)
    max_body_bytes: int = 8 << 20
    bind_host: str = "127.0.0.1"

    @property
    def loopback(self) -> bool:
        return is_loopback(self.bind_host)

    @property
    def keys_set(self) -> bool:
        return bool(self.api_keys or self.admin_keys)


def _matches(presented: str, keys: list[str]) -> bool:
    found = False
    for key in keys:  # every key compared, in constant time each: no early exit that times which one matched
        found |= hmac.compare_digest(presented.encode(), key.encode())
    return found


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return None


def presented_key(scope) -> str | None:
    auth = _header(scope, b"authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return _header(scope, b"x-api-key")


def management_refusal(config: SurfaceConfig, key: str | None) -> str | None:
    """Why a caller presenting ``key`` may not manage models: ``"unauthorized"`` (the admin key is set and was not
    presented), ``"disabled"`` (keys are set but no admin key, or no key on a non-loopback bind), None if it may."""
    if config.admin_keys:
        return None if key is not None and _matches(key, config.admin_keys) else "unauthorized"
    return "disabled" if config.keys_set or not config.loopback else None


def may_manage(config: SurfaceConfig | None, scope) -> bool:
    """Whether this request could call the management routes (every request may without a surface: unit tests)."""
    return config is None or management_refusal(config, presented_key(scope)) is None


def normalized_path(path: str) -> str:
    """``//v1//models/`` → ``/v1/models`` (what the router would also treat as one route)."""
    parts = [p for p in path.split("/") if p]
    return "/" + "/".join(parts)


async def _reply(scope, send, status: int, message: str, error_type: str, code: str | None = None,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    envelope = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    body = json.dumps(error_body(scope.get("path", ""), envelope, status)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    pass


class SurfaceMiddleware:
    def __init__(self, app, config: SurfaceConfig, classify: Callable[[dict], str],
                 draining: Callable[[], bool] | None = None):
        self.app = app
        self.config = config
        self.classify = classify  # scope -> "public" | "management" | "inference"
        self.draining = draining or (lambda: False)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        config = self.config
        headers = scope.get("headers") or ()
        if len(headers) > MAX_HEADERS or sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES:
            return await _reply(scope, send, 431, f"too many or too large headers (at most {MAX_HEADERS} headers, "
                                f"{MAX_HEADER_BYTES // 1024} KiB in all)", "invalid_request_error",
                                "headers_too_large", headers=[(b"connection", b"close")])
        if config.loopback and not self._host_allowed(scope):
            return await _reply(scope, send, 403, "the Host header does not name this server (requests to a loopback "
                                "server must use localhost, 127.0.0.1 or [::1])", "permission_error", "bad_host")
        origin = _header(scope, b"origin")
        cors = origin is not None and origin in config.cors_origins
        if scope["method"] == "OPTIONS" and origin is not None and _header(scope, b"access-control-request-method"):
            if not cors:
                return await _reply(scope, send, 403, f"origin {origin} is not allowed (--cors-origin)", "permission_error",
                                    "cors_origin_not_allowed")
            await send({"type": "http.response.start", "status": 204, "headers": self._cors_headers(origin, True)})
            return await send({"type": "http.response.body", "body": b""})

        kind = self.classify(scope)
        if self.draining() and normalized_path(scope["path"]) != "/health":
            return await _reply(scope, send, 503, "the server is shutting down", "service_unavailable", "shutting_down",
                                headers=[(b"connection", b"close")])
        key = presented_key(scope)
        if kind == "management":
            refusal = management_refusal(config, key)
            if refusal == "unauthorized":
                return await self._unauthorized(scope, send, "this route needs the admin key")
            if refusal == "disabled":
                return await _reply(scope, send, 403, "model management is disabled: start the server with --admin-key "
                                    "(or listen on loopback without keys)", "permission_error", "management_disabled")
        elif kind == "inference" and config.keys_set:
            if key is None or not _matches(key, config.api_keys + config.admin_keys):
                return await self._unauthorized(scope, send, "a valid API key is required")

        if scope["method"] in ("POST", "PUT", "PATCH"):
            content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if content_type != "application/json" and not content_type.endswith("+json"):
                return await _reply(scope, send, 415, f"the request body must be sent as application/json (got "
                                    f"{content_type or 'no content type'})", "invalid_request_error",
                                    "unsupported_media_type")
            length = _header(scope, b"content-length")
            if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
                return await self._too_large(scope, send)
            receive = self._limited(receive)

        if cors:
            original_send = send

            async def send(message):  # noqa: F811 - the response with CORS headers
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []),
                                                      *self._cors_headers(origin, False)]}
                await original_send(message)

        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._too_large(scope, send)

    def _host_allowed(self, scope) -> bool:
        host = _header(scope, b"host")
        if host is None:
            return True  # HTTP/1.0 clients; a browser always sends Host
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if host.startswith("[") and "]" in host:
            name = host[:host.index("]") + 1]
        return name.lower() in LOOPBACK_NAMES or name == self.config.bind_host

    def _cors_headers(self, origin: str, preflight: bool) -> list[tuple[bytes, bytes]]:
        headers = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
        if preflight:
            headers += [(b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                        (b"access-control-allow-headers", b"authorization, content-type, x-api-key"),
                        (b"access-control-max-age", b"600")]
        return headers

    async def _unauthorized(self, scope, send, message: str) -> None:
        await _reply(scope, send, 401, message + " (Authorization: Bearer KEY, or x-api-key: KEY)", "authentication_error",
                     "invalid_api_key", headers=[(b"www-authenticate", b"Bearer")])

    async def _too_large(self, scope, send) -> None:
        await _reply(scope, send, 413, f"the request body is larger than {self.config.max_body_bytes} bytes "
                     "(--max-body-mb)", "invalid_request_error", "request_too_large")

    def _limited(self, receive) -> Callable[[], Awaitable[Any]]:
        limit, seen = self.config.max_body_bytes, 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        return limited


def iter_routes(container) -> list:
    """Every leaf route of an app or router, through included routers (plugin routes included)."""
    leaves = []
    for route in getattr(container, "routes", ()):
        inner = getattr(route, "original_router", None)
        if inner is not None:
            leaves += iter_routes(inner)
        else:
            leaves.append(route)
    return leaves


def route_classifier(app) -> Callable[[dict], str]:
    """``scope`` → "public", "management" or "inference", from the app's routes (plugin routes included)."""
    routes = iter_routes(app)

    def classify(scope) -> str:
        path = normalized_path(scope["path"])
        if scope["method"] in ("GET", "HEAD") and (path in PUBLIC_PATHS or path.startswith(DOCS_ASSETS + "/")):
            return "public"
        if path in MANAGEMENT_PATHS:
            return "management"
        probe = {**scope, "path": path}
        for route in routes:
            match, _ = route.matches(probe)
            if match == Match.NONE:
                continue
            tags = set(getattr(route, "tags", None) or ())
            if "management" in tags:
                return "management"
            if "public" in tags and scope["method"] in ("GET", "HEAD"):
                return "public"
            break
        return "inference"

    return classify
