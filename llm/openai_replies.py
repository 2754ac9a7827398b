"""Replies of OpenAI-compatible servers read into the contract's types: log-probabilities
(the chat and the legacy completions shapes, and vLLM's ``token_id:N`` form), finish
reasons, token ids, usage with cached tokens, relaygraph's load reports, and the trailing
usage-only stream chunk folded into the finishing one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from relaygraph.llm.types import (
    CompletionChunk,
    FinishReason,
    LoadReport,
    TokenLogprob,
    TopLogprob,
    Usage,
)

if TYPE_CHECKING:
    from relaygraph.llm.constraints import ToolCall

_TOKEN_ID_PREFIX = "token_id:"


def parse_token(token: str) -> tuple[int, str]:
    """Split vLLM's ``token_id:123`` form (text unknown); other servers give text only (id -1)."""
    if token.startswith(_TOKEN_ID_PREFIX):
        return int(token[len(_TOKEN_ID_PREFIX) :]), ""
    return -1, token


def chat_logprobs(data: Mapping[str, Any] | None) -> list[TokenLogprob] | None:
    if not data or data.get("content") is None:
        return None
    out = []
    for entry in data["content"]:
        token_id, _ = parse_token(entry["token"])
        text = (
            bytes(entry["bytes"]).decode("utf-8", "replace")
            if entry.get("bytes")
            else entry["token"]
        )
        top = []
        for alt in entry.get("top_logprobs") or []:
            alt_id, _ = parse_token(alt["token"])
            alt_text = (
                bytes(alt["bytes"]).decode("utf-8", "replace") if alt.get("bytes") else alt["token"]
            )
            top.append(TopLogprob(token_id=alt_id, token=alt_text, logprob=alt["logprob"]))
        out.append(TokenLogprob(token_id=token_id, token=text, logprob=entry["logprob"], top=top))
    return out


def completion_logprobs(
    data: Mapping[str, Any] | None, text: str = ""
) -> list[TokenLogprob] | None:
    """Parse the legacy format; id-form tokens get their text back from ``text_offset``."""
    if not data or data.get("tokens") is None:
        return None
    out = []
    tops = data.get("top_logprobs") or [None] * len(data["tokens"])
    offsets = [*(data.get("text_offset") or []), len(text)]
    for i, (token, logprob, top) in enumerate(
        zip(data["tokens"], data["token_logprobs"], tops, strict=True)
    ):
        token_id, token_text = parse_token(token)
        if token_id >= 0 and len(offsets) == len(data["tokens"]) + 1:
            token_text = text[offsets[i] : offsets[i + 1]]
        alternatives = []
        for alt, alt_lp in (top or {}).items():
            alt_id, alt_text = parse_token(alt)
            alternatives.append(TopLogprob(token_id=alt_id, token=alt_text, logprob=alt_lp))
        alternatives.sort(key=lambda t: -t.logprob)
        out.append(
            TokenLogprob(token_id=token_id, token=token_text, logprob=logprob, top=alternatives)
        )
    return out


def usage_of(data: Mapping[str, Any]) -> Usage | None:
    """A reply's ``usage`` with OpenAI's ``prompt_tokens_details.cached_tokens``."""
    usage = data.get("usage")
    if not usage:
        return None
    details = usage.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=usage.get("prompt_tokens", 0),
        completion_tokens=usage.get("completion_tokens", 0),
        cached_tokens=details.get("cached_tokens") or 0,
    )


def load_of(data: Mapping[str, Any]) -> LoadReport | None:
    """relaygraph's ``relaygraph.load`` extension field, where the worker sends one."""
    extension = data.get("relaygraph")
    load = extension.get("load") if isinstance(extension, Mapping) else None
    return LoadReport.model_validate(load) if load is not None else None


def merge_usage(
    chunk: CompletionChunk, held: CompletionChunk | None
) -> tuple[list[CompletionChunk], CompletionChunk | None]:
    """Fold the wire format's trailing usage-only chunk into the finishing chunk.

    The contract's last chunk carries both ``finish_reason`` and ``usage``; on the wire
    OpenAI sends the usage in a chunk of its own after it. Returns (chunks to yield now,
    chunk to hold back).
    """
    if held is not None and chunk.usage is not None and not chunk.text and not chunk.token_ids:
        held.usage = chunk.usage
        held.load = held.load or chunk.load
        return [held], None
    out = [held] if held is not None else []
    if chunk.finish_reason is not None and chunk.usage is None:
        return out, chunk
    return [*out, chunk], None


def finish_reason(reason: str | None, calls: list[ToolCall]) -> FinishReason:
    """The contract's finish reason for a worker's (vLLM also says ``abort``; content
    filters say ``content_filter``: both are a stop here)."""
    if reason == "length":
        return "length"
    return "tool_calls" if calls else "stop"


def token_ids_of(choice: Mapping[str, Any], logprobs: list[TokenLogprob] | None) -> list[int]:
    if choice.get("token_ids") is not None:
        return list(choice["token_ids"])
    if logprobs and all(t.token_id >= 0 for t in logprobs):
        return [t.token_id for t in logprobs]
    return []
