"""`OpenAIServer`: the routes of the OpenAI-compatible API — ``/v1/models``,
``/v1/chat/completions``, ``/v1/completions`` (with vLLM's ``prompt_logprobs``),
``/tokenize``, ``/detokenize``, ``/v1/traces``, ``/v1/traces/{id}``, ``/health`` and
``/metrics`` — over the served models, agent graphs and cascades.

Each route checks its request, answers from the model, graph or cascade its ``model``
names within the request timeout, and raises `APIError` (or a library error) for
`serving.errors` to turn into OpenAI's format. `serving.app.create_app` mounts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

# FastAPI reads the routes' request types (`Request` and the protocol's models below)
# from their annotations at runtime.
from fastapi import Request  # noqa: TC002
from fastapi.responses import Response, StreamingResponse

from relaygraph.agents.spans import chat_span, record_completion
from relaygraph.errors import ModelNotFoundError
from relaygraph.graph.runtime import CompiledAgentGraph
from relaygraph.llm.tool_format import messages_for_template
from relaygraph.llm.types import (
    GenerationParams,
    Prompt,
    TextPrompt,
    Usage,
    combined_load,
    to_prompt,
)
from relaygraph.routing.models import Cascade
from relaygraph.serving.completions import completion_choices, scored_completion
from relaygraph.serving.errors import APIError
from relaygraph.serving.graphs import (
    GraphRun,
    allowed_tools,
    graph_answer_format,
    graph_completion,
    graph_events,
)
from relaygraph.serving.metrics import CONTENT_TYPE
from relaygraph.serving.protocol import (  # noqa: TC001
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    SamplingFields,
    TokenizeRequest,
)
from relaygraph.serving.responses import (
    assistant_json,
    chat_logprobs,
    load_json,
    new_id,
    now,
    usage_json,
)
from relaygraph.serving.routed import routed_completion
from relaygraph.serving.streaming import SSEStream, disconnected, timeout_error

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

    from relaygraph.llm.protocol import LLM
    from relaygraph.serving.config import SecurityConfig
    from relaygraph.serving.metrics import ServerMetrics
    from relaygraph.serving.traces import TraceStore


T = TypeVar("T")
Served: TypeAlias = "LLM | CompiledAgentGraph | Cascade"
"""What a served name answers with: a model, an agent graph or a cascade of models."""


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

    async def timed(self, work: Awaitable[T], client: Request) -> T:
        """Await ``work`` within the request timeout (503 when it runs over), cancelling
        it when the time is up or the client disconnects, so its engine slots are freed
        at the next step rather than when the generation would have ended."""
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(disconnected(client))
        try:
            await asyncio.wait({task, gone}, timeout=self.timeout_s, return_when="FIRST_COMPLETED")
            if task.done():
                return task.result()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if gone.done():
                raise APIError(499, "client closed the request", code="client_closed_request")
            raise timeout_error(self.timeout_s)
        finally:
            gone.cancel()

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

    async def list_traces(self, limit: int = 100) -> dict[str, Any]:
        """The newest traces, newest first, one summary line each."""
        recent = await asyncio.to_thread(self.traces.recent, max(1, min(limit, 1000)))
        rows = [
            {
                "id": t.run_id,
                "graph": t.graph,
                "task": t.task,
                "answer": t.answer,
                "steps": len(t.steps),
                "error": t.error.message if t.error else None,
                "latency_s": sum(s.latency_s for s in t.steps),
            }
            for t in recent
        ]
        return {"object": "list", "data": rows}

    async def get_trace(self, trace_id: str) -> dict[str, Any]:
        trace = await asyncio.to_thread(self.traces.get, trace_id)
        if trace is None:
            raise APIError(404, f"no trace {trace_id!r}", type="not_found_error", param="trace_id")
        return trace.model_dump(mode="json")

    async def metrics_text(self) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)

    async def chat_completions(
        self, request: ChatCompletionRequest, client: Request
    ) -> dict[str, Any] | StreamingResponse:
        cascade = self.cascades.get(request.model)
        if cascade is not None:
            return await self.timed(self._routed(cascade, request), client)
        graph = self.graphs.get(request.model)
        if graph is not None:
            # Unknown tools and unusable formats are 400s before anything streams.
            tools = graph.check_tools(allowed_tools(request))
            answer_format = graph.check_answer_format(graph_answer_format(request))
            run = GraphRun(graph, request, tools, answer_format)
            if request.stream:
                events = graph_events(run, self.traces, self.metrics)
                return StreamingResponse(events, media_type="text/event-stream")
            return await self.timed(graph_completion(run, self.traces, self.metrics), client)
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
            return await self._stream(llm, prompt, params, request, client, chat=True)
        with chat_span(request.model, params) as span:
            completion = await self.timed(llm.acomplete(prompt, params), client)
            record_completion(span, completion, prompt.messages)
        self.metrics.count_tokens(request.model, completion.usage)
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
        return {
            "id": new_id("chatcmpl"),
            "object": "chat.completion",
            "created": now(),
            "model": request.model,
            "choices": choices,
            "usage": usage_json(completion.usage),
        } | load_json(completion.load)

    async def completions(
        self, request: CompletionRequest, client: Request
    ) -> dict[str, Any] | StreamingResponse:
        cascade = self.cascades.get(request.model)
        if cascade is not None:
            return await self.timed(self._routed(cascade, request), client)
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
        usage, load = Usage(), None
        for number, prompt in enumerate(prompts):
            params = request.generation_params(
                self.max_tokens(llm, prompt, request.max_tokens),
                logprobs=request.logprobs is not None,
                top_logprobs=request.logprobs or 0,
            )
            if request.stream:
                return await self._stream(llm, prompt, params, request, client, chat=False)
            ids = llm.encode(prompt)
            work = scored_completion(llm, ids, params, request)
            with chat_span(request.model, params, operation="text_completion") as span:
                scored, completion = await self.timed(work, client)
                record_completion(span, completion)
            choices.extend(
                completion_choices(
                    request,
                    llm,
                    prompt=prompt,
                    ids=ids,
                    scored=scored,
                    completion=completion,
                    number=number,
                )
            )
            usage += completion.usage
            load = combined_load(load, completion.load)
        self.metrics.count_tokens(request.model, usage)
        return {
            "id": new_id("cmpl"),
            "object": "text_completion",
            "created": now(),
            "model": request.model,
            "choices": choices,
            "usage": usage_json(usage),
        } | load_json(load)

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
        client: Request,
        *,
        chat: bool,
    ) -> StreamingResponse:
        if params.n != 1:
            raise APIError(400, "stream=true supports n=1 only", param="n")
        began = time.monotonic()
        chunks = llm.astream(prompt, params)
        # Pull the first chunk before answering, so a bad request still gets a 4xx status
        # (and a full engine a 503); the wait for it counts against the request timeout.
        try:
            first = await self.timed(anext(aiter(chunks), None), client)
        except BaseException:
            await chunks.aclose()  # type: ignore[attr-defined]
            raise
        self.metrics.time_to_first_token.labels(request.model).observe(time.monotonic() - began)
        stream = SSEStream(
            chunks, request, began=began, timeout_s=self.timeout_s, metrics=self.metrics
        )
        events = stream.events(first, chat=chat)
        return StreamingResponse(events, media_type="text/event-stream")
