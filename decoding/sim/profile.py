"""`LatencyProfile`: what the simulator's time comes from, measured on a real run or
written for another deployment, and its JSON file."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from relaygraph.decoding.window import (
    CostPrior,
    expected_tokens,
    resume_bin,
)
from relaygraph.fileio import read_model, write_atomic

if TYPE_CHECKING:
    from pathlib import Path


_T = TypeVar("_T")


class LatencyProfile(BaseModel):
    """What each part of edge-cloud decoding costs, in seconds."""

    model_config = ConfigDict(extra="forbid")

    name: str
    draft_per_token_s: float = Field(ge=0)
    verify_base_s: float = Field(ge=0)
    verify_per_token_s: float = Field(ge=0)
    """A cloud pass over t tokens (all jobs of a batch together) costs base + per_token * t."""
    decode_base_s: float = Field(ge=0)
    decode_per_seq_s: float = Field(ge=0)
    """A cloud decode step advancing b sequences costs base + per_seq * b."""
    prefill_s: float = Field(default=0.0, ge=0)
    """The target reading a request's prompt (first verification, or cloud-only start)."""
    solo_overhead_s: float = Field(default=0.0, ge=0)
    """What a round in which the target decodes alone costs beyond its decode steps (a
    request to the worker, which also re-reads the prompt's last token)."""
    acceptance: float = Field(ge=0, le=1)
    """Per drafted token, i.i.d. (unless ``position_acceptance`` is given)."""
    position_acceptance: list[float] = Field(default_factory=list)
    """Per window position j: the chance that the j-th drafted token stands given the
    ones before it did (in rounds where the drafter proposed that far); the last value
    holds beyond the list. Prompt lookup's first guesses beat its later ones."""
    unproposed: float = Field(default=0.0, ge=0, le=1)
    """Share of answer tokens made in rounds where the drafter had nothing to propose:
    prompt lookup finds no recurring n-gram where the answer leaves its source, and the
    target decodes ``k + 1`` tokens itself. A share of tokens, not of rounds: long
    windows cross the copied stretches in fewer rounds, and the uncopied ones too."""
    request_unproposed: list[float] = Field(default_factory=list)
    """Per kind of request, its own `unproposed` share (kinds as in `request_acceptance`)."""
    request_acceptance: list[list[float]] = Field(default_factory=list)
    """Per kind of request (a prompt of the measured run), its own position acceptance;
    simulated requests take them in turn, as they take answer lengths. Acceptance varies
    more between prompts than within one (the answer is quoted from the prompt or it is
    not), and a pooled rate misjudges windows: long ones finish the easy prompts in few
    rounds and spend most of theirs on the hard ones."""
    proposing: float = Field(default=1.0, ge=0, le=1)
    """The chance that a round proposes after a round that did (or as a request's first)."""
    request_proposing: list[float] = Field(default_factory=list)
    """Per kind of request, its own `proposing` chance."""
    resume: list[float] = Field(default_factory=list)
    """Per bin of `RESUME_BINS`, the chance that a stretch without proposals ends at its
    next token (the last holds beyond); empty: proposals drawn per round (`proposes`)."""
    rtt_s: float = Field(default=0.0, ge=0)
    jitter_s: float = Field(default=0.0, ge=0)
    """Standard deviation of each one-way delay."""
    source: str = ""
    """Where the numbers come from (a measured run, a datasheet, a guess)."""

    def save(self, path: str | Path) -> Path:
        """Write atomically as JSON."""
        return write_atomic(path, self.model_dump_json(indent=1) + "\n")

    def rate_at(self, position: int, request: int = 0) -> float:
        """Acceptance of the drafted token at ``position`` (0-based) given the earlier ones,
        in the ``request``-th request kind (which `request_acceptance` holds, if any)."""
        kinds = self.request_acceptance
        rates = kinds[request % len(kinds)] if kinds else self.position_acceptance
        if not rates:
            return self.acceptance
        return rates[min(position, len(rates) - 1)]

    def proposes(self, k: int, request: int = 0) -> float:
        """The chance that a round with window ``k`` of the ``request``-th request kind has
        a proposal. With a share ``f`` of tokens unproposed, ``E`` tokens per round that
        proposes and ``k + 1`` per round that does not, rounds without a proposal make up
        ``f E / ((1 - f)(k + 1) + f E)`` of all rounds, so that they make ``f`` of the
        tokens at any k."""
        kinds = self.request_unproposed
        f = kinds[request % len(kinds)] if kinds else self.unproposed
        tokens = expected_tokens([self.rate_at(j, request) for j in range(k)])
        return 1.0 - f * tokens / ((1.0 - f) * (k + 1) + f * tokens)

    def proposing_at(self, request: int = 0) -> float:
        """`proposing` of the ``request``-th request kind."""
        kinds = self.request_proposing
        return kinds[request % len(kinds)] if kinds else self.proposing

    def resume_at(self, position: int) -> float:
        """The chance that a stretch without proposals ends at its ``position``-th token."""
        rates = self.resume
        return rates[min(resume_bin(position), len(rates) - 1)]

    def window_prior(self, weight: float = 2.0) -> CostPrior:
        """This deployment's costs as the starting point of adaptive window control."""
        return CostPrior(
            acceptance=self.acceptance,
            position_acceptance=tuple(self.position_acceptance),
            draft_s=self.draft_per_token_s,
            verify_base_s=self.verify_base_s,
            verify_per_token_s=self.verify_per_token_s,
            rtt_s=self.rtt_s,
            decode_base_s=self.solo_overhead_s,
            decode_per_token_s=self.decode_base_s + self.decode_per_seq_s,
            unproposed=self.unproposed,
            resume=tuple(self.resume) or CostPrior().resume,
            weight=weight,
        )

    @classmethod
    def load(cls, path: str | Path) -> LatencyProfile:
        """Read a profile.

        Raises:
            ConfigError: Missing file or a bad field (named).
        """
        return read_model(cls, path, what="latency profile")
