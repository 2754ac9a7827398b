"""Cascades served as models: a plain chat or text completion routed small-to-large.

A request to a cascade's name is answered by its first model whose uncertainty stays at
or under the rung's threshold (the last model's answer always stands). The response is an
ordinary completion plus a ``relaygraph`` field naming the model that answered and each
rung's record (estimator, score, calibrated P(right), threshold, decision, cost); with
span export on, the same decision is on the request's ``chat`` span.
Streaming and ``n`` > 1 are refused: the routing decision needs the whole first answer.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from relaygraph.agents.spans import chat_span, record_reply
from relaygraph.llm.types import ChatPrompt, TextPrompt, to_prompt
from relaygraph.serving.errors import APIError
from relaygraph.serving.protocol import ChatCompletionRequest
from relaygraph.serving.responses import (
    assistant_json,
    chat_logprobs,
    completion_logprobs,
    new_id,
    now,
    usage_json,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from relaygraph.llm.protocol import LLM
    from relaygraph.llm.types import Prompt
    from relaygraph.routing.models import Cascade, ModelResult
    from relaygraph.serving.metrics import ServerMetrics
    from relaygraph.serving.protocol import CompletionRequest


def routed_prompt(request: ChatCompletionRequest | CompletionRequest) -> TextPrompt | ChatPrompt:
    """The prompt a cascade answers: the chat, or one text prompt.

    Raises:
        APIError: Streaming, ``n`` > 1, token-id or several prompts, a suffix.
    """
    if request.stream:
        raise APIError(
            400,
            f"{request.model!r} routes between models after seeing a whole answer; "
            "stream=true is not supported",
            param="stream",
        )
    if request.n != 1:
        raise APIError(400, f"{request.model!r} is a cascade; n must be 1", param="n")
    if isinstance(request, ChatCompletionRequest):
        return request.chat_prompt()
    if request.suffix is not None:
        raise APIError(400, "suffix is not supported", param="suffix")
    if not isinstance(request.prompt, str):
        raise APIError(400, f"{request.model!r} is a cascade; send one text prompt", param="prompt")
    prompt = to_prompt(request.prompt)
    assert isinstance(prompt, TextPrompt)  # a str always is
    return prompt


async def routed_completion(
    cascade: Cascade,
    request: ChatCompletionRequest | CompletionRequest,
    *,
    max_tokens: Callable[[LLM, Prompt, int | None], int],
    metrics: ServerMetrics,
) -> dict[str, Any]:
    """Route the request down the cascade and answer in the endpoint's format."""
    prompt = routed_prompt(request)
    chat = isinstance(request, ChatCompletionRequest)
    if isinstance(request, ChatCompletionRequest):
        requested = request.max_completion_tokens or request.max_tokens
        wants_logprobs, top = bool(request.logprobs), request.top_logprobs or 0
    else:
        requested = request.max_tokens
        wants_logprobs, top = request.logprobs is not None, request.logprobs or 0
    # Every rung must fit the answer: the smallest room left by any of them.
    limit = min(max_tokens(rung.model, prompt, requested) for rung in cascade.rungs)
    params = request.generation_params(limit, logprobs=wants_logprobs, top_logprobs=top)
    operation: Literal["chat", "text_completion"] = "chat" if chat else "text_completion"
    with chat_span(request.model, params, operation=operation) as span:
        result = await asyncio.to_thread(cascade.route, prompt, params)
        record_reply(span, result, prompt.messages if isinstance(prompt, ChatPrompt) else ())
    usage = result.completion.usage
    metrics.count_tokens(request.model, usage)
    metrics.routed.labels(request.model, result.model).inc()
    return _body(result, request, chat=chat, logprobs=wants_logprobs)


def _body(
    result: ModelResult,
    request: ChatCompletionRequest | CompletionRequest,
    *,
    chat: bool,
    logprobs: bool,
) -> dict[str, Any]:
    choice = result.completion.choices[0]
    as_ids = request.return_tokens_as_token_ids
    body: dict[str, Any] = {"index": 0, "finish_reason": choice.finish_reason}
    if chat:
        body["message"] = assistant_json(choice)
        body["logprobs"] = chat_logprobs(choice.logprobs, as_ids) if logprobs else None
    else:
        body["text"] = choice.text
        body["logprobs"] = (
            completion_logprobs(list(choice.logprobs or []), as_ids) if logprobs else None
        )
    usage = result.completion.usage
    return {
        "id": new_id("chatcmpl" if chat else "cmpl"),
        "object": "chat.completion" if chat else "text_completion",
        "created": now(),
        "model": request.model,
        "choices": [body],
        "usage": usage_json(usage),
        "relaygraph": {
            "answered_by": result.model,
            "reason": result.reason,
            # what each rung said, and only that (a final rung is not estimated)
            "cascade": [step.model_dump(exclude_unset=True) for step in result.cascade or []],
        },
    }
