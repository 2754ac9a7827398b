"""What the pages show, shaped for the templates: a trace's timeline, a step's
speculative rounds, a run's filtered items. No HTML here: the templates write it, and
they escape every string (see `relaygraph.ui.app`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from relaygraph.decoding.rounds import SpeculativeReport

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.agents.record import StepRecord
    from relaygraph.graph.runs import ItemRecord
    from relaygraph.graph.trace import Trace

Outcome = Literal["all", "correct", "wrong", "error"]
OUTCOMES: tuple[Outcome, ...] = ("all", "correct", "wrong", "error")

TIMELINE_WIDTH = 900
"""Width of the timeline's bar area, in SVG units."""
ROW_HEIGHT = 26
LABEL_WIDTH = 140


@dataclass(frozen=True, slots=True)
class Bar:
    """One step on the timeline: its row (the agent), where it starts and how long it ran."""

    step: int
    agent: str
    row: int
    start_s: float
    seconds: float
    x: float
    width: float
    failed: bool


@dataclass(frozen=True, slots=True)
class Timeline:
    """The steps as bars, one row per agent, on a shared time axis."""

    agents: list[str]
    bars: list[Bar]
    total_s: float
    ticks: list[tuple[float, float]]
    """(x, seconds) of the axis' tick marks."""

    @property
    def height(self) -> int:
        return ROW_HEIGHT * len(self.agents) + 30


def timeline(trace: Trace) -> Timeline:
    """The trace's steps on a time axis, one row per agent.

    A step starts at its ``started_at`` (seconds after the first step's), so steps of
    parallel branches overlap. A trace written before steps recorded their start lays
    them end to end instead. Worked example: latencies 1.0, 0.5, 2.0 s without start
    times give bars at 0-1, 1-1.5 and 1.5-3.5 s of a 3.5 s axis.
    """
    agents = list(dict.fromkeys(s.agent for s in trace.steps))
    starts = _starts(trace.steps)
    total = max((t + s.latency_s for t, s in zip(starts, trace.steps, strict=True)), default=0.0)
    scale = TIMELINE_WIDTH / total if total > 0 else 0.0
    bars = []
    for clock, s in zip(starts, trace.steps, strict=True):
        bars.append(
            Bar(
                step=s.step,
                agent=s.agent,
                row=agents.index(s.agent),
                start_s=clock,
                seconds=s.latency_s,
                x=LABEL_WIDTH + clock * scale,
                # a zero-length step still shows as a sliver
                width=max(s.latency_s * scale, 2.0),
                failed=s.error is not None,
            )
        )
    ticks = [(LABEL_WIDTH + TIMELINE_WIDTH * k / 4, total * k / 4) for k in range(5)]
    return Timeline(agents, bars, total, ticks)


def _starts(steps: Sequence[StepRecord]) -> list[float]:
    """Each step's start in seconds after the first one's."""
    recorded = [s.started_at for s in steps if s.started_at is not None]
    if steps and len(recorded) == len(steps):
        first = min(recorded)
        return [t - first for t in recorded]
    starts, clock = [], 0.0
    for s in steps:
        starts.append(clock)
        clock += s.latency_s
    return starts


def speculative_rounds(step: StepRecord) -> list[dict[str, Any]]:
    """The step's speculative rounds, one dict per round (empty for other decoders)."""
    report = step.decoding.report
    if not isinstance(report, SpeculativeReport):
        return []
    # What the trace recorded: columns an older trace lacks are left out, not shown empty.
    columns = report.per_round.model_dump(exclude_unset=True)
    count = max((len(v) for v in columns.values()), default=0)
    return [{k: v[i] if i < len(v) else None for k, v in columns.items()} for i in range(count)]


def decoding_totals(step: StepRecord) -> dict[str, Any]:
    """The decoder's report without its per-round lists."""
    report = step.decoding.report
    if isinstance(report, SpeculativeReport):
        return report.model_dump(exclude={"per_round"}, exclude_unset=True)
    return {k: v for k, v in report.items() if k != "per_round"}


def outcome(item: ItemRecord) -> Outcome:
    """An item's outcome: an error, a correct answer (full success) or a wrong one."""
    if item.error is not None:
        return "error"
    return "correct" if item.success >= 1.0 else "wrong"


def group_values(items: Sequence[ItemRecord]) -> dict[str, list[str]]:
    """Every group key of the items (question type, level, task type) and its values."""
    values: dict[str, set[str]] = {}
    for item in items:
        for key, value in item.groups.items():
            values.setdefault(key, set()).add(value)
    return {key: sorted(v) for key, v in sorted(values.items())}


def filter_items(
    items: Sequence[ItemRecord], show: Outcome, groups: dict[str, str]
) -> list[ItemRecord]:
    """The items with outcome ``show`` (any for ``all``) and every given group value."""
    return [
        item
        for item in items
        if (show == "all" or outcome(item) == show)
        and all(item.groups.get(key) == value for key, value in groups.items() if value)
    ]
