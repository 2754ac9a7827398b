"""Errors leave the server in OpenAI's format: ``{"error": {"message", "type", "param", "code"}}``.

`to_api_error` is the one place where library exceptions become HTTP statuses; an
unexpected exception is logged here and reported as a bare 500, never as a stack trace.
`add_error_handlers` installs the app's handlers: those errors, FastAPI's request
validation (one message naming the field) and Starlette's HTTP errors (404s).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

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

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

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


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error ``app`` raises in OpenAI's format."""
    # Starlette re-raises whatever the catch-all Exception handler answers (to log it as a
    # crash), so expected errors get handlers of their own.
    for expected in (APIError, RelayGraphError, ValidationError, Exception):
        app.add_exception_handler(expected, _error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)


async def _error(request: Request, exc: Exception) -> JSONResponse:
    api_error = to_api_error(exc)
    headers = {"Retry-After": api_error.retry_after} if api_error.retry_after else None
    return JSONResponse(api_error.body(), status_code=api_error.status, headers=headers)


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # registered for this type only
    errors = exc.errors()
    field, problem = first_problem(errors, skip=("body",))
    kind = errors[0]["type"]
    if kind == "json_invalid":  # located at ("body", offset): there is no field to name
        field, offset = "", errors[0]["loc"][-1]
        message = f"request body is not valid JSON: {errors[0]['ctx']['error']} at {offset}"
    elif field:
        message = f"{field}: {problem}"
    elif kind in ("model_attributes_type", "dict_type"):
        # FastAPI reads the body as JSON only when its Content-Type says it is JSON.
        sent_json = "json" in request.headers.get("content-type", "")
        message = (
            "request body must be a JSON object"
            if sent_json
            else "request body must be JSON, sent with Content-Type: application/json"
        )
    else:  # a rule across fields (tool_choice against tools, one format)
        message = problem.removeprefix("Value error, ")
    return JSONResponse(APIError(400, message, param=field or None).body(), status_code=400)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # registered for this type only
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    body = APIError(exc.status_code, str(exc.detail), type=kind).body()
    return JSONResponse(body, status_code=exc.status_code)
