"""The OpenAI-compatible FastAPI app: ``/v1/models``, ``/v1/chat/completions``,
``/v1/completions`` (with vLLM's ``prompt_logprobs``), ``/tokenize``, ``/detokenize``,
``/health``.

Every error leaves in OpenAI's format, ``{"error": {"message", "type", "param", "code"}}``,
with a meaningful status; an unexpected exception is logged here and reported as a bare
500, never as a stack trace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from relaygraph.errors import (
    ConfigError,
    ContextWindowError,
    LLMError,
    ModelNotFoundError,
    RelayGraphError,
    RequestRejectedError,
    TransportError,
)
from relaygraph.llm.protocol import LLM
from relaygraph.llm.types import (
    ChatPrompt,
    Completion,
    CompletionChunk,
    GenerationParams,
    Prompt,
    TextPrompt,
    TokenLogprob,
    TokenPrompt,
    to_prompt,
)
from relaygraph.serving.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
    _SamplingFields,
    chat_logprobs,
    chunk_json,
    completion_logprobs,
    new_id,
    now,
    prompt_logprobs_entries,
    usage_json,
)

logger = logging.getLogger("relaygraph.serving")


class APIError(Exception):
    """An error to return to the client in OpenAI's format."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        }


def _as_api_error(exc: Exception) -> APIError:
    """Translate library exceptions into client-facing errors."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ModelNotFoundError):
        return APIError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, ContextWindowError):
        return APIError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, ConfigError):
        return APIError(400, str(exc), param=exc.parameter)
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        return APIError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param)
    if isinstance(exc, RequestRejectedError):
        return APIError(exc.status, str(exc), param=exc.param, code=exc.code)
    if isinstance(exc, TransportError):
        return APIError(503, f"upstream worker unavailable: {exc}", type="server_error")
    if isinstance(exc, LLMError):
        return APIError(500, f"model error: {exc}", type="server_error")
    logger.exception("unhandled error while serving a request", exc_info=exc)
    return APIError(500, "internal server error", type="server_error")


def _sse(payload: Mapping[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


def create_app(models: Mapping[str, LLM], *, max_tokens_cap: int = 4096) -> FastAPI:
    """An app serving these models under their names.

    Args:
        models: Served model name to `LLM`.
        max_tokens_cap: Largest ``max_tokens`` a request may ask for.
    """
    app = FastAPI(title="relaygraph", version="1")
    started = now()

    async def _error(request: Request, exc: Exception) -> JSONResponse:
        error = _as_api_error(exc)
        return JSONResponse(error.body(), status_code=error.status)

    # Starlette re-raises whatever the catch-all Exception handler answers (to log it as a
    # crash), so expected errors get handlers of their own.
    for expected in (APIError, RelayGraphError, ValidationError, Exception):
        app.add_exception_handler(expected, _error)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"] if p != "body"]
        param = ".".join(loc) or None
        message = (
            f"{param}: {first['msg']}" if param else "request body must be a JSON object"
        )
        return JSONResponse(APIError(400, message, param=param).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(
            APIError(exc.status_code, str(exc.detail), type=kind).body(), status_code=exc.status_code
        )

    def model(name: str) -> LLM:
        try:
            return models[name]
        except KeyError:
            served = ", ".join(sorted(models))
            raise ModelNotFoundError(f"model {name!r} is not served here; served models: {served}") from None

    def max_tokens(llm: LLM, prompt: Prompt, requested: int | None) -> int:
        if requested is not None:
            if requested > max_tokens_cap:
                raise APIError(
                    400,
                    f"max_tokens is {requested}, above this server's cap of {max_tokens_cap}",
                    param="max_tokens",
                )
            return requested
        room = llm.context_window - llm.count_tokens(prompt)
        return max(1, min(max_tokens_cap, room))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": started,
                    "owned_by": "relaygraph",
                    "max_model_len": llm.context_window,
                }
                for name, llm in models.items()
            ],
        }

    async def stream_response(
        llm: LLM, prompt: Prompt, params: GenerationParams, request: _SamplingFields, chat: bool
    ) -> StreamingResponse:
        if params.n != 1:
            raise APIError(400, "stream=true supports n=1 only", param="n")
        ident, created = new_id("chatcmpl" if chat else "cmpl"), now()
        chunks = llm.astream(prompt, params)
        # Pull the first chunk before answering, so a bad request still gets a 4xx status.
        first: CompletionChunk | None = await anext(aiter(chunks), None)

        async def events() -> AsyncIterator[str]:
            usage = None
            try:
                if chat:
                    head = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                    yield _sse({"id": ident, "object": "chat.completion.chunk", "created": created,
                                "model": request.model, "choices": [head]})
                chunk = first
                while chunk is not None:
                    usage = chunk.usage or usage
                    yield _sse(chunk_json(chunk, chat=chat, ident=ident, created=created, request=request))
                    chunk = await anext(chunks, None)
                if request.stream_options and request.stream_options.include_usage and usage:
                    yield _sse({"id": ident, "object": "chat.completion.chunk" if chat else "text_completion",
                                "created": created, "model": request.model, "choices": [],
                                "usage": usage_json(usage.prompt_tokens, usage.completion_tokens)})
            except Exception as exc:  # headers are sent: report in-band, as OpenAI does
                yield _sse(_as_api_error(exc).body())
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]
            yield _sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: ChatCompletionRequest) -> dict[str, Any] | StreamingResponse:
        llm = model(request.model)
        if request.tools:
            raise APIError(400, f"model {request.model!r} is a plain model and takes no tools", param="tools")
        prompt = ChatPrompt(messages=tuple(m.to_message() for m in request.messages))
        limit = max_tokens(llm, prompt, request.max_completion_tokens or request.max_tokens)
        params = request.generation_params(
            limit, logprobs=request.logprobs, top_logprobs=request.top_logprobs or 0
        )
        if request.stream:
            return await stream_response(llm, prompt, params, request, chat=True)
        completion = await llm.acomplete(prompt, params)
        as_ids = request.return_tokens_as_token_ids
        choices = []
        for c in completion.choices:
            choice: dict[str, Any] = {
                "index": c.index,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": chat_logprobs(c.logprobs, as_ids),
                "finish_reason": c.finish_reason,
            }
            if request.return_token_ids:
                choice["token_ids"] = c.token_ids
            choices.append(choice)
        return {
            "id": new_id("chatcmpl"),
            "object": "chat.completion",
            "created": now(),
            "model": request.model,
            "choices": choices,
            "usage": usage_json(completion.usage.prompt_tokens, completion.usage.completion_tokens),
        }

    @app.post("/v1/completions", response_model=None)
    async def completions(request: CompletionRequest) -> dict[str, Any] | StreamingResponse:
        llm = model(request.model)
        if request.suffix is not None:
            raise APIError(400, "suffix is not supported", param="suffix")
        raw = request.prompt
        if isinstance(raw, list) and not raw:
            raise APIError(400, "prompt is empty", param="prompt")
        single = isinstance(raw, str) or isinstance(raw[0], int)
        prompts: list[Prompt] = [to_prompt(raw)] if single else [to_prompt(p) for p in raw]  # type: ignore[arg-type]
        if request.stream:
            if len(prompts) > 1:
                raise APIError(400, "stream=true supports one prompt only", param="prompt")
            limit = max_tokens(llm, prompts[0], request.max_tokens)
            params = request.generation_params(
                limit, logprobs=request.logprobs is not None, top_logprobs=request.logprobs or 0
            )
            return await stream_response(llm, prompts[0], params, request, chat=False)
        choices: list[dict[str, Any]] = []
        prompt_tokens = completion_tokens = 0
        for number, prompt in enumerate(prompts):
            limit = max_tokens(llm, prompt, request.max_tokens)
            params = request.generation_params(
                limit, logprobs=request.logprobs is not None, top_logprobs=request.logprobs or 0
            )
            ids = llm.encode(prompt)
            scored = await _prompt_scores(llm, ids, request)
            completion = await llm.acomplete(TokenPrompt(token_ids=tuple(ids)), params)
            choices.extend(_completion_choices(request, llm, prompt, ids, scored, completion, number))
            prompt_tokens += completion.usage.prompt_tokens
            completion_tokens += completion.usage.completion_tokens
        return {
            "id": new_id("cmpl"),
            "object": "text_completion",
            "created": now(),
            "model": request.model,
            "choices": choices,
            "usage": usage_json(prompt_tokens, completion_tokens),
        }

    @app.post("/tokenize")
    async def tokenize(request: TokenizeRequest) -> dict[str, Any]:
        llm = model(request.model)
        if request.messages is not None:
            tokens = llm.encode(ChatPrompt(messages=tuple(m.to_message() for m in request.messages)))
        elif request.add_special_tokens:
            tokens = llm.encode(TextPrompt(text=request.prompt or ""))
        else:
            tokens = llm.tokenize(request.prompt or "")
        return {"count": len(tokens), "max_model_len": llm.context_window, "tokens": tokens}

    @app.post("/detokenize")
    async def detokenize(request: DetokenizeRequest) -> dict[str, str]:
        return {"prompt": model(request.model).detokenize(request.tokens)}

    return app


async def _prompt_scores(
    llm: LLM, ids: list[int], request: CompletionRequest
) -> list[TokenLogprob] | None:
    """Log-probabilities of prompt tokens 1..n-1, when echo+logprobs or prompt_logprobs ask."""
    wanted = [k for k in (request.prompt_logprobs, request.logprobs if request.echo else None) if k is not None]
    if not wanted:
        return None
    if len(ids) < 2:
        return []
    score = await llm.ascore(TokenPrompt(token_ids=(ids[0],)), ids[1:], max(wanted))
    return score.tokens


def _completion_choices(
    request: CompletionRequest,
    llm: LLM,
    prompt: Prompt,
    ids: list[int],
    scored: list[TokenLogprob] | None,
    completion: Completion,
    number: int,
) -> list[dict[str, Any]]:
    as_ids = request.return_tokens_as_token_ids
    echo_text = ""
    if request.echo:
        echo_text = prompt.text if isinstance(prompt, TextPrompt) else llm.detokenize(ids)
    out = []
    for c in completion.choices:
        choice: dict[str, Any] = {
            "index": number * request.n + c.index,
            "text": echo_text + c.text,
            "logprobs": None,
            "finish_reason": c.finish_reason,
        }
        if request.logprobs is not None:
            k = request.logprobs
            first, head = None, []
            if request.echo:
                first = (ids[0], llm.detokenize(ids[:1]))
                head = [t.model_copy(update={"top": t.top[:k]}) for t in scored or []]
            choice["logprobs"] = completion_logprobs(head + list(c.logprobs or []), as_ids, first)
        if request.prompt_logprobs is not None and scored is not None:
            k = request.prompt_logprobs
            choice["prompt_logprobs"] = prompt_logprobs_entries(
                [t.model_copy(update={"top": t.top[:k]}) for t in scored]
            )
        if request.return_token_ids:
            choice["token_ids"] = c.token_ids
            choice["prompt_token_ids"] = ids
        out.append(choice)
    return out
