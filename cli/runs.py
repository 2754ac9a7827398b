"""What the commands that write a run directory share (``eval hotpotqa``, ``eval
alfworld``, ``eval security run``, and ``eval report`` rebuilding one): the options that
place and resume a run, its default folder, and the tables that print its results."""

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from relaygraph.cli.root import console

if TYPE_CHECKING:
    from relaygraph.eval.report import Summary
    from relaygraph.eval.security import SecurityReport

ConcurrencyOption = Annotated[int, typer.Option(min=1, help="Items run at once.")]
OutOption = Annotated[Path | None, typer.Option(help="Run directory (default: runs/<suite>-…).")]
ResumeOption = Annotated[
    bool, typer.Option("--resume", help="Continue the run in --out, skipping finished items.")
]


def default_out(suite: str, model: str) -> Path:
    """``runs/<suite>-<model>-<time>``: a new folder per run when ``--out`` is not given."""
    slug = "".join(c if c.isalnum() or c in "-." else "-" for c in model.rsplit("/", 1)[-1])
    return Path("runs") / f"{suite}-{slug}-{time.strftime('%Y%m%d-%H%M%S')}"


def print_summary(out: Path, summary: "Summary") -> None:
    """The run's headline, metrics and cost as a table, and where its report is."""
    table = Table(title=f"{summary.suite}: {summary.items} items, {summary.graph}")
    table.add_column("metric")
    table.add_column(summary.model, justify="right")
    table.add_row(summary.headline, f"{summary.success:.1%}")
    for name, value in summary.metrics.items():
        table.add_row(name, f"{value:.3f}")
    table.add_row("errors", str(summary.errors))
    table.add_row("prompt tokens / item", f"{summary.prompt_tokens_mean:.0f}")
    table.add_row("latency p50 s", f"{summary.latency_s['p50']:.1f}")
    console.print(table)
    console.print(f"report: {out / 'report.md'}")


def print_security(report: "SecurityReport") -> None:
    """Attack success and utility per category (a security run's own figures)."""
    table = Table(title="Security (trajectory scoring)")
    for column in (
        "category",
        "ASR",
        "ASR end state",
        "utility attacked",
        "utility benign",
        "unsafe",
    ):
        table.add_column(column, justify="left" if column == "category" else "right")

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    for name, f in [*report.by_category.items(), ("overall", report.overall)]:
        table.add_row(
            name,
            pct(f.attack_success_rate),
            pct(f.attack_success_rate_end_state),
            pct(f.utility_under_attack),
            pct(f.utility_benign),
            pct(f.unsafe_rate),
        )
    console.print(table)
