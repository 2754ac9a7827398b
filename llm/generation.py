"""One sequence being generated: its sampler, grammar, stop strings and tool-call
splitting, and how one token of it is chosen and accounted (`Generation.advance`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from relaygraph.errors import LLMError
from relaygraph.llm.sampling import log_softmax, select_token, top_k_indices
from relaygraph.llm.types import FinishReason, GenerationParams, TokenLogprob, TopLogprob

if TYPE_CHECKING:
    from relaygraph.llm.constraints import ToolCall
    from relaygraph.llm.grammar import TokenMatcher
    from relaygraph.llm.llamacpp import LlamaRuntime
    from relaygraph.llm.stops import TextAssembler
    from relaygraph.llm.tool_format import ToolCallSplitter


class Vocabulary:
    """Token texts and log-probability records of one model's vocabulary."""

    def __init__(self, runtime: LlamaRuntime) -> None:
        self._runtime = runtime

    def token_str(self, token_id: int) -> str:
        piece = self._runtime.piece(token_id)
        if piece:
            return piece.decode("utf-8", errors="replace")
        return self._runtime.token_text(token_id)

    def token_logprob(self, lsm: np.ndarray, token: int, top: int) -> TokenLogprob:
        """The record of ``token`` under log-softmaxed logits ``lsm``, with ``top`` alternatives."""
        return TokenLogprob(
            token_id=token,
            token=self.token_str(token),
            logprob=float(lsm[token]),
            rank=1 + int(np.count_nonzero(lsm > lsm[token])),
            top=self.top(lsm, top),
        )

    def top(self, lsm: np.ndarray, k: int) -> list[TopLogprob]:
        return [
            TopLogprob(token_id=int(i), token=self.token_str(int(i)), logprob=float(lsm[i]))
            for i in top_k_indices(lsm, k)
        ]


@dataclass(frozen=True, slots=True)
class Step:
    """What one decoding step produced for one sequence.

    ``text`` is the reply's content that became safe to show; ``tool_calls`` the calls
    that this step completed (with tools, call text is never content).
    """

    sequence: Generation
    token_id: int
    text: str
    logprob: TokenLogprob | None
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(slots=True)
class Generation:
    """One completion being generated in a slot (engine-internal state).

    ``logits`` holds the next-token distribution once the sequence's prompt (or its last
    token) has been evaluated; `advance` consumes it.
    """

    index: int
    prompt_ids: list[int]
    params: GenerationParams
    rng: np.random.Generator | None
    assembler: TextAssembler
    matcher: TokenMatcher | None = None
    splitter: ToolCallSplitter | None = None
    slot: int = -1
    logits: np.ndarray | None = None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def advance(self, runtime: LlamaRuntime, vocabulary: Vocabulary, *, model: str) -> Step:
        """Choose, record and account one token from the pending logits.

        With a grammar, the token is chosen from the masked logits, while the reported
        log-probabilities stay those of the model's own, unmasked distribution (what an
        uncertainty estimate must see). A finished grammar ends the sequence ("stop");
        the token budget running out first ends it with "length".
        """
        assert self.logits is not None  # the scheduler advances evaluated sequences only
        raw, self.logits = self.logits, None
        params = self.params
        logits = raw if self.matcher is None else self.matcher.mask(raw)
        token = select_token(
            logits, temperature=params.temperature, top_p=params.top_p, rng=self.rng
        )
        logprob = None
        if params.logprobs:
            logprob = vocabulary.token_logprob(log_softmax(raw), token, params.top_logprobs)
            self.logprobs.append(logprob)
        self.token_ids.append(token)
        if self.matcher is not None:
            try:
                self.matcher.advance(token)
            except RuntimeError as exc:  # an all-forbidden row: the grammar cannot go on
                raise LLMError(str(exc), model=model) from None
        if runtime.is_end_of_generation(token):
            text = self.assembler.finish()
            self.finish_reason = "stop"
        else:
            text = self.assembler.feed(runtime.piece(token))
            if self.assembler.stopped or (self.matcher is not None and self.matcher.complete):
                text += self.assembler.finish()
                self.finish_reason = "stop"
            elif len(self.token_ids) >= params.max_tokens:
                text += self.assembler.finish()
                self.finish_reason = "length"
        calls: list[ToolCall] = []
        if self.splitter is not None:
            text, calls = self.splitter.feed(text)
            if self.finish_reason is not None:
                rest, more = self.splitter.finish()
                text, calls = text + rest, calls + more
                if self.splitter.calls and self.finish_reason == "stop":
                    self.finish_reason = "tool_calls"
        return Step(sequence=self, token_id=token, text=text, logprob=logprob, tool_calls=calls)

    def content(self) -> str:
        """The reply's text so far (without tool-call text, with tools)."""
        return self.assembler.text if self.splitter is None else self.splitter.content
