"""Errors leave the server in OpenAI's format: ``{"error": {"message", "type", "param", "code"}}``.

`to_api_error` is the one place where library exceptions become HTTP statuses; an
unexpected exception is logged here and reported as a bare 500, never as a stack trace.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from relaygraph.errors import (
    ConfigError,
    ContextWindowError,
    EngineOverloadedError,
    LLMError,
    ModelNotFoundError,
    RelayGraphError,
    RequestRejectedError,
    TransportError,
    first_problem,
)

logger = logging.getLogger("relaygraph.serving")


@dataclass
class APIError(RelayGraphError):
    """An error to return to the client as is."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    retry_after: str | None = None
    """Seconds the client should wait before retrying (the Retry-After header)."""

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _validation_error(exc: ValidationError) -> APIError:
    field, problem = first_problem(exc.errors())
    return APIError(400, f"{field}: {problem}" if field else problem, param=field or None)


def to_api_error(exc: Exception) -> APIError:
    """The client-facing error for an exception raised while serving a request.

    Order matters: subclasses come before their parents (ContextWindowError is a
    ValueError and an LLMError; ModelNotFoundError is a ConfigError).
    """
    error: APIError
    match exc:
        case APIError():
            error = exc
        case ModelNotFoundError():
            error = APIError(404, str(exc), param="model", code="model_not_found")
        case ContextWindowError():
            error = APIError(400, str(exc), param="messages", code="context_length_exceeded")
        case ConfigError():
            error = APIError(400, str(exc), param=exc.parameter)
        case ValidationError():
            error = _validation_error(exc)
        case RequestRejectedError():
            error = APIError(exc.status, str(exc), param=exc.param, code=exc.code)
        case EngineOverloadedError():
            error = APIError(
                503, str(exc), type="server_error", code="engine_overloaded", retry_after="1"
            )
        case TransportError():
            error = APIError(503, f"upstream worker unavailable: {exc}", type="server_error")
        case LLMError():
            error = APIError(500, f"model error: {exc}", type="server_error")
        case _:
            logger.exception("unhandled error while serving a request", exc_info=exc)
            error = APIError(500, "internal server error", type="server_error")
    return error
