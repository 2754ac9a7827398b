"""Headline evaluation runs: the embedded model on HotPotQA and ALFWorld, then the same
commands pointed at an OpenAI-compatible worker.

Every run is the `relaygraph eval` command itself (recorded in the JSON as typed), into
``runs/headline/<name>``; a killed benchmark resumes its runs. The worker runs draw fewer
items with the same seed, and a smaller draw is part of a larger one, so worker and
embedded are compared on the same items: seconds per item (ratio) and how often the two
scores agree. The worker is a `relaygraph worker` on 127.0.0.1 (vLLM is not installable
on this CPU machine; a vLLM worker URL goes in the same ``openai:`` model name).

Usage:
    python benchmarks/eval_headline.py [--hotpot-limit 100] [--alfworld-limit 12]
        [--worker-hotpot 10] [--worker-alfworld 6] [--parts embedded worker]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import RESULTS, machine, worker, write_json

from relaygraph.eval.runs import read_items

MODEL = "smollm2-135m"
RUNS = Path(__file__).resolve().parent.parent / "runs" / "headline"
WORKER_PORT = 8017
"""Fixed, so a resumed worker run names the same model URL as the run it continues."""


@dataclass(frozen=True)
class Run:
    """One `relaygraph eval` invocation."""

    name: str
    suite: str
    limit: int | None

    def command(self, model: str) -> list[str]:
        limit = [] if self.limit is None else ["--limit", str(self.limit)]
        out = RUNS.relative_to(Path.cwd()) if RUNS.is_relative_to(Path.cwd()) else RUNS
        return ["relaygraph", "eval", self.suite, "--model", model, *limit, "--out",
                str(out / self.name)]  # fmt: skip

    def execute(self, model: str) -> dict[str, Any]:
        command = self.command(model)
        if (RUNS / self.name / "run.json").exists():
            command.append("--resume")
        print("$", shlex.join(command), flush=True)
        subprocess.run(
            [sys.executable, "-m", "relaygraph.cli", *command[1:]],
            check=True,
            env=os.environ | {"HF_HUB_OFFLINE": "1"},
        )
        summary = json.loads((RUNS / self.name / "summary.json").read_text())
        return {"command": shlex.join(self.command(model)), "summary": summary}


def agreement(embedded: str, served: str) -> dict[str, Any]:
    """The worker run against the embedded run on the items both played."""
    a, b = read_items(RUNS / embedded), read_items(RUNS / served)
    shared = sorted(a.keys() & b.keys())
    if not shared:
        return {"shared_items": 0}
    seconds_a = statistics.fmean(a[i].latency_s for i in shared)
    seconds_b = statistics.fmean(b[i].latency_s for i in shared)
    return {
        "shared_items": len(shared),
        "embedded_seconds_per_item": round(seconds_a, 2),
        "worker_seconds_per_item": round(seconds_b, 2),
        "worker_vs_embedded_seconds": round(seconds_b / seconds_a, 3),
        "same_score": round(statistics.fmean(a[i].success == b[i].success for i in shared), 3),
        "embedded_success": round(statistics.fmean(a[i].success for i in shared), 3),
        "worker_success": round(statistics.fmean(b[i].success for i in shared), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hotpot-limit", type=int, default=100)
    parser.add_argument("--alfworld-limit", type=int, default=12)
    parser.add_argument("--worker-hotpot", type=int, default=10)
    parser.add_argument("--worker-alfworld", type=int, default=6)
    parts = ["embedded", "worker"]
    parser.add_argument("--parts", nargs="+", choices=parts, default=parts)
    args = parser.parse_args()
    out = RESULTS / "eval_headline.json"
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    result |= {"benchmark": "eval_headline", "machine": machine(), "model": MODEL}
    result.setdefault("settings", {})
    result.setdefault("runs", {})

    embedded = [
        Run("hotpotqa-embedded", "hotpotqa", args.hotpot_limit),
        Run("alfworld-embedded", "alfworld", args.alfworld_limit),
    ]
    served = [
        Run("hotpotqa-worker", "hotpotqa", args.worker_hotpot),
        Run("alfworld-worker", "alfworld", args.worker_alfworld),
    ]
    if "embedded" in args.parts:
        result["settings"]["embedded"] = vars(args)
        for run in embedded:
            result["runs"][run.name] = run.execute(MODEL)
            write_json(out, result)
    if "worker" in args.parts:
        result["settings"]["worker"] = vars(args)
        with worker(MODEL, port=WORKER_PORT) as base_url:
            for run in served:
                result["runs"][run.name] = run.execute(f"openai:{base_url}/{MODEL}")
                write_json(out, result)
        result["worker_vs_embedded"] = {
            suite: agreement(f"{suite}-embedded", f"{suite}-worker")
            for suite in ("hotpotqa", "alfworld")
            if (RUNS / f"{suite}-embedded" / "run.json").exists()
        }
    write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
