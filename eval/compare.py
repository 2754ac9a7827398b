"""Comparing two runs: headline figures side by side, then the items whose outcome differs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.table import Table

from relaygraph.errors import ConfigError
from relaygraph.eval.report import summarize
from relaygraph.graph.runs import ItemRecord, read_items, read_manifest

if TYPE_CHECKING:
    from pathlib import Path

    from relaygraph.eval.report import Summary


@dataclass(frozen=True, slots=True)
class Comparison:
    """Two runs' summaries over the items both finished, and the items that differ."""

    a: Summary
    b: Summary
    shared: int
    differing: list[tuple[ItemRecord, ItemRecord]]


def compare(run_a: str | Path, run_b: str | Path) -> Comparison:
    """Compare two run directories of the same suite on the items both have.

    Raises:
        ConfigError: Not runs, runs of different suites, or no item in common.
    """
    manifest_a, manifest_b = read_manifest(run_a), read_manifest(run_b)
    if manifest_a.suite != manifest_b.suite:
        raise ConfigError(f"cannot compare a {manifest_a.suite} run with a {manifest_b.suite} run")
    items_a, items_b = read_items(run_a), read_items(run_b)
    shared = [i for i in items_a if i in items_b]
    if not shared:
        raise ConfigError(f"{run_a} and {run_b} have no item in common")
    differing = [
        (items_a[i], items_b[i])
        for i in shared
        if items_a[i].success != items_b[i].success
        or items_a[i].prediction != items_b[i].prediction
    ]
    return Comparison(
        summarize(manifest_a, [items_a[i] for i in shared]),
        summarize(manifest_b, [items_b[i] for i in shared]),
        len(shared),
        differing,
    )


def summary_rows(comparison: Comparison) -> list[tuple[str, str, str, str]]:
    """Headline figures of both runs as (figure, A, B, B - A) text rows."""
    a, b = comparison.a, comparison.b
    rows = [("model", a.model, b.model, ""), ("graph", a.graph, b.graph, "")]
    figures = {"success": (a.success, b.success)}
    figures |= {m: (a.metrics[m], b.metrics.get(m, 0.0)) for m in a.metrics}
    figures |= {
        "errors": (a.errors, b.errors),
        "steps / item": (a.steps_mean, b.steps_mean),
        "prompt tokens / item": (a.prompt_tokens_mean, b.prompt_tokens_mean),
        "completion tokens / item": (a.completion_tokens_mean, b.completion_tokens_mean),
        "latency p50 s": (a.latency_s["p50"], b.latency_s["p50"]),
    }
    for name, (x, y) in figures.items():
        rows.append((name, f"{x:.3f}", f"{y:.3f}", f"{y - x:+.3f}"))
    return rows


def summary_table(comparison: Comparison, names: tuple[str, str]) -> Table:
    """Headline figures of both runs, with B - A."""
    table = Table(title=f"{comparison.a.suite}: {comparison.shared} items in both runs")
    table.add_column("")
    table.add_column(names[0], justify="right")
    table.add_column(names[1], justify="right")
    table.add_column("B - A", justify="right")
    for row in summary_rows(comparison):
        table.add_row(*row)
    return table


def items_table(comparison: Comparison, limit: int = 50) -> Table:
    """The items whose score or prediction differs (first ``limit``)."""
    table = Table(title=f"{len(comparison.differing)} items differ")
    for column in ("id", "gold", "A", "B", "A score", "B score"):
        table.add_column(column, overflow="fold")
    for x, y in comparison.differing[:limit]:
        table.add_row(
            x.id, x.gold or "", x.prediction or "-", y.prediction or "-",
            f"{x.success:.2f}", f"{y.success:.2f}",
        )  # fmt: skip
    return table
