"""Legacy ``/v1/completions`` pieces: the prompt's own log-probabilities (``echo``, vLLM's
``prompt_logprobs`` and relaygraph's ``prompt_logprobs_start``) and the choices built from
them and the completion."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relaygraph.llm.types import Score, TextPrompt, TokenPrompt, combined_load
from relaygraph.serving.errors import APIError
from relaygraph.serving.responses import completion_logprobs, prompt_logprobs_entries

if TYPE_CHECKING:
    from relaygraph.llm.protocol import LLM
    from relaygraph.llm.types import Completion, GenerationParams, Prompt, TokenLogprob
    from relaygraph.serving.protocol import CompletionRequest


async def scored_completion(
    llm: LLM, ids: list[int], params: GenerationParams, request: CompletionRequest
) -> tuple[list[TokenLogprob] | None, Completion]:
    """The prompt's scores (when asked) and the completion, as one timed unit of work; the
    load report covers both."""
    score = await _prompt_scores(llm, ids, request)
    completion = await llm.acomplete(TokenPrompt(token_ids=tuple(ids)), params)
    if score is None:
        return None, completion
    completion = completion.model_copy(update={"load": combined_load(score.load, completion.load)})
    return score.tokens, completion


async def _prompt_scores(llm: LLM, ids: list[int], request: CompletionRequest) -> Score | None:
    """Log-probabilities of prompt tokens start..n-1 (start: 1, or ``prompt_logprobs_start``),
    when echo+logprobs or prompt_logprobs ask."""
    echo_k = request.logprobs if request.echo else None
    wanted = [k for k in (request.prompt_logprobs, echo_k) if k is not None]
    if not wanted:
        return None
    start = _score_start(request, ids)
    if len(ids) <= start:
        return Score(model=llm.name, prompt_tokens=len(ids), tokens=[], latency_s=0.0)
    return await llm.ascore(TokenPrompt(token_ids=tuple(ids[:start])), ids[start:], max(wanted))


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


def completion_choices(
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
