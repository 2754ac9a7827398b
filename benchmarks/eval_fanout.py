"""Evaluations fanned out on Ray: wall time and throughput with 1, 2 and 4 workers, and
an extrapolated curve for a fleet.

Each measured run is `relaygraph.eval.fanout.evaluate_on_ray` on a local Ray started for
it (as ``relaygraph eval hotpotqa --ray --ray-workers N`` does), into a fresh run
directory under ``runs/fanout``, with the embedded model loaded once per Ray worker. The
driver timestamps each record as it arrives, which splits a run's wall time into a fixed
part (starting Ray, the first worker loading its model: the first arrival less that item's
own time) and a per-item overhead (the rest of the gaps between arrivals beyond the items'
own times, with one worker).

The fleet curve is not measured: it list-schedules the items, in the order the driver
submits them, onto W workers, each item taking its one-worker time plus the measured
overhead, after the measured fixed part. It assumes each worker has cores of its own (as
one worker had this machine's two) and that the driver keeps up; it shows where stragglers
cap the speed-up once workers outnumber items.

Scores: greedy decoding, so every worker count must give each item the same prediction;
the JSON records how many items agree with the one-worker run.

The JSON keeps one part per suite; a run of one suite (``--hotpot-limit 0
--alfworld-limit 12``) keeps the other's part from its last run, and each part records
the machine state, commit and settings it was measured with (its own ``machine`` and
``settings``).

Usage:
    python benchmarks/eval_fanout.py [--hotpot-limit 100] [--workers 1 2 4]
        [--alfworld-limit 0] [--graph relaygraph.eval.hotpotqa.agents:react]
"""

from __future__ import annotations

import argparse
import heapq
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from _common import RESULTS, ROOT, machine, write_json

from relaygraph.eval.alfworld.games import load_games
from relaygraph.eval.fanout import RayOptions, run_on_ray
from relaygraph.eval.hotpotqa import load_hotpotqa
from relaygraph.eval.recipes import AlfworldRecipe, HotpotRecipe, SuiteRecipe
from relaygraph.eval.report import write_report
from relaygraph.eval.runner import open_run, sample_items
from relaygraph.fileio import save_figure
from relaygraph.graph.runs import ItemRecord, RunStore
from relaygraph.graph.trace import Trace

MODEL = "smollm2-135m"
RUNS = ROOT / "runs" / "fanout"
FLEET = (1, 2, 4, 8, 16, 32, 64, 128)


class TimedStore(RunStore):
    """A run store that notes when each record reached the driver."""

    def __init__(self, store: RunStore) -> None:
        super().__init__(store.directory, store.manifest, store.done)
        self.arrivals: list[float] = []

    def record(self, item: ItemRecord, trace: Trace | None) -> None:
        self.arrivals.append(time.perf_counter())
        super().record(item, trace)


def measure(
    recipe: SuiteRecipe, items: list[Any], workers: int, dataset: str, graph: str
) -> dict[str, Any]:
    """One fresh run of ``items`` on ``workers`` Ray workers."""
    out = RUNS / f"{recipe.name}-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    store = TimedStore(open_run(recipe, items, out, dataset=dataset, graph=graph, model=MODEL))
    print(f"{recipe.name}: {len(items)} items on {workers} Ray workers", flush=True)
    began = time.perf_counter()
    records = run_on_ray(recipe, items, store, RayOptions(workers=workers))
    wall = time.perf_counter() - began
    summary = write_report(out)
    latencies = [r.latency_s for r in records]
    first = min(store.arrivals) - began
    return {
        "workers": workers,
        "items": len(items),
        "wall_s": round(wall, 2),
        "items_per_min": round(60 * len(items) / wall, 2),
        "first_record_s": round(first, 2),
        "item_seconds": {
            "sum": round(sum(latencies), 2),
            "mean": round(statistics.fmean(latencies), 3),
            "p50": round(statistics.median(latencies), 3),
            "max": round(max(latencies), 2),
        },
        "success": summary.success,
        "metrics": summary.metrics,
        "errors": summary.errors,
        "predictions": {r.id: r.prediction for r in records},
        "latencies": {r.id: r.latency_s for r in records},
        "arrivals_s": [round(t - began, 3) for t in store.arrivals],
    }


def overheads(one_worker: dict[str, Any], order: list[str]) -> tuple[float, float]:
    """(fixed seconds, per-item overhead seconds) from the one-worker run's arrivals (one
    worker returns the items in the order they were submitted)."""
    latency = one_worker["latencies"]
    arrivals = one_worker["arrivals_s"]
    fixed = arrivals[0] - latency[order[0]]
    rest = arrivals[-1] - arrivals[0] - sum(latency[i] for i in order[1:])
    return max(fixed, 0.0), max(rest / max(len(order) - 1, 1), 0.0)


def fleet_seconds(durations: list[float], workers: int, fixed: float) -> float:
    """Wall time of ``durations`` list-scheduled in order onto ``workers`` free workers."""
    free = [0.0] * workers
    for duration in durations:
        heapq.heappush(free, heapq.heappop(free) + duration)
    return fixed + max(free)


def suite_part(
    recipe: SuiteRecipe, items: list[Any], workers: list[int], dataset: str, graph: str
) -> dict[str, Any]:
    runs = [measure(recipe, items, w, dataset, graph) for w in workers]
    base = next(r for r in runs if r["workers"] == 1)
    order = [recipe.item_id(item) for item in items]
    fixed, per_item = overheads(base, order)
    durations = [base["latencies"][i] + per_item for i in order]
    for run in runs:
        run["same_predictions_as_1_worker"] = sum(
            run["predictions"][i] == base["predictions"][i] for i in order
        )
    fleet = []
    for w in FLEET:
        wall = fleet_seconds(durations, w, fixed)
        fleet.append(
            {
                "workers": w,
                "wall_s": round(wall, 1),
                "items_per_min": round(60 * len(items) / wall, 1),
            }
        )
    return {
        "measured": runs,
        "overhead": {"fixed_s": round(fixed, 2), "per_item_s": round(per_item, 3)},
        "extrapolated_fleet": fleet,
    }


def plot(parts: dict[str, dict[str, Any]], path: Path) -> None:
    fig, axes = plt.subplots(1, len(parts), figsize=(6 * len(parts), 3.8), squeeze=False)
    for ax, (name, part) in zip(axes[0], parts.items(), strict=True):
        fleet = part["extrapolated_fleet"]
        ax.plot([f["workers"] for f in fleet], [f["items_per_min"] for f in fleet], "--",
                color="grey", label="extrapolated fleet (a worker per 2 cores)")  # fmt: skip
        measured = part["measured"]
        ax.plot([m["workers"] for m in measured], [m["items_per_min"] for m in measured], "o-",
                label="measured, this 2-core machine")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("Ray workers")
        ax.set_ylabel("items per minute")
        ax.set_title(f"{name}: {measured[0]['items']} items, {MODEL}")
        ax.legend(fontsize=8)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hotpot-limit", type=int, default=100)
    parser.add_argument("--alfworld-limit", type=int, default=0, help="0 skips ALFWorld")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--graph", default="relaygraph.eval.hotpotqa.agents:react")
    parser.add_argument("--alfworld-graph", default="relaygraph.eval.alfworld.agent:alfworld_react")
    args = parser.parse_args()
    if 1 not in args.workers:
        parser.error("--workers must include 1: the overheads and the fleet curve come from it")
    started = machine()
    parts: dict[str, dict[str, Any]] = {}
    if args.hotpot_limit:
        dataset = load_hotpotqa(sample="distractor-100")
        items = sample_items(dataset.examples, args.hotpot_limit, seed=0)
        parts["hotpotqa"] = suite_part(
            HotpotRecipe(args.graph, MODEL), items, args.workers, "sample:distractor-100",
            args.graph,
        )  # fmt: skip
    if args.alfworld_limit:
        games = sample_items(load_games("valid_unseen"), args.alfworld_limit, seed=0,
                             stratum=lambda game: game.task_type)  # fmt: skip
        parts["alfworld"] = suite_part(
            AlfworldRecipe(args.alfworld_graph, MODEL), games, args.workers,
            "shipped:valid_unseen", args.alfworld_graph,
        )  # fmt: skip
    out = RESULTS / "eval_fanout.json"
    # A run of one suite keeps the other's part from the last run; each part names the
    # machine state (and commit) and settings it was measured with.
    for part in parts.values():
        part |= {"machine": started, "settings": vars(args)}
    if out.is_file():
        parts = {**json.loads(out.read_text()).get("parts", {}), **parts}
    write_json(
        out,
        {
            "benchmark": "eval_fanout",
            "machine": started,
            "note": "each Ray task holds one CPU and its worker's embedded model runs on "
            "that many threads (EngineOptions.threads), so on this 2-core machine 1 worker "
            "uses one core, 2 workers both, and 4 workers run two at a time (Ray schedules "
            "tasks by CPU). The load average at the start is in machine; the fleet curve "
            "is extrapolated, not measured (see the module docstring).",
            "model": MODEL,
            "settings": vars(args),
            "parts": parts,
        },
    )
    plot(parts, RESULTS / "eval_fanout.png")


if __name__ == "__main__":
    main()
