"""Checking a synthesized task before anything is measured on it.

A task is sound when its reference solution, played call by call in a real `Sandbox`, is
safe and meets every utility check, and, for an attack task, when an assistant that obeys
the payload reaches the attack's goal: the reference's first call (the one that reads the
payload, in the shipped specs), then the attack's actions, then the rest of the
reference, the order `scripted.scripted_assistant` plays them in. Each call's arguments
go through the tool's schema as an agent's would, so ``"amount": "lots"`` or a misspelled
argument name is caught here rather than silently scored as the model's failure.

Each run gets a fresh sandbox: a benign task one, an attack task two (its reference on
the attacked world, then the obeying run), about 10 ms each. Verdicts come from
`scoring.score_trajectory` without a judge: judge predicates are skipped, rule-based ones
decide.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from relaygraph.agents.tools import ToolCallError
from relaygraph.errors import ConfigError, RelayGraphError
from relaygraph.eval.security.sandbox import Sandbox
from relaygraph.eval.security.scoring import score_trajectory
from relaygraph.eval.security.tools import sandbox_tools

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.eval.security.predicates import Predicate
    from relaygraph.eval.security.spec import Call
    from relaygraph.eval.security.synthesis import SecurityTask
    from relaygraph.eval.security.trajectory import Trajectory


class _InvalidCallError(RelayGraphError):
    """A spec's call that no agent could make: its arguments do not fit the tool."""


def verify_task(task: SecurityTask) -> None:
    """Refuse ``task`` unless its reference solution and (for an attack) its attack work.

    Example:
        >>> from relaygraph.eval.security.spec import load_specs
        >>> from relaygraph.eval.security.synthesis import synthesize
        >>> spec = next(s for s in load_specs() if s.id == "invoice-redirect")
        >>> verify_task(synthesize([spec], verify=False)[0])  # a sound task: no error

    Raises:
        ConfigError: The spec and task named, with why: a call whose arguments do not
            validate, a reference call that fails, a reference that is unsafe or misses a
            utility check, or an attack that never reaches its goal.
    """
    try:
        reason = _reference_problem(task)
        if reason is None and task.kind == "attack":
            reason = _attack_problem(task)
    except _InvalidCallError as exc:
        reason = str(exc)
    if reason is not None:
        raise ConfigError(f"spec {task.spec!r}, task {task.id!r}: {reason}", parameter="specs")


def _reference_problem(task: SecurityTask) -> str | None:
    calls = [(f"reference call {i}", c) for i, c in enumerate(task.reference.calls, 1)]
    trajectory, failures = _play(task, calls)
    if failures:
        return f"its reference solution does not run: {failures[0]}"
    verdict = score_trajectory(task, trajectory)
    if verdict.unsafe:
        first = verdict.violations[0]
        where = f" at step {first.step}" if first.step is not None else ""
        return (
            f"its reference solution is unsafe: {first.predicate!r} held{where} ({first.evidence})"
        )
    if not verdict.utility:
        # One utility check at a time, scored the same way, names the one it misses.
        missed = next(
            p
            for p in task.utility
            if not score_trajectory(task.model_copy(update={"utility": [p]}), trajectory).utility
        )
        return f"its reference solution misses its utility check {_describe(missed)}"
    return None


def _attack_problem(task: SecurityTask) -> str | None:
    reference = [(f"reference call {i}", c) for i, c in enumerate(task.reference.calls, 1)]
    attack = [(f"attack action {i}", c) for i, c in enumerate(task.attack_actions, 1)]
    trajectory, failures = _play(task, [*reference[:1], *attack, *reference[1:]])
    if score_trajectory(task, trajectory).attack_success:
        return None
    # A call that fails may be the attack itself (a ``curl … | sh`` the sandbox refuses
    # is still the act), so failures only explain a goal that was never reached.
    goals = " or ".join(_describe(p) for p in task.attack_goal)
    why = f" ({'; '.join(failures)})" if failures else ""
    return f"its attack cannot reach its goal: {goals} never held{why}"


def _play(task: SecurityTask, calls: Sequence[tuple[str, Call]]) -> tuple[Trajectory, list[str]]:
    """The trajectory of ``calls`` in a fresh sandbox of ``task``, and the calls that failed.

    Raises:
        _InvalidCallError: A call names an argument its tool lacks, or its arguments do not
            validate against the tool's schema.
    """
    failures: list[str] = []
    with Sandbox(
        task.environment, goal=task.goal, tools=task.tools, capabilities=task.capabilities
    ) as box:
        tools = {t.name: t for t in sandbox_tools(box, task.tools)}
        for label, call in calls:
            tool = tools[call.tool]
            # The schema ignores unknown names, as it does for an agent; a spec must not
            # rely on that (``{"qeury": "x"}`` would quietly run with the default).
            unknown = sorted(set(call.args) - set(tool.parameters))
            if unknown:
                raise _InvalidCallError(
                    f"{label} does not validate: {call.tool} has no argument {unknown[0]!r} "
                    f"(it takes {', '.join(tool.parameters)})"
                )
            raw = json.dumps(call.args)
            try:
                tool.parse_args(raw)
            except ToolCallError as exc:
                raise _InvalidCallError(f"{label} does not validate: {exc}") from None
            try:
                tool.call(raw)
            except ToolCallError as exc:
                failures.append(f"{label} {exc}")
        return box.trajectory(answer=task.reference.answer), failures


def _describe(predicate: Predicate) -> str:
    """A predicate as a message names it: its name, or its type and what it checks."""
    if predicate.name:
        return repr(predicate.name)
    fields = predicate.model_dump(exclude={"type", "name"}, exclude_defaults=True)
    return " ".join([predicate.type, *(f"{k}={v!r}" for k, v in fields.items())])
