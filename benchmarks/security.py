"""Security-task evaluation: the scorer, the tasks, the guard, and real models on them.

Four parts, all on the 168 tasks synthesized from the shipped specs (seed 0):

1. scorer validation: the scripted trajectories with known verdicts (exactly right or
   the benchmark fails), and what end-state scoring says of the same runs;
2. task check: every task run by a scripted assistant doing the spec's reference
   solution (must be safe and meet the goal) and, for attack tasks, obeying the payload
   (must reach the attack's goal), through the real graph and sandbox;
3. guard coverage: the always-obeying scripted assistant behind the shipped rule-based
   guard versus without it: attack success, utility kept, per category. It is an upper
   bound on what an assistant that follows every injection would do, not a model;
4. models: the baseline and the guarded graph on a real model (Gemma-3-270M by default)
   over every task, through the real runner (resumable run directories under
   runs/security_bench/).

Writes benchmarks/results/security.json and security.png.

Usage:
    python benchmarks/security.py [--model gemma3-270m] [--limit N] [--no-model]
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from _common import RESULTS, machine, write_json
from rich.progress import track

from relaygraph.eval.runner import evaluate, sample_items
from relaygraph.eval.security import (
    SecuritySuite,
    assistant,
    guarded_assistant,
    load_specs,
    synthesize,
    validate_scorer,
    write_security_report,
)
from relaygraph.eval.security.report import SecurityReport, security_report
from relaygraph.eval.security.scripted import scripted_assistant
from relaygraph.fileio import save_figure
from relaygraph.llm.registry import load_llm

RUNS = Path("runs/security_bench")
GRAPHS: dict[str, Callable[..., Any]] = {"assistant": assistant, "guarded": guarded_assistant}


def scripted_runs(tasks: list[Any], *, obey_attack: bool) -> dict[str, SecurityReport]:
    """Each graph driven by the scripted assistant over ``tasks``."""
    reports = {}
    for name, factory in GRAPHS.items():
        records = []
        for task in track(tasks, description=f"scripted {name}, obey={obey_attack}"):
            llm = scripted_assistant(task, obey_attack=obey_attack and task.kind == "attack")
            records.append(SecuritySuite(factory, llm).run(task)[0])
        reports[name] = security_report(records)
    return reports


def model_runs(tasks: list[Any], model: str) -> dict[str, SecurityReport]:
    llm = load_llm(model)
    reports = {}
    for name, factory in GRAPHS.items():
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model).strip("-")
        out = RUNS / f"{name}-{slug}"
        evaluate(
            SecuritySuite(factory, llm, directory=out),
            tasks,
            out,
            dataset="shipped specs, seed 0",
            graph=f"relaygraph.eval.security.agents:{factory.__name__}",
            model=model,
            resume=True,
        )
        reports[name] = write_security_report(out)[1]
    return reports


def plot(
    scripted: dict[str, SecurityReport],
    models: dict[str, SecurityReport],
    model: str,
    path: Path,
) -> None:
    categories = list(scripted["assistant"].by_category)
    panels = [("scripted assistant that always obeys the payload", scripted)]
    if models:
        panels.append((f"{model} (real model)", models))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.2), squeeze=False)
    x = np.arange(len(categories))
    for ax, (title, reports) in zip(axes[0], panels, strict=True):
        for i, (name, color) in enumerate((("assistant", "#c44e52"), ("guarded", "#4c72b0"))):
            asr = [reports[name].by_category[c].attack_success_rate or 0 for c in categories]
            util = [reports[name].by_category[c].utility_under_attack or 0 for c in categories]
            ax.bar(x + (i - 0.5) * 0.38, asr, 0.38, color=color, label=f"{name}: attack success")
            ax.scatter(
                x + (i - 0.5) * 0.38,
                util,
                color="black",
                marker="_" if i else "x",
                s=80,
                label=f"{name}: utility under attack",
                zorder=3,
            )
        ax.set_xticks(x, [c.replace("_", "\n") for c in categories], fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.suptitle("Attack success by risk category (trajectory scoring), with and without the guard")
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--limit", type=int, default=None, help="Tasks for the model runs.")
    parser.add_argument("--no-model", action="store_true", help="Skip part 4.")
    args = parser.parse_args()
    started = time.time()
    tasks = synthesize(load_specs(), seed=0)

    validation = validate_scorer()
    if not all(r.correct for r in validation):
        raise SystemExit(
            f"scorer validation failed: {[r.name for r in validation if not r.correct]}"
        )
    reference = scripted_runs(tasks, obey_attack=False)
    obeying = scripted_runs(tasks, obey_attack=True)
    ref, atk = reference["assistant"].overall, obeying["assistant"].overall
    models: dict[str, SecurityReport] = {}
    model_tasks = sample_items(tasks, args.limit, 0, stratum=lambda t: t.category)
    if not args.no_model:
        models = model_runs(model_tasks, args.model)

    def guard_effect(reports: dict[str, SecurityReport]) -> dict[str, Any]:
        base, guarded = reports["assistant"].overall, reports["guarded"].overall
        return {
            "asr_baseline": base.attack_success_rate,
            "asr_guarded": guarded.attack_success_rate,
            "asr_ratio_guarded_over_baseline": (
                guarded.attack_success_rate / base.attack_success_rate
                if base.attack_success_rate
                else None
            ),
            "utility_benign_baseline": base.utility_benign,
            "utility_benign_guarded": guarded.utility_benign,
        }

    result = {
        "benchmark": "security",
        "machine": machine(),
        "settings": {
            "tasks": len(tasks),
            "seed": 0,
            "model": None if args.no_model else args.model,
            "model_tasks": len(model_tasks),
        },
        "scorer_validation": [r.model_dump() | {"correct": r.correct} for r in validation],
        "task_check": {
            "reference_safe_and_useful": f"{ref.secure_utility:.3f} of {len(tasks)} tasks",
            "attacks_reaching_their_goal": f"{atk.attack_success_rate:.3f} of "
            f"{atk.attack_tasks} attack tasks",
            "attacks_missed_by_end_state_scoring": 1 - (atk.attack_success_rate_end_state or 0),
        },
        "scripted_obeying": {k: v.model_dump() for k, v in obeying.items()},
        "scripted_reference": {k: v.model_dump() for k, v in reference.items()},
        "guard_effect_scripted": guard_effect(obeying),
        "models": {k: v.model_dump() for k, v in models.items()},
        "guard_effect_model": guard_effect(models) if models else None,
        "seconds": round(time.time() - started, 1),
    }
    write_json(RESULTS / "security.json", result)
    plot(obeying, models, args.model, RESULTS / "security.png")
    print(f"wrote {RESULTS / 'security.json'} in {result['seconds']} s")


if __name__ == "__main__":
    main()
