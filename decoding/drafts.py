"""Drafters: what proposes the tokens a speculative round verifies.

A `Drafter` continues a token sequence with up to ``k`` ids of the target's vocabulary.
`ModelDrafter` asks a model sharing the target's tokenizer (a self-draft, a cheaper
precision, a distilled student); `PromptLookupDrafter` copies what followed the latest
earlier occurrence of the sequence's last n-gram (prompt lookup decoding), free, and
strong when the answer quotes its context (extractive QA, tool outputs, edits).

With sampling, a drafter reports the distribution each proposal was drawn from, or None
for a deterministic proposal (the verifier then treats it as a point mass, which keeps
speculative sampling exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from relaygraph.errors import ConfigError
from relaygraph.llm.sampling import token_distribution
from relaygraph.llm.types import GenerationParams, TokenPrompt

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.llm.protocol import LLM


@runtime_checkable
class FullDistribution(Protocol):
    """A model that exposes whole next-token distributions (the in-process engine)."""

    def logits(self, prompt_ids: Sequence[int], continuation: Sequence[int]) -> np.ndarray:
        """Raw logits after the prompt and after each continuation token: one row per
        position, ``len(continuation) + 1`` rows of vocabulary size."""
        ...


@dataclass(frozen=True, slots=True)
class Proposal:
    """Drafted ids and, per id, the distribution it was sampled from (None: chosen
    deterministically)."""

    ids: list[int]
    distributions: list[np.ndarray] | None = None

    def first(self, k: int) -> Proposal:
        """The first ``k`` drafted ids (and their distributions)."""
        rows = self.distributions
        return Proposal(self.ids[:k], None if rows is None else rows[:k])


@runtime_checkable
class Drafter(Protocol):
    """Proposes continuations in the target's vocabulary."""

    @property
    def name(self) -> str: ...

    @property
    def free(self) -> bool:
        """Whether proposing costs next to nothing (a lookup, not a model): the decoder
        then proposes the longest window first and lets the window policy choose
        knowing what the round holds, and checks after a round with nothing proposed
        where a proposal would have resumed."""
        ...

    def propose(
        self,
        ids: Sequence[int],
        k: int,
        params: GenerationParams,
        rng: np.random.Generator,
        ends: frozenset[int],
    ) -> Proposal:
        """Up to ``k`` ids continuing ``ids`` (stopping after an id of ``ends``); sampled
        at ``params``' temperature when the drafter can, else chosen deterministically."""
        ...


class ModelDrafter:
    """Drafts with a model: greedily, or by sampling from its whole distribution when it
    exposes one (`FullDistribution`) and the request samples."""

    def __init__(self, model: LLM) -> None:
        self.model = model

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def free(self) -> bool:
        return False

    def propose(
        self,
        ids: Sequence[int],
        k: int,
        params: GenerationParams,
        rng: np.random.Generator,
        ends: frozenset[int],
    ) -> Proposal:
        if params.temperature == 0 or not isinstance(self.model, FullDistribution):
            greedy = GenerationParams(max_tokens=k, temperature=0.0)
            completion = self.model.complete(TokenPrompt(token_ids=tuple(ids)), greedy)
            return Proposal(list(completion.choices[0].token_ids[:k]))
        drafted: list[int] = []
        rows: list[np.ndarray] = []
        for _ in range(k):
            (logits,) = self.model.logits([*ids, *drafted], [])
            q = token_distribution(logits, temperature=params.temperature, top_p=params.top_p)
            drafted.append(int(rng.choice(q.shape[0], p=q)))
            rows.append(q)
            if drafted[-1] in ends:
                break
        return Proposal(drafted, rows)


@dataclass(frozen=True, slots=True)
class PromptLookupDrafter:
    """Prompt lookup: find the sequence's last ``n``-gram earlier in it (longest ``n``
    first, down to ``min_ngram``; latest match first) and propose the ids that followed.
    Proposes nothing when no n-gram recurs; the target then adds its token alone."""

    max_ngram: int = 3
    min_ngram: int = 1
    name: str = "prompt-lookup"
    free: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.min_ngram <= self.max_ngram:
            raise ConfigError(
                f"need 1 <= min_ngram <= max_ngram, got {self.min_ngram} and {self.max_ngram}",
                parameter="min_ngram",
            )

    def propose(
        self,
        ids: Sequence[int],
        k: int,
        params: GenerationParams,
        rng: np.random.Generator,
        ends: frozenset[int],
    ) -> Proposal:
        seq = np.asarray(ids)
        for n in range(min(self.max_ngram, len(seq) - 1), self.min_ngram - 1, -1):
            tail = seq[-n:]
            windows = np.lib.stride_tricks.sliding_window_view(seq[:-1], n)
            starts = np.flatnonzero((windows == tail).all(axis=1))
            if starts.size:
                follow = int(starts[-1]) + n
                drafted = [int(t) for t in seq[follow : follow + k]]
                cut = next((i for i, t in enumerate(drafted) if t in ends), None)
                return Proposal(drafted if cut is None else drafted[: cut + 1])
        return Proposal([])


def resumes_at(
    drafter: Drafter,
    ids: Sequence[int],
    decoded: Sequence[int],
    rng: np.random.Generator,
    ends: frozenset[int],
) -> int:
    """After how many of the ``decoded`` tokens (the target's own, following ``ids``)
    ``drafter`` would first have proposed greedily a token that stood (0: at none before
    the last): where copying could have resumed in a round the target decoded alone.
    Meant for a free drafter: each position asks it once."""
    greedy = GenerationParams(temperature=0.0)
    for m in range(1, len(decoded)):
        guess = drafter.propose([*ids, *decoded[:m]], 1, greedy, rng, ends).ids
        if guess and guess[0] == decoded[m]:
            return m
    return 0
