"""Candidates' scores after a prompt with no task, kept per model.

Calibrated scoring (extracted answers, scored choices) subtracts each candidate's
log-probability after a neutral prompt. For scored choices that prompt is the same at
every step of an agent whose instructions do not change, and a game's valid commands
recur from step to step and game to game, so the scores are kept rather than computed
again: the neutral half of a step's scoring mostly disappears. Kept per model object
(weakly: a model let go takes its scores with it) and bounded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.llm.protocol import LLM
    from relaygraph.llm.types import ChatPrompt, Score

KEPT = 16_384
"""Scores kept per model; when full, the oldest half goes."""

_kept: WeakKeyDictionary[LLM, dict[tuple[str, str], Score]] = WeakKeyDictionary()


def prior_scores(
    llm: LLM, prompt: ChatPrompt, candidates: Sequence[str]
) -> dict[str, tuple[Score, bool]]:
    """``llm``'s score of each candidate after ``prompt``, and whether it was computed
    now (a kept score costs nothing: the budget is charged for new ones only).

    A model that cannot be held weakly (an unusual `LLM`) is scored every time."""
    try:
        kept = _kept.setdefault(llm, {})
    except TypeError:
        return {c: (llm.score(prompt, c), True) for c in candidates}
    text = prompt.model_dump_json()
    found: dict[str, tuple[Score, bool]] = {}
    for candidate in candidates:
        if (score := kept.get((text, candidate))) is not None:
            found[candidate] = (score, False)
            continue
        if len(kept) >= KEPT:
            for old in list(kept)[: KEPT // 2]:
                del kept[old]
        kept[text, candidate] = score = llm.score(prompt, candidate)
        found[candidate] = (score, True)
    return found
