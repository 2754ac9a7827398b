"""One draft-verify round: the record speculative decoding, the window policies, the
simulator and profile fitting all read, and its per-request form in traces
(`SpeculativeReport`, which a completion carries as its ``decoding`` dict)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


@dataclass(frozen=True, slots=True)
class Round:
    """One draft-verify round, as the window policy sees it.

    Attributes:
        window: Tokens the policy asked for.
        drafted: Tokens the draft proposed (fewer when it ended its answer).
        accepted: Drafted tokens the target kept.
        draft_s: Seconds the draft took.
        verify_s: Seconds the target's verification took (its own compute and transport,
            and any wait in the cloud's queue).
        network_s: Seconds of injected link delay (both directions).
        queue_s: Of ``verify_s``, the seconds it waited in the cloud's queue before its
            pass began (0 where the cloud does not say).
        shared_tokens: Tokens of other requests verified in the same pass (0 when alone,
            or where the cloud does not say).
        decoded: Tokens the target decoded itself in a round the drafter had nothing to
            propose for (``verify_s`` is then its decoding time, not a verification).
        resume_at: In such a round, after how many of its tokens (1 to ``decoded - 1``)
            a free drafter would first have proposed a token that stood: where copying
            could have resumed (0: nowhere inside the round, or not checked).
    """

    window: int
    drafted: int
    accepted: int
    draft_s: float
    verify_s: float
    network_s: float
    queue_s: float = 0.0
    shared_tokens: int = 0
    decoded: int = 0
    resume_at: int = 0


class RoundColumns(BaseModel):
    """A request's rounds as a trace records them: one list per `Round` field, rounds in
    order (seconds rounded to microseconds). Records older than a field lack it (an
    empty list; `rounds_of` reads it as 0)."""

    window: list[int] = Field(default_factory=list)
    drafted: list[int] = Field(default_factory=list)
    accepted: list[int] = Field(default_factory=list)
    decoded: list[int] = Field(default_factory=list)
    resume_at: list[int] = Field(default_factory=list)
    draft_s: list[float] = Field(default_factory=list)
    verify_s: list[float] = Field(default_factory=list)
    network_s: list[float] = Field(default_factory=list)
    queue_s: list[float] = Field(default_factory=list)
    shared_tokens: list[int] = Field(default_factory=list)

    @classmethod
    def of(cls, rounds: Sequence[Round]) -> RoundColumns:
        return cls(
            window=[r.window for r in rounds],
            drafted=[r.drafted for r in rounds],
            accepted=[r.accepted for r in rounds],
            decoded=[r.decoded for r in rounds],
            resume_at=[r.resume_at for r in rounds],
            draft_s=[round(r.draft_s, 6) for r in rounds],
            verify_s=[round(r.verify_s, 6) for r in rounds],
            network_s=[round(r.network_s, 6) for r in rounds],
            queue_s=[round(r.queue_s, 6) for r in rounds],
            shared_tokens=[r.shared_tokens for r in rounds],
        )


class SpeculativeReport(BaseModel):
    """What speculative decoding reports of one request: its settings, totals over its
    rounds and each round's figures. `SpeculativeLLM` returns it dumped, as
    ``Completion.decoding``; a step's trace keeps it typed (`DecodingRecord.report`).

    Example:
        >>> report = SpeculativeReport.of(
        ...     [Round(4, 4, 3, 0.001, 0.2, 0.0)], draft="lookup", target="smollm2-135m",
        ...     window_policy="fixed-4", verification="greedy", target_calls=1)
        >>> report.acceptance_rate, report.per_round.accepted
        (0.75, [3])
    """

    decoder: Literal["speculative"]
    """Always ``speculative``: what tells this report from another decoder's."""
    draft: str = ""
    """The drafter's name."""
    target: str = ""
    """The verifying model's name."""
    window_policy: str = ""
    verification: str = ""
    """How drafts were checked (``greedy (...)``, ``sampling``)."""
    rounds: int = 0
    windows: list[int] = Field(default_factory=list)
    """Each round's window."""
    drafted: int = 0
    accepted: int = 0
    acceptance_rate: float | None = None
    """Accepted over drafted tokens (None: nothing was drafted)."""
    decoded: int = 0
    """Tokens the target decoded itself, in rounds with nothing to verify."""
    target_calls: int = 0
    draft_s: float = 0.0
    verify_s: float = 0.0
    network_s: float = 0.0
    per_round: RoundColumns = Field(default_factory=RoundColumns)
    fallback: str | None = Field(default=None, exclude_if=lambda value: value is None)
    """Why the draft finished the request alone (the target failed); absent otherwise."""

    @classmethod
    def of(
        cls,
        rounds: Sequence[Round],
        *,
        draft: str,
        target: str,
        window_policy: str,
        verification: str,
        target_calls: int,
        fallback: str | None = None,
    ) -> SpeculativeReport:
        """The report of a request that ran ``rounds``."""
        drafted = sum(r.drafted for r in rounds)
        accepted = sum(r.accepted for r in rounds)
        return cls(
            decoder="speculative",
            draft=draft,
            target=target,
            window_policy=window_policy,
            verification=verification,
            rounds=len(rounds),
            windows=[r.window for r in rounds],
            drafted=drafted,
            accepted=accepted,
            acceptance_rate=round(accepted / drafted, 4) if drafted else None,
            decoded=sum(r.decoded for r in rounds),
            target_calls=target_calls,
            draft_s=round(sum(r.draft_s for r in rounds), 6),
            verify_s=round(sum(r.verify_s for r in rounds), 6),
            network_s=round(sum(r.network_s for r in rounds), 6),
            per_round=RoundColumns.of(rounds),
            fallback=fallback,
        )


def rounds_of(record: Mapping[str, Sequence[float]]) -> list[Round]:
    """The rounds of a `RoundColumns` record (``decoding["per_round"]``). Fields that
    records older than them lack read as 0: before rounds without a proposal were
    decoded, each verified one token."""
    n = len(record["drafted"])

    def column(key: str) -> Sequence[float]:
        return record.get(key) or [0] * n

    columns = zip(
        column("window"),
        record["drafted"],
        record["accepted"],
        column("draft_s"),
        column("verify_s"),
        column("network_s"),
        column("queue_s"),
        column("shared_tokens"),
        column("decoded"),
        column("resume_at"),
        strict=True,
    )
    return [
        Round(
            window=int(window),
            drafted=int(drafted),
            accepted=int(accepted),
            draft_s=float(draft_s),
            verify_s=float(verify_s),
            network_s=float(network_s),
            queue_s=float(queue_s),
            shared_tokens=int(shared),
            decoded=int(decoded),
            resume_at=int(resume_at),
        )
        for (
            window,
            drafted,
            accepted,
            draft_s,
            verify_s,
            network_s,
            queue_s,
            shared,
            decoded,
            resume_at,
        ) in columns
    ]


def recency_weights(n: int, decay: float) -> list[float]:
    """The weights of ``n`` rounds, oldest first: the newest weighs 1, each older one
    ``decay`` times the next."""
    return [decay ** (n - 1 - i) for i in range(n)]
