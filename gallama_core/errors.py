"""Errors that become the OpenAI error envelope ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any


class GallamaError(Exception):
    """An error with an HTTP status that the server reports in the OpenAI error shape."""

    status_code = 500
    error_type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status_code: int | None = None, error_type: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if status_code is not None:
            self.status_code = status_code
        if error_type is not None:
            self.error_type = error_type

    def envelope(self) -> dict[str, Any]:
        return error_envelope(self.message, self.error_type, self.param, self.code)


class InvalidRequestError(GallamaError):
    """The request is malformed or asks for something impossible (400)."""

    status_code = 400
    error_type = "invalid_request_error"


class ModelNotFoundError(GallamaError):
    """The request names a model that is not loaded (404)."""

    status_code = 404
    error_type = "invalid_request_error"

    def __init__(self, message: str):
        super().__init__(message, param="model", code="model_not_found")


class ServiceUnavailableError(GallamaError):
    """No model can serve the request yet (503): loading, or none loaded."""

    status_code = 503
    error_type = "service_unavailable"


class QueueFullError(GallamaError):
    """Too many requests wait for this model already (429, with ``Retry-After``)."""

    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message, param="model", code="queue_full")
        self.retry_after = retry_after


class ConfigError(Exception):
    """A configuration problem found before serving; the message names the model and the key."""


def error_envelope(message: str, error_type: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


# ------------------------------------------------------------------- Anthropic's error shape on its routes

#: Routes that speak the Anthropic Messages API: their errors use Anthropic's shape.
ANTHROPIC_ROUTE_PREFIX = "/v1/messages"
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    503: "overloaded_error", 529: "overloaded_error"}


def anthropic_error(message: str, status_code: int) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` with Anthropic's type for the status code."""
    error_type = _ANTHROPIC_TYPES.get(status_code, "api_error" if status_code >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": error_type, "message": message}}


def speaks_anthropic(path: str) -> bool:
    path = "/" + "/".join(p for p in path.split("/") if p)
    return path == ANTHROPIC_ROUTE_PREFIX or path.startswith(ANTHROPIC_ROUTE_PREFIX + "/")


def error_body(path: str, envelope: dict[str, Any], status_code: int) -> dict[str, Any]:
    """The error body for a route: the OpenAI envelope, or Anthropic's shape on the Messages routes."""
    if speaks_anthropic(path):
        return anthropic_error(envelope["error"]["message"], status_code)
    return envelope
