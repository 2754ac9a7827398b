"""The window policy contract, and the fixed window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from relaygraph.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.decoding.rounds import Round

EARLIER_ROUNDS = 128
"""How many rounds of an edge's earlier requests its window policy is shown (costs fade
with ``decay`` per round; the acceptance prior pools them all)."""


@runtime_checkable
class WindowPolicy(Protocol):
    """Chooses the draft window of the next round from the rounds so far."""

    @property
    def name(self) -> str: ...

    @property
    def largest(self) -> int:
        """The largest window it may ask for."""
        ...

    def next_window(
        self, rounds: Sequence[Round], earlier: Sequence[Round] = (), proposed: int | None = None
    ) -> int:
        """Tokens to draft next (>= 1) given this request's ``rounds`` and the ``earlier``
        rounds of the same edge; the caller clips it to the tokens left.

        ``proposed``: what a free drafter already proposes for this round with the
        `largest` window (the round verifies the first ``k``; 0: nothing, and a remote
        target decodes ``k + 1`` tokens alone), or None where the drafter proposes after
        the choice (a model)."""
        ...


@dataclass(frozen=True, slots=True)
class FixedWindow:
    """The same window every round."""

    k: int

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(
                "a draft window must be at least 1 token", parameter="k", value=self.k
            )

    @property
    def name(self) -> str:
        return f"fixed-{self.k}"

    @property
    def largest(self) -> int:
        return self.k

    def next_window(
        self, rounds: Sequence[Round], earlier: Sequence[Round] = (), proposed: int | None = None
    ) -> int:
        return self.k
