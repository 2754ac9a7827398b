"""Budget enforcement: refuse or cut before a model call, never exceed."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from relaygraph.graph.budget import Budget, BudgetLedger, Limits, Price


def rec(
    role: str, prompt: int, completion: int, latency: float = 0.0, cost: float = 0.0
) -> dict[str, Any]:
    return {
        "role": role,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "latency_s": latency,
        "cost": cost,
    }


def test_unlimited_budget_admits_everything() -> None:
    assert BudgetLedger(Budget(), []).admit("solver", "m", 10_000, 500) == (500, "ok")


def test_completion_tokens_are_cut_to_what_is_left() -> None:
    ledger = BudgetLedger(Budget(run=Limits(completion_tokens=100)), [rec("solver", 50, 70)])
    allowed, note = ledger.admit("solver", "m", 20, 64)
    assert allowed == 30 and "cut to 30" in note and "run" in note


def test_role_limits_apply_to_their_role_only() -> None:
    budget = Budget(roles={"planner": Limits(completion_tokens=10)})
    ledger = BudgetLedger(budget, [rec("planner", 5, 10), rec("solver", 5, 500)])
    assert ledger.admit("planner", "m", 5, 8)[0] == 0
    assert ledger.admit("solver", "m", 5, 8) == (8, "ok")


def test_prompt_that_would_exceed_is_refused() -> None:
    ledger = BudgetLedger(Budget(run=Limits(prompt_tokens=100)), [rec("solver", 90, 1)])
    allowed, note = ledger.admit("solver", "m", 20, 10)
    assert allowed == 0 and note.startswith("refused") and "90 + 20 > 100" in note


def test_time_budget() -> None:
    ledger = BudgetLedger(Budget(run=Limits(time_s=1.0)), [rec("solver", 1, 1, latency=1.5)])
    assert ledger.admit("solver", "m", 1, 1)[0] == 0
    assert ledger.remaining("solver") == (None, -0.5)


def test_cost_budget_cuts_by_price() -> None:
    budget = Budget(
        run=Limits(cost=0.001),
        prices={"big": Price(prompt_per_mtok=10.0, completion_per_mtok=100.0)},
    )
    ledger = BudgetLedger(budget, [])
    # 50 prompt tokens cost 0.0005; 0.0005 left buys 5 completion tokens at 100/Mtok.
    assert ledger.admit("solver", "big", 50, 64) == (5, "cut to 5 tokens by the run budget")
    assert ledger.admit("solver", "free-model", 50, 64) == (64, "ok")
    assert ledger.cost("big", 1000, 1000) == pytest.approx(0.11)


def test_limits_reject_typos_and_negatives() -> None:
    with pytest.raises(ValidationError):
        Limits(completion_tokenz=5)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Limits(cost=-1)
