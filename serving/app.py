"""The OpenAI-compatible FastAPI app: ``/v1/models``, ``/v1/chat/completions``,
``/v1/completions`` (with vLLM's ``prompt_logprobs``), ``/tokenize``, ``/detokenize``,
``/v1/traces/{id}``, ``/health`` and ``/metrics``.

`create_app` wires the routes of one `OpenAIServer` (which owns the served models and
graphs) into FastAPI, behind the `Guard` (keys, body size, concurrency), with handlers
that turn every error into OpenAI's format (`serving.errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from relaygraph.errors import ModelNotFoundError, RelayGraphError, first_problem
from relaygraph.graph.runtime import CompiledAgentGraph
from relaygraph.llm.tool_format import messages_for_template
from relaygraph.llm.types import (
    CompletionChunk,
    GenerationParams,
    Prompt,
    TextPrompt,
    TokenLogprob,
    TokenPrompt,
    to_prompt,
)
from relaygraph.routing.models import Cascade
from relaygraph.serving.config import SecurityConfig
from relaygraph.serving.errors import APIError, to_api_error
from relaygraph.serving.graphs import (
    GraphRun,
    allowed_tools,
    graph_answer_format,
    graph_completion,
    graph_events,
)
from relaygraph.serving.guard import Guard
from relaygraph.serving.metrics import CONTENT_TYPE, ServerMetrics
from relaygraph.serving.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    SamplingFields,
    TokenizeRequest,
    assistant_json,
    chat_logprobs,
    chunk_json,
    completion_logprobs,
    new_id,
    now,
    prompt_logprobs_entries,
    usage_json,
)
from relaygraph.serving.routed import routed_completion
from relaygraph.serving.traces import TraceStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Mapping

    from relaygraph.llm.protocol import LLM
    from relaygraph.llm.types import Completion


T = TypeVar("T")
Served: TypeAlias = "LLM | CompiledAgentGraph | Cascade"
"""What a served name answers with: a model, an agent graph or a cascade of models."""


def _sse(payload: Mapping[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


class OpenAIServer:
    """The routes of the OpenAI-compatible API over named models, agent graphs and cascades.

    Args:
        models: Served name to an `LLM`, a compiled agent graph or a `Cascade`.
        security: Limits (max_tokens cap, request timeout); keys are the `Guard`'s.
        traces: Where graph traces are kept.
    """

    def __init__(
        self,
        models: Mapping[str, Served],
        *,
        security: SecurityConfig,
        traces: TraceStore,
        metrics: ServerMetrics,
    ) -> None:
        self.graphs = {n: m for n, m in models.items() if isinstance(m, CompiledAgentGraph)}
        self.cascades = {n: m for n, m in models.items() if isinstance(m, Cascade)}
        self.models: dict[str, LLM] = {
            n: m for n, m in models.items() if not isinstance(m, CompiledAgentGraph | Cascade)
        }
        self.max_tokens_cap = security.max_tokens_cap
        self.timeout_s = security.request_timeout_s
        self.traces = traces
        self.metrics = metrics
        self.started = now()

    def model(self, name: str) -> LLM:
        if name in self.graphs:
            raise APIError(
                400,
                f"{name!r} is an agent graph; it answers /v1/chat/completions only",
                param="model",
            )
        if name in self.cascades:
            raise APIError(
                400,
                f"{name!r} is a cascade of models; it answers /v1/chat/completions and "
                "/v1/completions only",
                param="model",
            )
        try:
            return self.models[name]
        except KeyError:
            served = ", ".join(sorted([*self.models, *self.graphs, *self.cascades]))
            raise ModelNotFoundError(
                f"model {name!r} is not served here; served models: {served}"
            ) from None

    async def timed(self, work: Awaitable[T]) -> T:
        """Await ``work`` within the request timeout (answered 503 when it runs over)."""
        try:
            return await asyncio.wait_for(work, self.timeout_s)
        except TimeoutError:
            raise APIError(
                503,
                f"request took longer than {self.timeout_s} s",
                type="server_error",
                code="timeout",
            ) from None

    def max_tokens(self, llm: LLM, prompt: Prompt, requested: int | None) -> int:
        """The request's max_tokens, capped; by default whatever room the window leaves."""
        if requested is not None:
            if requested > self.max_tokens_cap:
                raise APIError(
                    400,
                    f"max_tokens is {requested}, above this server's cap of {self.max_tokens_cap}",
                    param="max_tokens",
                )
            return requested
        room = llm.context_window - llm.count_tokens(prompt)
        return max(1, min(self.max_tokens_cap, room))

    # -- routes -----------------------------------------------------------------------

    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    async def list_models(self) -> dict[str, Any]:
        cards = [
            {
                "id": name,
                "object": "model",
                "created": self.started,
                "owned_by": "relaygraph",
                "max_model_len": llm.context_window,
            }
            for name, llm in self.models.items()
        ]
        cards += [
            {"id": name, "object": "model", "created": self.started, "owned_by": "relaygraph-graph"}
            for name in self.graphs
        ]
        cards += [
            {
                "id": name,
                "object": "model",
                "created": self.started,
                "owned_by": "relaygraph-cascade",
                "max_model_len": min(rung.model.context_window for rung in cascade.rungs),
            }
            for name, cascade in self.cascades.items()
        ]
        return {"object": "list", "data": cards}

    async def get_trace(self, trace_id: str) -> dict[str, Any]:
        trace = self.traces.get(trace_id)
        if trace is None:
            raise APIError(404, f"no trace {trace_id!r}", type="not_found_error", param="trace_id")
        return trace.model_dump(mode="json")

    async def metrics_text(self) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)

    async def chat_completions(
        self, request: ChatCompletionRequest
    ) -> dict[str, Any] | StreamingResponse:
        cascade = self.cascades.get(request.model)
        if cascade is not None:
            return await self.timed(self._routed(cascade, request))
        graph = self.graphs.get(request.model)
        if graph is not None:
            # Unknown tools and unusable formats are 400s before anything streams.
            tools = graph.check_tools(allowed_tools(request))
            answer_format = graph.check_answer_format(graph_answer_format(request))
            run = GraphRun(graph, request, tools, answer_format)
            if request.stream:
                events = graph_events(run, self.traces, self.metrics)
                return StreamingResponse(events, media_type="text/event-stream")
            return await self.timed(graph_completion(run, self.traces, self.metrics))
        llm = self.model(request.model)
        prompt = request.chat_prompt()
        # The room left by default also leaves room for the tool list the model is shown.
        room_prompt = prompt
        if request.tools and request.tool_choice != "none":
            shown = [t.to_spec() for t in request.tools]
            room_prompt = prompt.model_copy(
                update={"messages": messages_for_template(prompt.messages, shown)}
            )
        limit = self.max_tokens(
            llm, room_prompt, request.max_completion_tokens or request.max_tokens
        )
        params = request.generation_params(
            limit, logprobs=request.logprobs, top_logprobs=request.top_logprobs or 0
        )
        if request.stream:
            return await self._stream(llm, prompt, params, request, chat=True)
        completion = await self.timed(llm.acomplete(prompt, params))
        self.metrics.count_tokens(
            request.model, completion.usage.prompt_tokens, completion.usage.completion_tokens
        )
        choices = []
        for c in completion.choices:
            choice: dict[str, Any] = {
                "index": c.index,
                "message": assistant_json(c),
                "logprobs": chat_logprobs(c.logprobs, request.return_tokens_as_token_ids),
                "finish_reason": c.finish_reason,
            }
            if request.return_token_ids:
                choice["token_ids"] = c.token_ids
            choices.append(choice)
        usage = completion.usage
        return {
            "id": new_id("chatcmpl"),
            "object": "chat.completion",
            "created": now(),
            "model": request.model,
            "choices": choices,
            "usage": usage_json(usage.prompt_tokens, usage.completion_tokens),
        }

    async def completions(self, request: CompletionRequest) -> dict[str, Any] | StreamingResponse:
        cascade = self.cascades.get(request.model)
        if cascade is not None:
            return await self.timed(self._routed(cascade, request))
        llm = self.model(request.model)
        if request.suffix is not None:
            raise APIError(400, "suffix is not supported", param="suffix")
        raw = request.prompt
        if isinstance(raw, list) and not raw:
            raise APIError(400, "prompt is empty", param="prompt")
        single = isinstance(raw, str) or isinstance(raw[0], int)
        prompts = [to_prompt(raw)] if single else [to_prompt(p) for p in raw]  # type: ignore[arg-type]
        if request.stream and len(prompts) > 1:
            raise APIError(400, "stream=true supports one prompt only", param="prompt")
        choices: list[dict[str, Any]] = []
        prompt_tokens = completion_tokens = 0
        for number, prompt in enumerate(prompts):
            params = request.generation_params(
                self.max_tokens(llm, prompt, request.max_tokens),
                logprobs=request.logprobs is not None,
                top_logprobs=request.logprobs or 0,
            )
            if request.stream:
                return await self._stream(llm, prompt, params, request, chat=False)
            ids = llm.encode(prompt)
            scored = await _prompt_scores(llm, ids, request)
            completion = await self.timed(llm.acomplete(TokenPrompt(token_ids=tuple(ids)), params))
            choices.extend(
                _completion_choices(
                    request,
                    llm,
                    prompt=prompt,
                    ids=ids,
                    scored=scored,
                    completion=completion,
                    number=number,
                )
            )
            prompt_tokens += completion.usage.prompt_tokens
            completion_tokens += completion.usage.completion_tokens
        self.metrics.count_tokens(request.model, prompt_tokens, completion_tokens)
        return {
            "id": new_id("cmpl"),
            "object": "text_completion",
            "created": now(),
            "model": request.model,
            "choices": choices,
            "usage": usage_json(prompt_tokens, completion_tokens),
        }

    async def tokenize(self, request: TokenizeRequest) -> dict[str, Any]:
        llm = self.model(request.model)
        if request.messages is not None:
            tokens = llm.encode(request.chat_prompt())
        elif request.add_special_tokens:
            tokens = llm.encode(TextPrompt(text=request.prompt or ""))
        else:
            tokens = llm.tokenize(request.prompt or "")
        return {"count": len(tokens), "max_model_len": llm.context_window, "tokens": tokens}

    async def detokenize(self, request: DetokenizeRequest) -> dict[str, str]:
        return {"prompt": self.model(request.model).detokenize(request.tokens)}

    async def _routed(
        self, cascade: Cascade, request: ChatCompletionRequest | CompletionRequest
    ) -> dict[str, Any]:
        return await routed_completion(
            cascade, request, max_tokens=self.max_tokens, metrics=self.metrics
        )

    # -- streaming --------------------------------------------------------------------

    async def _stream(
        self,
        llm: LLM,
        prompt: Prompt,
        params: GenerationParams,
        request: SamplingFields,
        *,
        chat: bool,
    ) -> StreamingResponse:
        if params.n != 1:
            raise APIError(400, "stream=true supports n=1 only", param="n")
        chunks = llm.astream(prompt, params)
        # Pull the first chunk before answering, so a bad request still gets a 4xx status.
        first: CompletionChunk | None = await anext(aiter(chunks), None)
        events = _sse_events(chunks, first, request, chat=chat)
        return StreamingResponse(events, media_type="text/event-stream")


async def _sse_events(
    chunks: AsyncIterator[CompletionChunk],
    first: CompletionChunk | None,
    request: SamplingFields,
    *,
    chat: bool,
) -> AsyncIterator[str]:
    """SSE lines for a stream; closing this generator (client gone) cancels generation."""
    ident, created = new_id("chatcmpl" if chat else "cmpl"), now()
    kind = "chat.completion.chunk" if chat else "text_completion"
    head = {"id": ident, "object": kind, "created": created, "model": request.model}
    usage = None
    try:
        if chat:
            role = {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "finish_reason": None,
            }
            yield _sse(head | {"choices": [role]})
        chunk, calls = first, 0
        while chunk is not None:
            usage = chunk.usage or usage
            payload = chunk_json(
                chunk, chat=chat, ident=ident, created=created, request=request, calls_before=calls
            )
            calls += len(chunk.tool_calls or ())
            yield _sse(payload)
            chunk = await anext(chunks, None)
        if request.stream_options and request.stream_options.include_usage and usage:
            totals = usage_json(usage.prompt_tokens, usage.completion_tokens)
            yield _sse(head | {"choices": [], "usage": totals})
    except Exception as exc:  # headers are sent: report in-band, as OpenAI does
        yield _sse(to_api_error(exc).body())
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    yield _sse("[DONE]")


async def _prompt_scores(
    llm: LLM, ids: list[int], request: CompletionRequest
) -> list[TokenLogprob] | None:
    """Log-probabilities of prompt tokens start..n-1 (start: 1, or ``prompt_logprobs_start``),
    when echo+logprobs or prompt_logprobs ask."""
    echo_k = request.logprobs if request.echo else None
    wanted = [k for k in (request.prompt_logprobs, echo_k) if k is not None]
    if not wanted:
        return None
    start = _score_start(request, ids)
    if len(ids) <= start:
        return []
    score = await llm.ascore(TokenPrompt(token_ids=tuple(ids[:start])), ids[start:], max(wanted))
    return score.tokens


def _score_start(request: CompletionRequest, ids: list[int]) -> int:
    """The first prompt position scored.

    Raises:
        APIError: ``prompt_logprobs_start`` with echo, or beyond the prompt.
    """
    start = request.prompt_logprobs_start
    if start is None:
        return 1
    if request.echo:
        raise APIError(400, "prompt_logprobs_start cannot be combined with echo", param="echo")
    if start >= len(ids):
        raise APIError(
            400,
            f"prompt_logprobs_start is {start}, but the prompt has {len(ids)} tokens",
            param="prompt_logprobs_start",
        )
    return start


def _truncate_top(tokens: list[TokenLogprob], k: int) -> list[TokenLogprob]:
    return [t.model_copy(update={"top": t.top[:k]}) for t in tokens]


def _completion_choices(
    request: CompletionRequest,
    llm: LLM,
    *,
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
            first, head = None, []
            if request.echo:
                first = (ids[0], llm.detokenize(ids[:1]))
                head = _truncate_top(scored or [], request.logprobs)
            tokens = head + list(c.logprobs or [])
            choice["logprobs"] = completion_logprobs(tokens, as_ids, first)
        if request.prompt_logprobs is not None and scored is not None:
            choice["prompt_logprobs"] = prompt_logprobs_entries(
                _truncate_top(scored, request.prompt_logprobs), _score_start(request, ids)
            )
        if request.return_token_ids:
            choice["token_ids"] = c.token_ids
            choice["prompt_token_ids"] = ids
        out.append(choice)
    return out


def create_app(
    models: Mapping[str, Served],
    *,
    security: SecurityConfig | None = None,
    traces: TraceStore | None = None,
) -> FastAPI:
    """A FastAPI app serving these models and graphs under their names.

    Example:
        >>> app = create_app({"smollm2-135m": load_llm("smollm2-135m")})  # doctest: +SKIP
        >>> uvicorn.run(app, port=8000)                                    # doctest: +SKIP
    """
    security = security or SecurityConfig()
    metrics = ServerMetrics()
    server = OpenAIServer(models, security=security, traces=traces or TraceStore(), metrics=metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for served in models.values():  # close upstream connections on shutdown
            if (aclose := getattr(served, "aclose", None)) is not None:
                await aclose()
            if (close := getattr(served, "close", None)) is not None:
                close()

    app = FastAPI(title="relaygraph", version="1", lifespan=lifespan)
    app.add_api_route("/health", server.health, methods=["GET"])
    app.add_api_route("/metrics", server.metrics_text, methods=["GET"])
    app.add_api_route("/v1/models", server.list_models, methods=["GET"])
    app.add_api_route("/v1/traces/{trace_id}", server.get_trace, methods=["GET"])
    app.add_api_route(
        "/v1/chat/completions", server.chat_completions, methods=["POST"], response_model=None
    )
    app.add_api_route("/v1/completions", server.completions, methods=["POST"], response_model=None)
    app.add_api_route("/tokenize", server.tokenize, methods=["POST"])
    app.add_api_route("/detokenize", server.detokenize, methods=["POST"])

    async def error(request: Request, exc: Exception) -> JSONResponse:
        api_error = to_api_error(exc)
        return JSONResponse(api_error.body(), status_code=api_error.status)

    # Starlette re-raises whatever the catch-all Exception handler answers (to log it as a
    # crash), so expected errors get handlers of their own.
    for expected in (APIError, RelayGraphError, ValidationError, Exception):
        app.add_exception_handler(expected, error)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)  # registered for this type only
        errors = exc.errors()
        field, problem = first_problem(errors, skip=("body",))
        if field:
            message = f"{field}: {problem}"
        elif errors[0]["type"] in ("model_attributes_type", "dict_type", "json_invalid"):
            message = "request body must be a JSON object"
        else:  # a rule across fields (tool_choice against tools, one format)
            message = problem.removeprefix("Value error, ")
        return JSONResponse(APIError(400, message, param=field or None).body(), status_code=400)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)  # registered for this type only
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        body = APIError(exc.status_code, str(exc.detail), type=kind).body()
        return JSONResponse(body, status_code=exc.status_code)

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_middleware(
        Guard,
        keys=security.keys(),
        max_body_bytes=security.max_body_bytes,
        max_concurrency=security.max_concurrency_per_key,
        metrics=metrics,
    )
    if security.cors_origins:  # off unless configured; outermost, so preflights skip the keys
        app.add_middleware(
            CORSMiddleware,
            allow_origins=security.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    return app
