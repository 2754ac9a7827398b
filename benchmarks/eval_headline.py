"""Headline evaluation runs: the embedded model on HotPotQA and ALFWorld, then the same
commands pointed at an OpenAI-compatible worker.

Every run is the `relaygraph eval` command itself (recorded in the JSON as typed), into
``runs/headline/<name>``; a killed benchmark resumes its runs. The worker runs draw fewer
items with the same seed, and a smaller draw is part of a larger one, so worker and
embedded are compared on the same items: seconds per item (ratio) and how often the two
scores agree. Two kinds of worker: ``worker`` starts a `relaygraph worker` on 127.0.0.1 (the
embedded engine behind the OpenAI API); ``vllm`` uses a running vLLM server given by
``--vllm-url`` that serves the same model (``relaygraph export`` writes the packaged GGUF
as the folder it loads; see the README).

Usage:
    python benchmarks/eval_headline.py [--hotpot-limit 100] [--alfworld-limit 12]
        [--worker-hotpot 10] [--worker-alfworld 6] [--parts embedded worker vllm]
        [--vllm-url http://127.0.0.1:8001/v1]
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

from relaygraph.graph.runs import read_items

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
        "same_prediction": round(
            statistics.fmean(a[i].prediction == b[i].prediction for i in shared), 3
        ),
        "embedded_success": round(statistics.fmean(a[i].success for i in shared), 3),
        "worker_success": round(statistics.fmean(b[i].success for i in shared), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hotpot-limit", type=int, default=100)
    parser.add_argument("--alfworld-limit", type=int, default=12)
    parser.add_argument("--worker-hotpot", type=int, default=10)
    parser.add_argument("--worker-alfworld", type=int, default=6)
    parser.add_argument("--vllm-url", help="A vLLM server serving the model as " + MODEL)
    parts = ["embedded", "worker", "vllm"]
    parser.add_argument(
        "--parts", nargs="*", choices=parts, default=parts[:2],
        help="runs to make (none: only compare the runs already in runs/headline)",
    )  # fmt: skip
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

    def served(kind: str) -> list[Run]:
        return [
            Run(f"hotpotqa-{kind}", "hotpotqa", args.worker_hotpot),
            Run(f"alfworld-{kind}", "alfworld", args.worker_alfworld),
        ]

    if "embedded" in args.parts:
        result["settings"]["embedded"] = vars(args)
        for run in embedded:
            result["runs"][run.name] = run.execute(MODEL)
            write_json(out, result)
    if "worker" in args.parts:
        result["settings"]["worker"] = vars(args)
        with worker(MODEL, port=WORKER_PORT) as base_url:
            for run in served("worker"):
                result["runs"][run.name] = run.execute(f"openai:{base_url}/{MODEL}")
                write_json(out, result)
    if "vllm" in args.parts:
        if not args.vllm_url:
            raise SystemExit("--parts vllm needs --vllm-url")
        result["settings"]["vllm"] = vars(args)
        for run in served("vllm"):
            result["runs"][run.name] = run.execute(f"openai:{args.vllm_url}/{MODEL}")
            write_json(out, result)
    result["served_vs_embedded"] = {
        f"{suite}-{kind}": agreement(f"{suite}-embedded", f"{suite}-{kind}")
        for suite in ("hotpotqa", "alfworld")
        for kind in ("worker", "vllm")
        if (RUNS / f"{suite}-embedded" / "run.json").exists()
        and (RUNS / f"{suite}-{kind}" / "run.json").exists()
    }
    write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
