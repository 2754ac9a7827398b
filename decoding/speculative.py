"""Speculative decoding across two machines: a drafter proposes, a target verifies.

Each round the drafter proposes ``k`` tokens (``k`` from a `WindowPolicy`; a model sharing
the target's tokenizer, or prompt lookup, decoding/drafts.py), the target evaluates the
prefix plus those tokens in one pass, and the output keeps the longest prefix the target
accepts plus one token of the target's own. A round in which the drafter proposes
nothing (prompt lookup where the answer leaves its source) asks a remote target to
decode ``k + 1`` tokens itself: verifying one token per round trip would pay a whole
request for each. A free drafter (prompt lookup) proposes before the window is chosen,
so the policy knows whether the round verifies or decodes alone; after a round decoded
alone, its lookups record where copying could have resumed (``Round.resume_at``). Both
ends may be remote: the target is any `LLM` whose ``score`` gives per-position
log-probabilities (vLLM's ``prompt_logprobs`` remotely), and a `NetworkLink` injects
round-trip delay, jitter and bandwidth on the edge-cloud link.

Acceptance is lossless:

- greedy (temperature 0): a drafted token stands when it is the target's argmax at its
  position; the first that is not is replaced by the argmax. The output is the target's
  own greedy output, whatever the draft (the target's ``top_logprobs=1`` is enough).
- sampling: the standard rule (Leviathan et al.; Chen et al.): accept ``x ~ q`` with
  probability ``min(1, p(x)/q(x))``, else sample from ``max(0, p - q)`` renormalised; a
  deterministic proposal is a point mass (accept with ``p(x)``, else sample ``p`` without
  ``x``). The output is distributed as the target's own samples. It needs the target's
  whole next-token distribution (`FullDistribution`, the in-process engine); a target
  that gives only top-k log-probabilities (a remote server) is verified greedily
  instead, exactly, and the completion says so in ``decoding["verification"]``.

Constraints (a response format, tools) are decoded exactly: each verified row is masked
by the request's grammar, so a drafted token outside the grammar is rejected like any
other mismatch and the output is the target's own constrained output. That needs the
target's whole rows: an in-process target; a remote one refuses constraints.

Per request, ``Completion.decoding`` records rounds, windows, drafted and accepted
tokens, the acceptance rate, target calls and the seconds spent drafting, verifying and
on the network.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from relaygraph.decoding.drafts import (
    Drafter,
    FullDistribution,
    ModelDrafter,
    Proposal,
    resumes_at,
)
from relaygraph.decoding.network import NetworkLink
from relaygraph.decoding.rounds import Round, SpeculativeReport
from relaygraph.decoding.verify import verify_greedy, verify_masked, verify_sampled
from relaygraph.decoding.window import EARLIER_ROUNDS, WindowPolicy
from relaygraph.errors import ConfigError, ContextWindowError, TransportError
from relaygraph.llm.local import LocalLLM
from relaygraph.llm.protocol import BaseLLM
from relaygraph.llm.stops import DetokenizedText
from relaygraph.llm.streaming import collect
from relaygraph.llm.tool_format import ToolCallSplitter, prompt_with_tools
from relaygraph.llm.types import (
    ChatPrompt,
    Completion,
    CompletionChunk,
    GenerationParams,
    TokenPrompt,
    Usage,
    to_prompt,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Sequence

    from relaygraph.llm.constraints import ToolCall
    from relaygraph.llm.grammar import TokenMatcher
    from relaygraph.llm.protocol import LLM
    from relaygraph.llm.types import FinishReason, LoadReport, Prompt, PromptInput, Score

GREEDY = GenerationParams(temperature=0.0)
PAIRING_PROBE = "Speculative decoding: naïve café, 3.14159 — ¿qué? <tag> 東京 🙂\n\tend"
"""Text both tokenizers must split identically for a draft and a target to pair."""
Fallback = Literal["draft", "error"]


class CloudUnavailableError(TransportError):
    """The target failed mid-request (down, or slower than its timeout) and no fallback
    was configured."""


@dataclass(slots=True)
class _Request:
    """One request's running state."""

    ids: list[int]
    params: GenerationParams
    rng: np.random.Generator
    link_rng: random.Random
    earlier: tuple[Round, ...]
    """The edge's rounds before this request (they change only when a request ends)."""
    rounds: list[Round] = field(default_factory=list)
    target_calls: int = 0
    fallback: str = ""
    matcher: TokenMatcher | None = None
    """The grammar state of a constrained request (its format or tools)."""


class SpeculativeLLM(BaseLLM):
    """An `LLM` whose tokens are drafted by ``draft`` and verified by ``target``.

    Args:
        draft: Proposes tokens (the edge): a model sharing the target's tokenizer, or
            any `Drafter` (prompt lookup).
        target: Verifies them; its output is what this model returns (the cloud model).
        window: Draft tokens per round.
        link: Delay injected on every target call (None: none).
        on_target_failure: When the target fails mid-request: ``"error"`` raises
            `CloudUnavailableError`; ``"draft"`` finishes the answer with the draft alone
            and records that in ``decoding["fallback"]``.
        end_token_ids: Token ids that end generation; default: the tokenizer's or
            target's own ``end_token_ids`` (the in-process engine has them).
        tokenizer: The edge's copy of the shared tokenizer, for prompts and text (default:
            a draft model, else the target).
        name: Model name in traces and responses.

    Raises:
        ConfigError: The two models tokenize differently, or no end-of-generation ids.

    Example:
        >>> spec = SpeculativeLLM(draft, target, AdaptiveWindow())   # doctest: +SKIP
        >>> spec.complete("The capital of France is").decoding["acceptance_rate"]  # doctest: +SKIP
    """

    def __init__(
        self,
        draft: LLM | Drafter,
        target: LLM,
        window: WindowPolicy,
        *,
        link: NetworkLink | None = None,
        on_target_failure: Fallback = "error",
        end_token_ids: Collection[int] | None = None,
        tokenizer: LLM | None = None,
        name: str | None = None,
    ) -> None:
        drafter = draft if isinstance(draft, Drafter) else ModelDrafter(draft)
        local = tokenizer or (draft if isinstance(drafter, ModelDrafter) else target)
        assert not isinstance(local, Drafter)  # a Drafter is never the tokenizer
        if local is not target and local.tokenize(PAIRING_PROBE) != target.tokenize(PAIRING_PROBE):
            raise ConfigError(
                f"{local.name} and {target.name} tokenize differently; speculative decoding "
                "needs one tokenizer (a self-draft, a cheaper precision or a distilled student "
                "of the target)",
                parameter="draft",
            )
        ends = end_token_ids
        if ends is None:
            ends = getattr(local, "end_token_ids", None) or getattr(target, "end_token_ids", None)
        if not ends:
            raise ConfigError(
                "neither model knows its end-of-generation token ids; pass end_token_ids",
                parameter="end_token_ids",
            )
        context = min(local.context_window, target.context_window)
        if window.largest >= context:
            raise ConfigError(
                f"window policy {window.name} may ask for {window.largest} tokens, more than "
                f"the context window ({context}) can hold after a prompt",
                parameter="window",
            )
        self.draft, self.target, self.window = drafter, target, window
        self.tokenizer = local
        self.link = link or NetworkLink()
        self.on_target_failure = on_target_failure
        self.end_token_ids = frozenset(ends)
        self._earlier: deque[Round] = deque(maxlen=EARLIER_ROUNDS)
        """This edge's last rounds, for the window's cost estimates."""
        self._name = name or f"{target.name}+spec({drafter.name})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def context_window(self) -> int:
        return min(self.tokenizer.context_window, self.target.context_window)

    # The tokenizer is shared; the edge's copy is at hand, no trip to the cloud.
    def encode(self, prompt: PromptInput | Prompt) -> list[int]:
        return self.tokenizer.encode(prompt)

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.tokenize(text)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.detokenize(token_ids)

    def score(
        self, prompt: PromptInput | Prompt, continuation: str | Sequence[int], top_logprobs: int = 0
    ) -> Score:
        return self.target.score(prompt, continuation, top_logprobs)

    def complete(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Completion:
        params = params or GenerationParams()
        began = time.perf_counter()
        stats: dict[str, Any] = {}
        completion = collect(self._stream(prompt, params, stats), model=self.name, began=began)
        return completion.model_copy(update={"decoding": stats})

    def stream(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Iterator[CompletionChunk]:
        return self._stream(prompt, params or GenerationParams(), {})

    # -- the rounds ---------------------------------------------------------------------

    def _stream(
        self, prompt: PromptInput | Prompt, params: GenerationParams, stats: dict[str, Any]
    ) -> Iterator[CompletionChunk]:
        if params.n != 1:
            raise ConfigError("speculative decoding makes one completion (n=1)", parameter="n")
        matcher: TokenMatcher | None = None
        if params.constrained:
            prompt, matcher = self._constraint(to_prompt(prompt), params)
        if params.logprobs:
            raise ConfigError(
                "speculative decoding returns no log-probabilities; score the output with "
                "the target instead",
                parameter="logprobs",
            )
        prompt_ids = self.encode(prompt)
        if len(prompt_ids) + params.max_tokens > self.context_window:
            raise ContextWindowError(
                model=self.name,
                prompt_tokens=len(prompt_ids),
                max_tokens=params.max_tokens,
                context_window=self.context_window,
            )
        request = _Request(
            ids=list(prompt_ids),
            params=params,
            rng=np.random.default_rng(params.seed),
            link_rng=random.Random(self.link.seed if params.seed is None else params.seed),
            earlier=tuple(self._earlier),
            matcher=matcher,
        )
        exact = params.temperature == 0 or isinstance(self.target, FullDistribution)
        verification = "greedy" if params.temperature == 0 else "sampling"
        if not exact:
            verification = "greedy (the target gives top-k log-probabilities only)"
        text = DetokenizedText(self.detokenize, self.end_token_ids, params.stop)
        splitter = ToolCallSplitter() if params.calls_tools else None
        produced: list[int] = []
        finish: FinishReason = "length"
        room = min(params.max_tokens, self.context_window - len(request.ids))
        while room >= 1:
            new = self._round(request, room, exact=exact)
            ended = next((i for i, t in enumerate(new) if t in self.end_token_ids), None)
            new = new[: room if ended is None else min(room, ended + 1)]
            produced.extend(new)
            request.ids.extend(new)
            room = min(params.max_tokens - len(produced), self.context_window - len(request.ids))
            complete = matcher is not None and matcher.complete
            done = ended is not None or room < 1 or complete
            delta = text.add(new, final=done)
            calls: list[ToolCall] = []
            if splitter is not None:
                delta, calls = splitter.feed(delta)
                if done:
                    rest, _ = splitter.finish()
                    delta += rest
            yield CompletionChunk(
                model=self.name, text=delta, token_ids=new, tool_calls=calls or None
            )
            if ended is not None or text.stopped or complete:
                finish = "tool_calls" if splitter and splitter.calls else "stop"
                break
        if not request.fallback:  # rounds without a working cloud say nothing of its costs
            self._earlier.extend(request.rounds)
        report = SpeculativeReport.of(
            request.rounds,
            draft=self.draft.name,
            target=self.target.name,
            window_policy=self.window.name,
            verification=verification,
            target_calls=request.target_calls,
            fallback=request.fallback or None,
        )
        stats.update(report.model_dump())
        yield CompletionChunk(
            model=self.name,
            finish_reason=finish,
            usage=Usage(prompt_tokens=len(prompt_ids), completion_tokens=len(produced)),
        )

    def _constraint(
        self, prompt: Prompt, params: GenerationParams
    ) -> tuple[Prompt, TokenMatcher | None]:
        """The prompt as the target sees it with tools, and the request's grammar state.

        Verification masks the target's rows with the grammar, so a drafted token outside
        it is rejected like any other mismatch and the output is the target's own
        constrained output; that needs the target's whole rows.

        Raises:
            ConfigError: The target is not an in-process engine, or the constraint cannot
                be decoded under a grammar.
        """
        target = self.target
        if not isinstance(target, LocalLLM):
            raise ConfigError(
                f"speculative decoding under a response_format or tools needs an in-process "
                f"target whose logits it can mask; {target.name} is not one (call it directly: "
                "a worker honours the constraint itself)",
                parameter="response_format" if params.response_format else "tools",
            )
        prompt = prompt_with_tools(prompt, params)
        grammar = target.compile_constraints(params, chat=isinstance(prompt, ChatPrompt))
        return prompt, None if grammar is None else target.grammars.matcher(grammar)

    def _window(self, request: _Request, room: int, proposed: int | None = None) -> int:
        """The policy's window for the next round, checked, clipped to ``room``."""
        k = self.window.next_window(request.rounds, request.earlier, proposed)
        if k < 1:
            raise ConfigError(
                f"window policy {self.window.name} asked for {k} tokens", parameter="window"
            )
        return min(k, room)

    def _propose(
        self, request: _Request, room: int, params: GenerationParams
    ) -> tuple[int, Proposal]:
        """The round's window and proposal. A free drafter proposes first, with the
        policy's largest window, and the policy chooses knowing what it proposed."""
        ends = self.end_token_ids
        if not self.draft.free:
            k = self._window(request, room)
            return k, self.draft.propose(request.ids, k, params, request.rng, ends)
        longest = min(self.window.largest, room)
        proposal = self.draft.propose(request.ids, longest, params, request.rng, ends)
        k = self._window(request, room, len(proposal.ids))
        return k, proposal.first(k)

    def _round(self, request: _Request, room: int, *, exact: bool) -> list[int]:
        """One draft-verify round; returns the tokens it adds (accepted, then the target's)."""
        sampling = exact and request.params.temperature > 0
        began = time.perf_counter()
        # The draft proposes freely: the grammar is applied where the target verifies.
        params = request.params.unconstrained() if sampling else GREEDY
        k, proposal = self._propose(request, room, params)
        drafted = proposal.ids
        draft_s = time.perf_counter() - began
        if request.fallback:  # the target failed earlier: the draft answers alone
            if not drafted:
                raise CloudUnavailableError(
                    f"{request.fallback}, but {self.draft.name} proposes nothing here"
                )
            request.rounds.append(Round(k, len(drafted), len(drafted), draft_s, 0.0, 0.0))
            return drafted
        # Nothing to verify from a remote target: it decodes the round itself (one token
        # per round trip would pay a whole request for each); in process, a round is
        # just the target's step.
        alone = not drafted and not isinstance(self.target, FullDistribution)
        returned = min(k + 1, room) if alone else len(drafted) + 1
        network_s = self.link.delay(len(request.ids) + len(drafted), returned, request.link_rng)
        time.sleep(network_s)
        began = time.perf_counter()
        try:
            request.target_calls += 1
            if alone:
                # (a constrained request has an in-process target, so it is never alone)
                decoded, load = self._decode(request, params, returned)
                verify_s = time.perf_counter() - began
                began = time.perf_counter()
                resume_at = 0
                if self.draft.free:  # where copying could have resumed: lookups only
                    ends = self.end_token_ids
                    resume_at = resumes_at(self.draft, request.ids, decoded, request.rng, ends)
                draft_s += time.perf_counter() - began  # the edge's lookups
                request.rounds.append(
                    Round(
                        k,
                        0,
                        0,
                        draft_s,
                        verify_s,
                        network_s,
                        decoded=len(decoded),
                        resume_at=resume_at,
                        **_reported(load),
                    )
                )
                return decoded
            if request.matcher is not None:
                assert isinstance(self.target, FullDistribution)  # see _constraint
                ends = self.end_token_ids
                out, accepted = verify_masked(
                    self.target, request, proposal, ends, sampling=sampling
                )
                verify_s = time.perf_counter() - began
                request.rounds.append(
                    Round(k, len(drafted), accepted, draft_s, verify_s, network_s)
                )
                return out
            load = None
            if sampling:
                assert isinstance(self.target, FullDistribution)  # exact sampling needs rows
                accepted, extra = verify_sampled(self.target, request, proposal)
            else:
                accepted, extra, load = verify_greedy(self.target, request.ids, drafted)
        except TransportError as exc:
            if self.on_target_failure == "error":
                raise CloudUnavailableError(
                    f"target {self.target.name} failed mid-request: {exc}"
                ) from exc
            request.fallback = f"target {self.target.name} failed ({exc}); the draft finished"
            verify_s = time.perf_counter() - began
            request.rounds.append(
                Round(k, len(drafted), len(drafted), draft_s, verify_s, network_s)
            )
            return drafted
        verify_s = time.perf_counter() - began
        request.rounds.append(
            Round(k, len(drafted), accepted, draft_s, verify_s, network_s, **_reported(load))
        )
        return [*drafted[:accepted], extra]

    def _decode(
        self, request: _Request, params: GenerationParams, count: int
    ) -> tuple[list[int], LoadReport | None]:
        """``count`` tokens of the target's own decoding under ``params`` (the round's:
        greedy wherever verification is), seeded from the request's generator, and the
        target's load report."""
        wanted = params.model_copy(
            update={"max_tokens": count, "stop": (), "seed": int(request.rng.integers(2**31))}
        )
        out = self.target.complete(TokenPrompt(token_ids=tuple(request.ids)), wanted)
        return out.choices[0].token_ids, out.load


def _reported(load: LoadReport | None) -> dict[str, Any]:
    """A round's queue wait and shared tokens as the target reported them (none: 0)."""
    if load is None:
        return {}
    return {"queue_s": load.queue_s, "shared_tokens": load.shared_tokens}
