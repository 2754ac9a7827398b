"""Where REASON and ACT are in an agent's reply, in characters and in a tokenizer's tokens.

The character spans are the ReAct parser's (`reason_act_spans` in ``agents/react.py``,
which defines the format): REASON is everything before the action label, ACT runs from
the label to the end of the paragraph the action is read from.

Token masks are computed on the *student's* tokenizer: each token of the target covers
the characters its prefix adds when detokenized; a token overlapping a span belongs to
it, and a token that straddles the REASON/ACT boundary (a merged ``\\nAction``) counts
as ACT, since the action is what must come out exactly. The REASON mask runs up to the
ACT label, so the line break that ends the thought is REASON's: it decides where the
reasoning stops, and a loss on the spans alone would otherwise never train it. What
follows ACT (a hallucinated observation) stays in neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from relaygraph.agents.react import ReActParseError, reason_act_spans
from relaygraph.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.llm.protocol import LLM


class NoStructureError(ConfigError):
    """A reply without a REASON/ACT structure (no parseable action)."""


@dataclass(frozen=True, slots=True)
class ReasonActSpans:
    """Character spans ``[start, end)`` of REASON and ACT in a reply."""

    reason: tuple[int, int]
    act: tuple[int, int]


def find_spans(reply: str) -> ReasonActSpans:
    """REASON and ACT spans of a ReAct reply.

    Example:
        >>> find_spans("Thought: look it up.\\nAction: search[Paris]\\n")
        ReasonActSpans(reason=(0, 20), act=(21, 42))

    Raises:
        NoStructureError: The reply has no action a ReAct parser can read.
    """
    try:
        reason, act = reason_act_spans(reply)
    except ReActParseError as exc:
        raise NoStructureError(f"no REASON/ACT structure: {exc}") from None
    return ReasonActSpans(reason=reason, act=act)


def token_masks(
    tokenizer: LLM, target: str, target_ids: Sequence[int], spans: ReasonActSpans
) -> tuple[list[int], list[int]]:
    """0/1 masks over ``target_ids`` for REASON and ACT (a token is in at most one).

    Raises:
        ConfigError: The tokens do not detokenize back to ``target`` (another tokenizer).
    """
    ends = [len(tokenizer.detokenize(target_ids[: k + 1])) for k in range(len(target_ids))]
    if tokenizer.detokenize(target_ids) != target:
        raise ConfigError(
            f"{tokenizer.name}'s tokens of the target do not read back as the target; "
            "the ids were made by another tokenizer"
        )
    reason, act = [0] * len(target_ids), [0] * len(target_ids)
    thought = (spans.reason[0], spans.act[0])  # with the whitespace that ends it
    start = 0
    for k, end in enumerate(ends):
        covers = (start, max(end, start + 1))  # a partial UTF-8 token adds no character
        if _overlaps(covers, spans.act):
            act[k] = 1
        elif _overlaps(covers, thought):
            reason[k] = 1
        start = end
    return reason, act


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]
