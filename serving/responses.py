"""Response shapes of the OpenAI-compatible API: ids, log-probabilities in the chat,
legacy and vLLM ``prompt_logprobs`` forms, usage with cached tokens, assistant messages,
stream chunks, and relaygraph's ``relaygraph.load`` extension field."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from relaygraph.llm.openai_wire import call_json

if TYPE_CHECKING:
    from relaygraph.llm.types import (
        Choice,
        CompletionChunk,
        LoadReport,
        TokenLogprob,
        TopLogprob,
        Usage,
    )
    from relaygraph.serving.protocol import SamplingFields


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def token_label(token_id: int, text: str, as_ids: bool) -> str:
    return f"token_id:{token_id}" if as_ids else text


def chat_logprobs(tokens: list[TokenLogprob] | None, as_ids: bool) -> dict[str, Any] | None:
    """OpenAI chat format: ``{"content": [{token, logprob, bytes, top_logprobs}]}``."""
    if tokens is None:
        return None

    def entry(t: TokenLogprob | TopLogprob) -> dict[str, Any]:
        return {
            "token": token_label(t.token_id, t.token, as_ids),
            "logprob": t.logprob,
            "bytes": list(t.token.encode("utf-8")),
        }

    return {"content": [entry(t) | {"top_logprobs": [entry(a) for a in t.top]} for t in tokens]}


def completion_logprobs(
    tokens: list[TokenLogprob], as_ids: bool, unscored_first: tuple[int, str] | None = None
) -> dict[str, Any]:
    """Legacy completions format: parallel lists of tokens, logprobs, alternatives, offsets.

    With echo, the prompt's first token has no context to be scored in: pass it as
    ``unscored_first`` (id, text) and it is listed with a null logprob.
    """
    labels: list[str] = []
    values: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    offset = 0
    if unscored_first is not None:
        token_id, text = unscored_first
        labels.append(token_label(token_id, text, as_ids))
        values.append(None)
        tops.append(None)
        offsets.append(0)
        offset = len(text)
    for t in tokens:
        labels.append(token_label(t.token_id, t.token, as_ids))
        values.append(t.logprob)
        tops.append({token_label(a.token_id, a.token, as_ids): a.logprob for a in t.top})
        offsets.append(offset)
        offset += len(t.token)
    return {
        "tokens": labels,
        "token_logprobs": values,
        "top_logprobs": tops,
        "text_offset": offsets,
    }


def prompt_logprobs_entries(
    tokens: list[TokenLogprob], start: int = 1
) -> list[dict[str, dict[str, Any]] | None]:
    """vLLM's ``prompt_logprobs``: per prompt position ``{token_id: {logprob, rank,
    decoded_token}}`` for the actual token and the top alternatives; the first position,
    which has no context to be scored in, is None, as is every position before ``start``
    (``tokens`` begin there)."""
    out: list[dict[str, dict[str, Any]] | None] = [None] * start
    for t in tokens:
        entry = {
            str(a.token_id): {"logprob": a.logprob, "rank": rank, "decoded_token": a.token}
            for rank, a in enumerate(t.top, start=1)
        }
        entry[str(t.token_id)] = {"logprob": t.logprob, "rank": t.rank, "decoded_token": t.token}
        out.append(entry)
    return out


def usage_json(usage: Usage) -> dict[str, Any]:
    """OpenAI's ``usage``, with ``prompt_tokens_details.cached_tokens`` (prefix-cache hits)."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def assistant_json(choice: Choice) -> dict[str, Any]:
    """A completion choice as OpenAI's assistant ``message``."""
    message: dict[str, Any] = {"role": "assistant", "content": choice.text}
    if choice.tool_calls:
        message["content"] = choice.text or None
        message["tool_calls"] = [call_json(c) for c in choice.tool_calls]
    return message


def chunk_json(
    chunk: CompletionChunk,
    *,
    chat: bool,
    ident: str,
    created: int,
    request: SamplingFields,
    calls_before: int = 0,
) -> dict[str, Any]:
    """One SSE payload for a streamed chunk (without the usage, sent separately).

    ``calls_before`` counts the tool calls already streamed: each call's ``index``.
    """
    as_ids = request.return_tokens_as_token_ids
    choice: dict[str, Any] = {"index": 0, "finish_reason": chunk.finish_reason}
    if chat:
        choice["delta"] = {"content": chunk.text}
        if chunk.tool_calls:
            choice["delta"]["tool_calls"] = [
                call_json(c, index) for index, c in enumerate(chunk.tool_calls, calls_before)
            ]
        choice["logprobs"] = chat_logprobs(chunk.logprobs, as_ids)
    else:
        choice["text"] = chunk.text
        choice["logprobs"] = (
            completion_logprobs(chunk.logprobs, as_ids) if chunk.logprobs is not None else None
        )
    if request.return_token_ids:
        choice["token_ids"] = chunk.token_ids
    return {
        "id": ident,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": request.model,
        "choices": [choice],
    }


def load_json(load: LoadReport | None) -> dict[str, Any]:
    """The ``relaygraph.load`` extension field of a response or a stream's last chunk."""
    return {} if load is None else {"relaygraph": {"load": load.model_dump()}}
