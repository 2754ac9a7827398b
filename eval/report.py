"""A finished run's summary (JSON), report (Markdown) and plots (PNG).

Everything is computed from the run directory alone (manifest and item records), so a
report can be rebuilt at any time, and a resumed run reports all its items.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from relaygraph.fileio import save_figure, write_atomic
from relaygraph.graph.runs import RunManifest, read_items, read_manifest

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.graph.runs import ItemRecord

SUMMARY = "summary.json"
REPORT = "report.md"
PLOTS = ("by_group.png", "tokens_by_role.png", "latency.png")


class GroupScore(BaseModel):
    n: int
    success: float


class RoleMeans(BaseModel):
    """A role's mean usage per item."""

    steps: float
    prompt_tokens: float
    completion_tokens: float
    latency_s: float
    cost: float


class Summary(BaseModel):
    """The headline figures of a run."""

    suite: str
    headline: str
    dataset: str
    graph: str
    model: str
    items: int
    planned: int
    success: float
    metrics: dict[str, float]
    by_group: dict[str, dict[str, GroupScore]]
    roles: dict[str, RoleMeans]
    errors: int
    steps_mean: float
    prompt_tokens_mean: float
    completion_tokens_mean: float
    latency_s: dict[str, float]
    cost_total: float


def summarize(manifest: RunManifest, records: Sequence[ItemRecord]) -> Summary:
    """The run's means, breakdowns and latency percentiles."""
    n = len(records)
    metric_names = sorted({m for r in records for m in r.metrics})
    metrics = {m: _mean([r.metrics[m] for r in records if m in r.metrics]) for m in metric_names}
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        for key, value in r.groups.items():
            groups[key][value].append(r.success)
    roles: dict[str, list[Any]] = defaultdict(list)
    for r in records:
        for role, usage in r.roles.items():
            roles[role].append(usage)
    latencies = np.array([r.latency_s for r in records]) if records else np.zeros(1)
    return Summary(
        suite=manifest.suite,
        headline=manifest.headline,
        dataset=manifest.dataset,
        graph=manifest.graph,
        model=manifest.model,
        items=n,
        planned=manifest.items,
        success=_mean([r.success for r in records]),
        metrics=metrics,
        by_group={
            key: {
                value: GroupScore(n=len(scores), success=_mean(scores))
                for value, scores in sorted(values.items())
            }
            for key, values in sorted(groups.items())
        },
        # Means over all items, so roles that run only on some items weigh accordingly.
        roles={
            role: RoleMeans(
                **{
                    f: sum(getattr(u, f) for u in usages) / max(n, 1)
                    for f in RoleMeans.model_fields
                }
            )
            for role, usages in sorted(roles.items())
        },
        errors=sum(r.error is not None for r in records),
        steps_mean=_mean([r.steps for r in records]),
        prompt_tokens_mean=_mean([r.prompt_tokens for r in records]),
        completion_tokens_mean=_mean([r.completion_tokens for r in records]),
        latency_s={
            "mean": float(latencies.mean()),
            "p50": float(np.percentile(latencies, 50)),
            "p95": float(np.percentile(latencies, 95)),
        },
        cost_total=sum(r.cost for r in records),
    )


def write_report(directory: str | Path) -> Summary:
    """Write summary.json, report.md and the plots of the run in ``directory``."""
    root = Path(directory)
    manifest = read_manifest(root)
    records = list(read_items(root).values())
    summary = summarize(manifest, records)
    write_atomic(root / SUMMARY, summary.model_dump_json(indent=2))
    _plots(root, summary, records)
    write_atomic(root / REPORT, markdown(summary))
    return summary


def markdown(summary: Summary) -> str:
    """The report's text."""
    headline = summary.headline
    lines = [
        f"# {summary.suite}: {summary.graph} on {summary.model}",
        "",
        f"- data: `{summary.dataset}`, {summary.items} of {summary.planned} items done",
        f"- **{headline}: {summary.success:.1%}**"
        + "".join(f", {k} {v:.3f}" for k, v in summary.metrics.items()),
        f"- errors (scored as failures): {summary.errors}",
        f"- per item: {summary.steps_mean:.1f} steps, {summary.prompt_tokens_mean:.0f} prompt + "
        f"{summary.completion_tokens_mean:.0f} completion tokens, latency p50 "
        f"{summary.latency_s['p50']:.1f} s, p95 {summary.latency_s['p95']:.1f} s",
        "",
    ]
    for key, values in summary.by_group.items():
        lines += [f"## By {key}", "", f"| {key} | items | {headline} |", "|---|---:|---:|"]
        lines += [f"| {v} | {g.n} | {g.success:.1%} |" for v, g in values.items()]
        lines.append("")
    lines += [
        "## Per role (mean per item)",
        "",
        "| role | steps | prompt tokens | completion tokens | latency s | cost |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {role} | {m.steps:.1f} | {m.prompt_tokens:.0f} | {m.completion_tokens:.0f} | "
        f"{m.latency_s:.2f} | {m.cost:.4f} |"
        for role, m in summary.roles.items()
    ]
    lines += ["", "Plots: " + ", ".join(f"[{p}]({p})" for p in PLOTS), ""]
    return "\n".join(lines)


def _plots(root: Path, summary: Summary, records: Sequence[ItemRecord]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(summary.by_group.items())
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(5 * max(1, len(groups)), 3.5))
    for ax, (key, values) in zip(np.atleast_1d(axes), groups, strict=False):
        names = list(values)
        ax.bar(names, [values[v].success for v in names], color="#4c72b0")
        ax.set_ylim(0, 1)
        ax.set_title(f"{summary.headline} by {key}")
        ax.tick_params(axis="x", rotation=30)
        for i, v in enumerate(names):
            ax.text(i, values[v].success + 0.02, f"n={values[v].n}", ha="center", fontsize=8)
    save_figure(fig, root / PLOTS[0])

    fig, ax = plt.subplots(figsize=(6, 3.5))
    roles = list(summary.roles)
    prompt = [summary.roles[r].prompt_tokens for r in roles]
    completion = [summary.roles[r].completion_tokens for r in roles]
    ax.bar(roles, prompt, label="prompt", color="#4c72b0")
    ax.bar(roles, completion, bottom=prompt, label="completion", color="#dd8452")
    ax.set_ylabel("tokens per item")
    ax.set_title("Tokens per role")
    ax.legend()
    save_figure(fig, root / PLOTS[1])

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([r.latency_s for r in records] or [0.0], bins=20, color="#55a868")
    ax.set_xlabel("seconds per item")
    ax.set_ylabel("items")
    ax.set_title("Latency")
    save_figure(fig, root / PLOTS[2])


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0
