"""`Scorer`: an embedded model's scoring — log-probabilities of a given continuation, or
the raw logits after each of its tokens — as jobs on the model's `Scheduler`.

Scoring shares the scheduler with generation so that it reuses cached prompt prefixes
and runs in the same batches; a scoring job samples nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import numpy as np

from relaygraph.errors import ConfigError
from relaygraph.llm.job_results import score_of
from relaygraph.llm.jobs import Request
from relaygraph.llm.types import GenerationParams, TokenPrompt

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.llm.jobs import Job
    from relaygraph.llm.local_tokens import LocalTokens
    from relaygraph.llm.scheduler import Scheduler
    from relaygraph.llm.types import Prompt, PromptInput, Score

_SCORING = GenerationParams(max_tokens=1)  # a scoring job samples nothing


class Scorer:
    """Scores continuations with one model's scheduler and tokens.

    Example:
        >>> scorer = Scorer(scheduler, tokens, name="smollm2-135m")       # doctest: +SKIP
        >>> scorer.score("The capital of France is", " Paris").tokens[0].logprob
        ... # doctest: +SKIP
        -1.9
    """

    def __init__(self, scheduler: Scheduler, tokens: LocalTokens, *, name: str) -> None:
        self._scheduler = scheduler
        self._tokens = tokens
        self._name = name

    def logits(self, prompt_ids: Sequence[int], continuation: Sequence[int]) -> np.ndarray:
        """Raw next-token logits after ``prompt_ids`` and after each continuation token
        (``len(continuation) + 1`` rows), from one evaluation that reuses a cached prefix.

        The whole distribution, which exact speculative sampling needs; `score` reports
        only the top alternatives.
        """
        full = [*prompt_ids, *continuation]
        if not prompt_ids:
            raise ConfigError("the prompt is empty", parameter="prompt_ids")
        self._tokens.encode(TokenPrompt(token_ids=tuple(full)))  # validates the ids
        self._tokens.check_fits(len(full), 0)
        return np.concatenate(self._job(full, len(prompt_ids)).done.result().rows)

    def score(
        self,
        prompt: PromptInput | Prompt,
        continuation: str | Sequence[int],
        top_logprobs: int = 0,
    ) -> Score:
        """Log-probabilities of ``continuation`` after ``prompt``, from one batched evaluation.

        Worked example: prompt ids [p0 p1 p2], continuation [c0 c1]. The engine evaluates
        from the first uncached position and keeps logits at positions 2, 3, 4: row 0
        (after p2) scores c0, row 1 (after c0) scores c1, row 2 (after c1) is ``next_top``.
        """
        began = time.perf_counter()
        job = self._submit(prompt, continuation, top_logprobs)
        return score_of(
            self._name, job.done.result(), self._scheduler.vocabulary, top_logprobs, began
        )

    async def ascore(
        self,
        prompt: PromptInput | Prompt,
        continuation: str | Sequence[int],
        top_logprobs: int = 0,
    ) -> Score:
        """`score` without a thread; a cancelled caller frees its slot at the next step."""
        began = time.perf_counter()
        job = self._submit(prompt, continuation, top_logprobs)
        try:
            await asyncio.wrap_future(job.done)
        finally:
            job.cancel()
        return score_of(self._name, job, self._scheduler.vocabulary, top_logprobs, began)

    def _submit(
        self, prompt: PromptInput | Prompt, continuation: str | Sequence[int], top_logprobs: int
    ) -> Job:
        if not 0 <= top_logprobs <= 20:
            raise ConfigError("top_logprobs must be in 0..20", parameter="top_logprobs")
        prompt_ids = self._tokens.encode(prompt)
        cont = (
            self._tokens.tokenize(continuation)
            if isinstance(continuation, str)
            else list(continuation)
        )
        if not cont:
            raise ConfigError("continuation is empty", parameter="continuation")
        self._tokens.encode(cont)  # validates the ids against the vocabulary
        full = prompt_ids + cont
        self._tokens.check_fits(len(full), 0)
        return self._job(full, len(prompt_ids))

    def _job(self, full: list[int], n_prompt: int) -> Job:
        """Queue the evaluation of ``full``, keeping logits from position n_prompt - 1."""
        return self._scheduler.submit(
            Request(full, stop=()), _SCORING, samples=range(0), score_from=n_prompt - 1
        )
