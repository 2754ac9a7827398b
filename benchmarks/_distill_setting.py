"""The distillation benchmark's setting: short-horizon ALFWorld, where the teacher wins.

An episode enters a game ``k`` expert commands before its goal (`run_game`'s
``remaining``) and gives the agent ``k + SLACK`` commands. The agent is
`alfworld_react_scored`: a free one-line thought, then the admissible command whose
log-probability the thought raises most over the command's prior (scored choices). The
teacher's success is measured per ``k`` on training games only, with its Wilson
interval, before anything is trained; ``k`` is chosen there (`choose_remaining`), and
the held-out set is sized from the chosen success rate (`heldout_size`).
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

from relaygraph.eval.alfworld.agent import alfworld_react
from relaygraph.eval.alfworld.demos import load_demos
from relaygraph.eval.alfworld.games import AlfworldGame, load_games
from relaygraph.eval.alfworld.suite import AlfworldSuite
from relaygraph.eval.runner import evaluate, sample_items
from relaygraph.graph.runs import read_items
from relaygraph.llm.protocol import LLM

GRAPH = "relaygraph.eval.alfworld.agent:alfworld_react_scored"
"""The agent, by the name its runs record (`suite` builds it, at any temperature)."""
SLACK = 1
"""Commands beyond the expert's ``k``: one wrong command may be undone."""
MIN_TEACHER_SUCCESS = 0.3
"""The hardest ``k`` whose teacher success on training games reaches this is chosen: room
below the teacher for students to differ, and enough wins to learn from."""
Z_95, Z_POWER_80 = 1.959964, 0.841621
DETECT = 0.05
"""The difference in success between two losses the held-out set must detect."""
MIN_HELDOUT = 200


def wilson(wins: float, n: int) -> list[float]:
    """The 95% Wilson score interval of a success rate (sound near 0 and 1, unlike the
    normal approximation)."""
    if n == 0:
        return [0.0, 1.0]
    p = wins / n
    centre = (p + Z_95**2 / (2 * n)) / (1 + Z_95**2 / n)
    half = Z_95 * math.sqrt(p * (1 - p) / n + Z_95**2 / (4 * n * n)) / (1 + Z_95**2 / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def train_games(limit: int | None) -> list[AlfworldGame]:
    """A seeded draw of ``valid_train`` games, in proportion to task type."""
    return sample_items(load_games("valid_train"), limit, 0, stratum=lambda g: g.task_type)


def heldout_games() -> list[AlfworldGame]:
    """Every ``valid_unseen`` and ``valid_seen`` game but the demonstrations' (which the
    prompts show): never played for training or tuning."""
    demos = {d.game for d in load_demos().demos}
    games = [*load_games("valid_unseen"), *load_games("valid_seen")]
    return [g for g in games if g.name not in demos]


def suite(llm: LLM, remaining: int, temperature: float = 0.0) -> AlfworldSuite:
    """The setting's suite on ``llm`` for episodes ``remaining`` commands from the goal
    (thoughts sampled at ``temperature``; 0: greedy)."""
    factory = partial(
        alfworld_react, admissible_only=True, choice_scoring="calibrated", temperature=temperature
    )
    return AlfworldSuite(factory, llm, max_steps=remaining + SLACK, remaining=remaining)


def play(
    llm: LLM,
    name: str,
    games: list[AlfworldGame],
    out: Path,
    remaining: int,
    *,
    temperature: float = 0.0,
) -> dict[str, Any]:
    """``games`` played by ``llm`` into the run ``out`` (resumed): wins, rate, interval."""
    evaluate(
        suite(llm, remaining, temperature),
        games,
        out,
        dataset=f"alfworld@{remaining}",
        graph=GRAPH,
        model=name,
        resume=(out / "run.json").exists(),
        settings={
            "remaining": remaining,
            "max_steps": remaining + SLACK,
            "temperature": temperature,
        },
    )
    records = read_items(out)
    chosen = [records[g.name] for g in games]
    wins = sum(r.success for r in chosen)
    seconds = sum(r.latency_s for r in chosen)
    return {
        "remaining": remaining,
        "episodes": len(chosen),
        "won": int(wins),
        "success": round(wins / len(chosen), 4),
        "ci95": wilson(wins, len(chosen)),
        "seconds_per_episode": round(seconds / len(chosen), 2),
    }


def choose_remaining(rows: list[dict[str, Any]]) -> int:
    """The largest ``k`` whose teacher success reaches `MIN_TEACHER_SUCCESS`.

    Raises:
        SystemExit: No ``k`` does: there is no setting where the teacher wins.
    """
    fit = [r["remaining"] for r in rows if r["success"] >= MIN_TEACHER_SUCCESS]
    if not fit:
        raise SystemExit(f"the teacher reaches {MIN_TEACHER_SUCCESS:.0%} at no k: {rows}")
    return max(fit)


def heldout_size(success: float, seeds: int) -> dict[str, Any]:
    """Held-out episodes to detect a `DETECT` difference in success between two losses
    (two-sided 5%, power 80%), each loss's success the mean of ``seeds`` students.

    A student wins an episode with probability near the teacher's rate ``p``; the
    difference of two losses' seed means then has variance at most 2p(1-p)/seeds per
    episode (students of one episode are positively correlated, which only lowers it),
    so n = (z_.975 + z_.8)^2 * 2p(1-p) / (seeds * DETECT^2), and at least `MIN_HELDOUT`.
    """
    variance = 2 * success * (1 - success) / seeds
    needed = math.ceil((Z_95 + Z_POWER_80) ** 2 * variance / DETECT**2)
    return {
        "rule": "(z_.975 + z_.8)^2 * 2p(1-p) / (seeds * 0.05^2), at least 200",
        "p": success,
        "seeds": seeds,
        "needed": needed,
        "episodes": max(needed, MIN_HELDOUT),
    }
