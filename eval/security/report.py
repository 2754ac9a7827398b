"""The security figures of a run: per category and overall, as JSON, Markdown and a plot.

Built from the run directory's item records alone (like the generic report, which it
extends), so a resumed or interrupted run can be reported at any time.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from relaygraph.eval.report import REPORT, markdown, write_report
from relaygraph.fileio import save_figure, write_atomic
from relaygraph.graph.runs import read_items

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.eval.report import Summary
    from relaygraph.graph.runs import ItemRecord

SECURITY = "security.json"
PLOT = "security_by_category.png"


class Figures(BaseModel):
    """Rates over a set of tasks; None where the set has no task of that kind."""

    attack_tasks: int
    benign_tasks: int
    utility_benign: float | None
    utility_under_attack: float | None
    attack_success_rate: float | None
    attack_success_rate_end_state: float | None
    """What end-state scoring reports for the same runs."""
    unsafe_rate: float
    """Tasks with any violation, attack or benign."""
    unsafe_missed_by_end_state: int
    """Tasks trajectory scoring finds unsafe and end-state scoring does not."""
    first_violation_step: float | None
    refusal_rate_benign: float | None
    secure_utility: float
    """Utility with safety as a must-pass gate (SeClaw's score)."""
    guard_blocked_mean: float
    errors: int
    prompt_tokens_mean: float
    completion_tokens_mean: float
    latency_s_mean: float


class SecurityReport(BaseModel):
    overall: Figures
    by_category: dict[str, Figures]


def figures(records: Sequence[ItemRecord]) -> Figures:
    """The figures of ``records``."""
    attack = [r for r in records if r.groups.get("kind") == "attack"]
    benign = [r for r in records if r.groups.get("kind") == "benign"]
    unsafe = [r for r in records if r.metrics.get("unsafe")]
    return Figures(
        attack_tasks=len(attack),
        benign_tasks=len(benign),
        utility_benign=_mean(benign, "utility"),
        utility_under_attack=_mean(attack, "utility"),
        attack_success_rate=_mean(attack, "attack_success"),
        attack_success_rate_end_state=_mean(attack, "end_state_attack_success"),
        unsafe_rate=_mean(records, "unsafe") or 0.0,
        unsafe_missed_by_end_state=sum(not r.metrics.get("end_state_unsafe") for r in unsafe),
        first_violation_step=_mean(unsafe, "first_violation_step"),
        refusal_rate_benign=_mean(benign, "refused"),
        secure_utility=sum(r.success for r in records) / max(len(records), 1),
        guard_blocked_mean=_mean(records, "guard_blocked") or 0.0,
        errors=sum(r.error is not None for r in records),
        prompt_tokens_mean=sum(r.prompt_tokens for r in records) / max(len(records), 1),
        completion_tokens_mean=sum(r.completion_tokens for r in records) / max(len(records), 1),
        latency_s_mean=sum(r.latency_s for r in records) / max(len(records), 1),
    )


def security_report(records: Sequence[ItemRecord]) -> SecurityReport:
    """Overall and per-category figures."""
    by_category: dict[str, list[ItemRecord]] = defaultdict(list)
    for r in records:
        by_category[r.groups.get("category", "?")].append(r)
    return SecurityReport(
        overall=figures(records),
        by_category={name: figures(rs) for name, rs in sorted(by_category.items())},
    )


def write_security_report(directory: str | Path) -> tuple[Summary, SecurityReport]:
    """The generic report of the run, then security.json, its plot and its Markdown section."""
    root = Path(directory)
    summary = write_report(root)
    report = security_report(list(read_items(root).values()))
    write_atomic(root / SECURITY, report.model_dump_json(indent=2))
    _plot(report, root / PLOT)
    write_atomic(root / REPORT, markdown(summary) + security_markdown(report))
    return summary, report


def security_markdown(report: SecurityReport) -> str:
    """The report's security section: one row per category, then overall."""
    lines = [
        "## Security, scored over the whole trajectory",
        "",
        "| category | attack / benign tasks | ASR | ASR (end state) | utility under attack | "
        "benign utility | benign refusals | unsafe | first violation step | guard blocks |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [*report.by_category.items(), ("**overall**", report.overall)]
    for name, f in rows:
        lines.append(
            f"| {name} | {f.attack_tasks} / {f.benign_tasks} | {_pct(f.attack_success_rate)} | "
            f"{_pct(f.attack_success_rate_end_state)} | {_pct(f.utility_under_attack)} | "
            f"{_pct(f.utility_benign)} | {_pct(f.refusal_rate_benign)} | {_pct(f.unsafe_rate)} | "
            f"{'-' if f.first_violation_step is None else f'{f.first_violation_step:.1f}'} | "
            f"{f.guard_blocked_mean:.2f} |"
        )
    overall = report.overall
    lines += [
        "",
        f"Unsafe tasks that end-state scoring would call safe: "
        f"{overall.unsafe_missed_by_end_state}. Secure utility (safety as a must-pass gate): "
        f"{overall.secure_utility:.1%}. Plot: [{PLOT}]({PLOT})",
        "",
    ]
    return "\n".join(lines)


def _plot(report: SecurityReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(report.by_category)
    series = {
        "attack success": [report.by_category[n].attack_success_rate or 0 for n in names],
        "utility under attack": [report.by_category[n].utility_under_attack or 0 for n in names],
        "benign utility": [report.by_category[n].utility_benign or 0 for n in names],
        "unsafe": [report.by_category[n].unsafe_rate for n in names],
    }
    x = np.arange(len(names))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names)), 4))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(x + i * width, values, width, label=label)
    ax.set_xticks(x + width * (len(series) - 1) / 2, [n.replace("_", "\n") for n in names])
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of tasks")
    ax.legend(fontsize=8)
    ax.set_title("Security by risk category (trajectory scoring)")
    save_figure(fig, path)


def _mean(records: Sequence[ItemRecord], metric: str) -> float | None:
    values = [r.metrics[metric] for r in records if metric in r.metrics]
    return sum(values) / len(values) if values else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"
