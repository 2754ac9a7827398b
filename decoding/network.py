"""The edge-cloud link as speculative decoding pays for it: injected delay per target call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from relaygraph.errors import ConfigError

if TYPE_CHECKING:
    import random


@dataclass(frozen=True, slots=True)
class NetworkLink:
    """The edge-cloud link's injected delay, paid on every target call.

    Attributes:
        rtt_s: Round-trip time.
        jitter_s: Standard deviation of a normal added to each one-way delay (clipped at 0).
        bandwidth_bps: Bits per second each way; None: unlimited. A call sends 4 bytes
            per token of the prefix and window (the OpenAI API resends the prefix) and
            receives about 100 bytes per scored position.
        seed: Seeds the jitter.
    """

    rtt_s: float = 0.0
    jitter_s: float = 0.0
    bandwidth_bps: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rtt_s < 0 or self.jitter_s < 0:
            raise ConfigError("rtt_s and jitter_s must be >= 0", parameter="rtt_s")
        if self.bandwidth_bps is not None and self.bandwidth_bps <= 0:
            raise ConfigError("bandwidth_bps must be > 0", parameter="bandwidth_bps")

    def delay(self, sent_tokens: int, scored: int, rng: random.Random) -> float:
        """Seconds one call spends on the link, both ways."""
        one_way = [max(0.0, self.rtt_s / 2 + rng.gauss(0.0, self.jitter_s)) for _ in range(2)]
        transfer = 0.0
        if self.bandwidth_bps is not None:
            transfer = 8 * (4 * sent_tokens + 100 * scored) / self.bandwidth_bps
        return sum(one_way) + transfer
