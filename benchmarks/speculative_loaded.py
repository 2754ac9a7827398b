"""Distributed speculative decoding against a loaded worker: several edges share one cloud.

benchmarks/speculative.py measures one edge at a time, so the queue-aware part of the
adaptive window (what it reads from ``relaygraph.load``: the seconds a verification
queued and the other requests' tokens in its pass) was only ever exercised by the
simulator. Here ``--edges`` edges (threads of this process, each with its own HTTP client
and its own `SpeculativeLLM`s) decode at once against one `relaygraph worker`, whose
continuous batching shares every forward pass among them (issue 30).

The cloud: one ``relaygraph worker`` process on 127.0.0.1 serving the target (by default
the 16-bit copy benchmarks/speculative.py serves, made once under runs/speculative/: on
this CPU the packaged 4-bit kernels are compute-bound and no draft pays; see that file),
reached through `OpenAICompatLLM`. The edges draft by prompt lookup (speculative.py's
`DRAFTER`). A layer-truncated model draft is not run: on this machine it would have to
be served by a second process on the same cores as the target (an edge's draft is on
the edge's own hardware), and speculative.py measured it at 0.34x the target alone even
unloaded.

Modes, each a pass in which every edge decodes its share of the prompts at once:
``target-alone`` (the edge sends the request, the cloud decodes it all; the baseline),
fixed windows, and adaptive window control (`AdaptiveWindow`, whose cost model is
queue-aware). Per mode: end-to-end tokens/s per edge and aggregate (all tokens over the
pass's makespan), speedup over the target alone in the same repeat, mean accepted and
made tokens per round, and the worker's load as the rounds recorded it (``queue_s``,
``shared_tokens``; the target alone's from its responses' load reports).

Tuning apart from scoring. Each prompt set is split once (``--seed``) into a tuning half
and a held-out half, by group: an agent run's steps share their prompts' beginnings, so
one run's steps all fall on one side. On the tuning half: every fixed window of
``--tune-windows`` and every adaptive variant of ``--adaptive-k-max`` x
``--adaptive-decay``; the fastest of each family (aggregate tokens/s) is the tuned
choice. On the held-out half: the target alone, ``--fixed`` windows, the tuned fixed
window, the untuned adaptive (the library's defaults) and the tuned adaptive; the
comparisons that decide are made there. The held-out pick of the best fixed window is
reported too, labelled as picked on the data it is scored on.

Passes start alike: each edge serves one tuning prompt untimed with the pass's decoder
(the worker's code paths are warm, and an adaptive edge starts from rounds it has seen,
as one in service would; never from held-out prompts), then one request taking all the
worker's slots overwrites them (no request finds its prompt cached by a warm-up or an
earlier pass). The prompts are then served from one shared queue in a fixed order, so
every edge stays busy until it empties. Times are end to end: a request's prefill is
part of it in every mode. Modes run in a rotated order in each of ``--repeats`` passes.

Prompt sets:
(a) ``repeat``: speculative.py's requests to repeat a HotPotQA paragraph word for word
    (answers quote their context: prompt lookup's best case).
(b) ``agent``: agent steps recorded from HotPotQA (ReAct) and ALFWorld runs of the
    packaged model (``relaygraph eval hotpotqa|alfworld``, in process, traces under
    runs/speculative_loaded/agents/), each step's exact messages and reply prefill,
    saved to ``--agent-steps`` (benchmarks/data/agent_steps.json) with how they were
    recorded; recorded again when the recording flags change. Replayed over the worker
    as an agent served by one decodes them: freely, stopping where the environment
    would write its observation (the recording decoded in process under the step
    grammar, which a remote target cannot apply).

Machine note: the edges run on the same cores as the worker (an edge device has its
own); each round's ``draft_s`` shows what the edge's side cost.

Usage:
    python benchmarks/speculative_loaded.py [--edges 4] [--prompts 24] [--max-tokens 64]
        [--fixed 2 4 8] [--tune-windows 1 2 3 4 6 8 12 16] [--adaptive-k-max 8 16 24]
        [--adaptive-decay 0.7] [--repeats 2] [--tune-repeats 1] [--slots 8]
        [--workloads repeat agent] [--rtt-ms 0] [--target-precision f16]
        [--agent-prompts N] [--agent-hotpotqa-items 8] [--agent-alfworld-games 4]
        [--agent-alfworld-steps 6] [--agent-steps benchmarks/data/agent_steps.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any, get_args

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from _common import RESULTS, machine, worker, write_json
from matplotlib.ticker import NullFormatter
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from speculative import DRAFTER, target_file
from speculative import prompts as repeat_prompts

from relaygraph.agents.react import REPLY_STOPS
from relaygraph.decoding import (
    AdaptiveWindow,
    FixedWindow,
    NetworkLink,
    SpeculativeLLM,
    WindowPolicy,
)
from relaygraph.eval.hotpotqa import load_hotpotqa
from relaygraph.fileio import save_figure
from relaygraph.graph.runs import read_items
from relaygraph.graph.trace import Trace
from relaygraph.llm import LocalLLM, OpenAICompatLLM
from relaygraph.llm.quantize import GgufPrecision
from relaygraph.llm.types import ChatPrompt, Completion, GenerationParams, Message

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "speculative_loaded"
AGENT_STEPS = Path(__file__).resolve().parent / "data" / "agent_steps.json"
BASELINE = "target-alone"
JITTER = 0.1  # of the RTT, per one-way trip (as speculative.py)
QUEUED_S = 0.005
"""A round whose verification waited longer than this counts as queued."""


# -- prompt sets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One request of a prompt set.

    Attributes:
        id: Stable id (recorded in the results' splits).
        group: Requests that share a source (an agent run's steps): a split keeps a
            group on one side.
        prompt: What the edge sends.
        params: How it is decoded (greedy).
    """

    id: str
    group: str
    prompt: ChatPrompt
    params: GenerationParams


@dataclass(frozen=True)
class Split:
    """A prompt set's two halves: the tuning half chooses, the held-out half scores."""

    tuning: list[Job]
    held_out: list[Job]

    def record(self, seed: int) -> dict[str, Any]:
        return {
            "seed": seed,
            "tuning": [j.id for j in self.tuning],
            "held_out": [j.id for j in self.held_out],
        }


def repeat_jobs(count: int, max_tokens: int) -> list[Job]:
    """speculative.py's repeat-the-paragraph requests, by HotPotQA question id."""
    examples = load_hotpotqa(sample="distractor-100").examples
    batch, _ = repeat_prompts(count)
    params = GenerationParams(max_tokens=max_tokens)
    return [
        Job(id=example.id, group=example.id, prompt=prompt, params=params)
        for example, prompt in zip(examples, batch, strict=False)
    ]


def agent_jobs(args: argparse.Namespace) -> tuple[list[Job], dict[str, Any]]:
    """The recorded agent steps (recorded first when missing or recorded otherwise), and
    how they were recorded."""
    wanted = recording_settings(args)
    saved = json.loads(args.agent_steps.read_text()) if args.agent_steps.exists() else None
    if saved is None or saved.get("recorded_with") != wanted:
        saved = record_agent_steps(args, wanted)
    jobs = []
    for step in saved["steps"]:
        # A reply ends where the environment writes its observation; a call that
        # decodes the action line (its prefill holds "Action:") ends with the line.
        stop = ("\n", *REPLY_STOPS) if "Action:" in step["prefill"] else REPLY_STOPS
        limit = min(step["max_tokens"] or args.max_tokens, args.max_tokens)
        prompt = ChatPrompt(
            messages=tuple(Message.model_validate(m) for m in step["messages"]),
            prefill=step["prefill"],
        )
        jobs.append(
            Job(
                id=step["id"],
                group=step["group"],
                prompt=prompt,
                params=GenerationParams(max_tokens=limit, stop=stop),
            )
        )
    return jobs, {k: v for k, v in saved.items() if k != "steps"} | {"path": str(args.agent_steps)}


def recording_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": args.target,
        "hotpotqa_items": args.agent_hotpotqa_items,
        "alfworld_games": args.agent_alfworld_games,
        "alfworld_steps": args.agent_alfworld_steps,
        "seed": 0,
    }


def record_agent_steps(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any]:
    """Run the default HotPotQA and ALFWorld agents in process (`relaygraph eval`, its
    seeded item draw) and keep every step's last model call: messages, prefill, cap."""
    runs = {
        "hotpotqa": (
            RUNS / "agents" / f"hotpotqa-{settings['hotpotqa_items']}",
            settings["hotpotqa_items"],
            [],
        ),
        "alfworld": (
            RUNS / "agents" / f"alfworld-{settings['alfworld_games']}x{settings['alfworld_steps']}",
            settings["alfworld_games"],
            ["--max-steps", str(settings["alfworld_steps"])],
        ),
    }
    commands, steps = [], []
    for suite, (directory, limit, extra) in runs.items():
        if not limit:
            continue
        full = ["eval", suite, "--limit", str(limit), *extra, "--model", settings["model"],
                "--out", str(directory.relative_to(ROOT))]  # fmt: skip
        if (directory / "run.json").exists():
            full.append("--resume")  # a killed recording goes on
        print("$ relaygraph", " ".join(full), flush=True)
        subprocess.run(
            [sys.executable, "-m", "relaygraph.cli", *full],
            check=True,
            cwd=ROOT,
            env=os.environ | {"HF_HUB_OFFLINE": "1"},
        )
        commands.append("relaygraph " + " ".join(full))
        items = read_items(directory)
        for item_id in sorted(items):
            record = items[item_id]
            if record.trace is None:
                continue
            trace = Trace.load(directory / record.trace)
            for step in trace.steps:
                if not step.prompt:  # a step that failed before its model call
                    continue
                steps.append(
                    {
                        "id": f"{suite}/{item_id}/step{step.step}",
                        "group": f"{suite}/{item_id}",
                        "suite": suite,
                        "messages": [
                            m.model_dump(mode="json", exclude_defaults=True) for m in step.prompt
                        ],
                        "prefill": step.prefill,
                        "max_tokens": step.max_tokens,
                    }
                )
    saved = {"recorded_with": settings, "commands": commands, "steps": steps}
    args.agent_steps.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.agent_steps, saved)
    return saved


def split(jobs: list[Job], per_half: int, seed: int) -> Split:
    """Two halves of ``per_half`` jobs each, groups never split: per suite (the id's
    first part) the groups are shuffled and dealt to the halves in turn, then each half
    takes its jobs round-robin over its groups (so no one long run fills it)."""
    rng = random.Random(seed)
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.group, []).append(job)
    suites: dict[str, list[str]] = {}
    for name in groups:
        suites.setdefault(name.split("/")[0], []).append(name)
    halves: list[list[str]] = [[], []]
    turn = 0  # dealt on across suites: an odd suite's extra group goes to the other half next
    for suite in sorted(suites):
        names = sorted(suites[suite])
        rng.shuffle(names)
        for name in names:
            halves[turn % 2].append(name)
            turn += 1
    picked = []
    for names in halves:
        rng.shuffle(names)
        queues = [list(groups[n]) for n in names]
        out: list[Job] = []
        while len(out) < per_half and any(queues):
            for queue in queues:
                if queue and len(out) < per_half:
                    out.append(queue.pop(0))
        if len(out) < per_half:
            raise SystemExit(
                f"only {len(out)} prompts for a half of {per_half} (groups {len(names)}); "
                "record more agent runs (--agent-hotpotqa-items, --agent-alfworld-games) "
                "or ask for fewer --agent-prompts"
            )
        picked.append(out)
    return Split(tuning=picked[0], held_out=picked[1])


# -- the worker and the edges ------------------------------------------------------------


Mode = WindowPolicy | None
"""A pass's decoder: speculative with this window policy, or None: the target alone."""


def mode_name(mode: Mode) -> str:
    return BASELINE if mode is None else mode.name


@dataclass
class Edge:
    """One edge: its own connection to the worker and its own link."""

    index: int
    target: OpenAICompatLLM
    tokenizer: LocalLLM
    link: NetworkLink

    def decoder(self, mode: Mode) -> OpenAICompatLLM | SpeculativeLLM:
        """A fresh decoder per pass: an adaptive edge's history is the pass's warm-up
        and its own requests, never an earlier pass over the same prompts."""
        if mode is None:
            return self.target
        return SpeculativeLLM(DRAFTER, self.target, mode, link=self.link, tokenizer=self.tokenizer)


@dataclass
class Fleet:
    """The edges and the worker they share (its engine's slot count)."""

    edges: list[Edge]
    slots: int


@dataclass
class Served:
    """One request served in a pass."""

    edge: int
    job: str
    began: float
    seconds: float
    tokens: list[int]
    prompt_tokens: int
    decoding: dict[str, Any] | None = None
    load: dict[str, Any] | None = None


@dataclass
class Pass:
    """One mode's pass over a half."""

    mode: str
    served: list[Served] = field(default_factory=list)
    load_average: float = field(default_factory=lambda: os.getloadavg()[0])
    """The machine's 1-minute load average as the pass began (other work on the cores
    slows the worker's threads; a pass run beside it reads high here)."""

    @property
    def makespan_s(self) -> float:
        return max(s.began + s.seconds for s in self.served) - min(s.began for s in self.served)

    @property
    def tokens(self) -> int:
        return sum(len(s.tokens) for s in self.served)

    def edge_tok_s(self, edges: int) -> list[float | None]:
        """Each edge's tokens over the seconds it spent on its requests (None: it served
        none, when a half has fewer prompts than there are edges)."""
        out: list[float | None] = []
        for e in range(edges):
            mine = [s for s in self.served if s.edge == e]
            busy = sum(s.seconds for s in mine)
            out.append(sum(len(s.tokens) for s in mine) / busy if busy else None)
        return out


def evict(target: OpenAICompatLLM, slots: int) -> None:
    """Overwrite every slot of the worker's engine: one request of ``slots`` samples
    takes them all, so no request finds its prompt cached by a warm-up or an earlier
    pass."""
    note = f"Cache reset {random.random()}: say ok."
    target.complete(note, GenerationParams(max_tokens=1, n=slots, temperature=1.0, seed=0))


def run_pass(
    fleet: Fleet,
    mode: Mode,
    jobs: list[Job],
    *,
    warmups: list[Job],
    progress: Progress,
    label: str,
) -> Pass:
    """Every edge serves one warm-up untimed; the worker's slots are overwritten (the
    warm-ups' prompts, a tuning pass's own, must not be found cached); then all edges
    take ``jobs`` from one queue at once until it is empty."""
    edges = fleet.edges
    queue: SimpleQueue[Job] = SimpleQueue()
    for job in jobs:
        queue.put(job)
    barrier = threading.Barrier(len(edges))
    done = Pass(mode_name(mode))
    lock = threading.Lock()
    task = progress.add_task(label, total=len(jobs))

    def serve(edge: Edge) -> None:
        decoder = edge.decoder(mode)
        try:
            warm = warmups[edge.index % len(warmups)]
            decoder.complete(warm.prompt, warm.params)
            barrier.wait()  # every warm-up done: nothing in flight
            if edge.index == 0:
                evict(edge.target, fleet.slots)
            barrier.wait()
        except BaseException:
            barrier.abort()
            raise
        while True:
            try:
                job = queue.get_nowait()
            except Empty:
                return
            began = time.perf_counter()
            out = decoder.complete(job.prompt, job.params)
            seconds = time.perf_counter() - began
            record = served_record(edge.index, job, began, seconds, out)
            with lock:
                done.served.append(record)
            progress.advance(task)

    threads = [_Thread(serve, edge) for edge in edges]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join_or_raise()
    progress.remove_task(task)
    return done


class _Thread(threading.Thread):
    """A thread whose exception reaches the caller of `join_or_raise`."""

    def __init__(self, target: Any, *args: Any) -> None:
        super().__init__(daemon=True)
        self._call, self._args = target, args
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._call(*self._args)
        except BaseException as exc:  # handed to the main thread
            self.error = exc

    def join_or_raise(self) -> None:
        self.join()
        if self.error is not None and not isinstance(self.error, threading.BrokenBarrierError):
            raise self.error


def served_record(edge: int, job: Job, began: float, seconds: float, out: Completion) -> Served:
    return Served(
        edge=edge,
        job=job.id,
        began=began,
        seconds=seconds,
        tokens=list(out.choices[0].token_ids),
        prompt_tokens=out.usage.prompt_tokens,
        decoding=out.decoding,
        load=out.load.model_dump() if out.load is not None else None,
    )


# -- figures -------------------------------------------------------------------------------


def summarize(passes: list[Pass], baseline: list[Pass], edges: int) -> dict[str, Any]:
    """A mode's figures over its repeats: medians of the per-pass throughputs, the
    speedup against the target alone's pass of the same repeat, and round statistics
    pooled over every request of every repeat."""
    aggregate = [p.tokens / p.makespan_s for p in passes]
    base = [b.tokens / b.makespan_s for b in baseline]
    per_edge = [_median([p.edge_tok_s(edges)[e] for p in passes]) for e in range(edges)]
    busy_edges = [x for x in per_edge if x is not None]
    latency = [s.seconds for p in passes for s in p.served]
    base_latency = [s.seconds for b in baseline for s in b.served]
    speedups = [a / b for a, b in zip(aggregate, base, strict=True)]
    out: dict[str, Any] = {
        "aggregate_tok_s": round(float(np.median(aggregate)), 3),
        "aggregate_tok_s_per_repeat": [round(a, 3) for a in aggregate],
        "per_edge_tok_s": [None if x is None else round(x, 3) for x in per_edge],
        "mean_edge_tok_s": round(float(np.mean(busy_edges)), 3),
        "speedup": round(float(np.median(speedups)), 4),
        "speedup_per_repeat": [round(s, 4) for s in speedups],
        "latency_speedup": round(float(np.mean(base_latency) / np.mean(latency)), 4),
        "makespan_s": [round(p.makespan_s, 3) for p in passes],
        "load_average_at_pass_start": [round(p.load_average, 2) for p in passes],
        "tokens": [p.tokens for p in passes],
        "latency_mean_s": round(float(np.mean(latency)), 4),
        "latency_p95_s": round(float(np.quantile(latency, 0.95)), 4),
        "prompt_tokens_mean": round(float(np.mean([s.prompt_tokens for s in passes[0].served])), 1),
        "same_as_target_alone": same_outputs(passes, baseline),
        "per_job_s": per_job_seconds(passes),
    }
    served = [s for p in passes for s in p.served]
    if all(s.decoding for s in served):
        out |= round_stats([s.decoding for s in served if s.decoding])
    else:
        loads = [s.load for s in served if s.load is not None]
        out["load"] = {
            "requests_reporting": len(loads),
            "queue_s_mean": round(float(np.mean([x["queue_s"] for x in loads])), 6)
            if loads
            else None,
            "passes_mean": round(float(np.mean([x["passes"] for x in loads])), 2)
            if loads
            else None,
            "shared_tokens_per_pass": round(
                sum(x["shared_tokens"] for x in loads) / max(sum(x["passes"] for x in loads), 1), 3
            )
            if loads
            else None,
        }
    return out


def _median(values: list[float | None]) -> float | None:
    """The median of the values that are not None (None if none is)."""
    present = [v for v in values if v is not None]
    return float(np.median(present)) if present else None


def round_stats(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Pooled per-round figures of speculative requests, the worker's load included."""
    rounds = [s["per_round"] for s in stats]

    def flat(key: str) -> np.ndarray:
        return np.array([x for r in rounds for x in r[key]], dtype=float)

    drafted, accepted, decoded = flat("drafted"), flat("accepted"), flat("decoded")
    queue_s, shared = flat("queue_s"), flat("shared_tokens")
    verifying = drafted > 0
    made = np.where(decoded > 0, decoded, accepted + 1)
    return {
        "rounds": int(drafted.size),
        "mean_window": round(float(flat("window").mean()), 3),
        "mean_accepted_per_round": round(float(accepted.mean()), 3),
        "mean_accepted_per_verifying_round": round(float(accepted[verifying].mean()), 3)
        if verifying.any()
        else None,
        "mean_tokens_per_round": round(float(made.mean()), 3),
        "acceptance_rate": round(float(accepted.sum() / drafted.sum()), 4)
        if drafted.sum()
        else None,
        "share_of_rounds_decoded_alone": round(float((decoded > 0).mean()), 4),
        "draft_s_per_round": round(float(flat("draft_s").mean()), 6),
        "verify_s_per_round": round(float(flat("verify_s").mean()), 6),
        "queue_s": {
            "mean": round(float(queue_s.mean()), 6),
            "p95": round(float(np.quantile(queue_s, 0.95)), 6),
            # the engine reports a small wait on every request (its admission at the
            # next step); over 5 ms a verification waited behind others' passes
            "share_of_rounds_over_5ms": round(float((queue_s > QUEUED_S).mean()), 4),
        },
        "shared_tokens": {
            "mean": round(float(shared.mean()), 3),
            "mean_per_own_token": round(float((shared / np.maximum(drafted + 1, 1)).mean()), 3),
            "share_of_rounds_shared": round(float((shared > 0).mean()), 4),
        },
    }


def same_outputs(passes: list[Pass], baseline: list[Pass]) -> str:
    """How many requests gave the target alone's tokens (same repeat), of how many: a
    batched pass need not be bit-identical to another batch's."""
    same = total = 0
    for p, b in zip(passes, baseline, strict=True):
        reference = {s.job: s.tokens for s in b.served}
        for s in p.served:
            total += 1
            same += s.tokens == reference[s.job]
    return f"{same}/{total}"


def per_job_seconds(passes: list[Pass]) -> dict[str, float]:
    """Each request's seconds, the median over repeats."""
    times: dict[str, list[float]] = {}
    for p in passes:
        for s in p.served:
            times.setdefault(s.job, []).append(s.seconds)
    return {job: round(float(np.median(t)), 4) for job, t in sorted(times.items())}


def against(a: dict[str, Any], b: dict[str, Any], resamples: int = 10_000) -> dict[str, Any]:
    """Mode ``a`` against ``b``: ratio of aggregate tokens/s (above 1: ``a`` is faster)
    and of summed request seconds, with a 95% paired bootstrap interval over the prompts
    (requests of a loaded pass are not independent; read it as a guide)."""
    jobs = sorted(a["per_job_s"])
    x = np.array([a["per_job_s"][j] for j in jobs])
    y = np.array([b["per_job_s"][j] for j in jobs])
    picks = np.random.default_rng(0).integers(0, len(jobs), (resamples, len(jobs)))
    ratios = y[picks].sum(axis=1) / x[picks].sum(axis=1)
    low, high = np.quantile(ratios, [0.025, 0.975])
    return {
        "throughput_ratio": round(a["aggregate_tok_s"] / b["aggregate_tok_s"], 4),
        "seconds_ratio": round(float(y.sum() / x.sum()), 4),
        "seconds_ratio_ci95": [round(float(low), 4), round(float(high), 4)],
    }


# -- the run -------------------------------------------------------------------------------


def adaptive_grid(args: argparse.Namespace) -> list[AdaptiveWindow]:
    return [
        AdaptiveWindow(k_max=k, decay=d, name=f"adaptive-k{k}-d{d:g}")
        for k in args.adaptive_k_max
        for d in args.adaptive_decay
    ]


def measure(
    fleet: Fleet,
    modes: list[Mode],
    jobs: list[Job],
    *,
    warmups: list[Job],
    repeats: int,
    progress: Progress,
    label: str,
) -> dict[str, Any]:
    """Every mode (the target alone first in the list) over ``jobs``, in a rotated
    order per repeat; each mode's `summarize`d figures."""
    passes: dict[str, list[Pass]] = {mode_name(m): [] for m in modes}
    overall = progress.add_task(f"{label}: passes", total=repeats * len(modes))
    for rep in range(repeats):
        shift = rep % len(modes)
        for mode in modes[shift:] + modes[:shift]:
            name = mode_name(mode)
            passes[name].append(
                run_pass(
                    fleet,
                    mode,
                    jobs,
                    warmups=warmups,
                    progress=progress,
                    label=f"{label} r{rep + 1} {name}",
                )
            )
            progress.advance(overall)
    progress.remove_task(overall)
    base = passes[BASELINE]
    return {name: summarize(p, base, len(fleet.edges)) for name, p in passes.items()}


def workload(
    name: str,
    halves: Split,
    fleet: Fleet,
    args: argparse.Namespace,
    progress: Progress,
) -> dict[str, Any]:
    """Tune on one half, score on the other (module docstring)."""
    fixed = {k: FixedWindow(k) for k in sorted({*args.tune_windows, *args.fixed})}
    grid = adaptive_grid(args)
    tuning = measure(
        fleet,
        [None, *(fixed[k] for k in args.tune_windows), *grid],
        halves.tuning,
        warmups=halves.tuning,
        repeats=args.tune_repeats,
        progress=progress,
        label=f"{name} tuning",
    )
    best_fixed = max(args.tune_windows, key=lambda k: tuning[f"fixed-{k}"]["aggregate_tok_s"])
    best_adaptive = max(grid, key=lambda p: tuning[p.name]["aggregate_tok_s"])
    untuned = AdaptiveWindow()  # the library's defaults
    held_modes: list[Mode] = [None, *(fixed[k] for k in args.fixed)]
    if best_fixed not in args.fixed:
        held_modes.append(fixed[best_fixed])
    held_modes.append(untuned)
    same_config = (best_adaptive.k_max, best_adaptive.decay) == (untuned.k_max, untuned.decay)
    if not same_config:
        held_modes.append(best_adaptive)
    held = measure(
        fleet,
        held_modes,
        halves.held_out,
        warmups=halves.tuning,
        repeats=args.repeats,
        progress=progress,
        label=f"{name} held-out",
    )
    adaptive_name = untuned.name if same_config else best_adaptive.name
    tuned = {
        "fixed": f"fixed-{best_fixed}",
        "adaptive": adaptive_name,
        "adaptive_config": {"k_max": best_adaptive.k_max, "decay": best_adaptive.decay},
        "adaptive_tuned_is_library_default": same_config,
    }
    oracle = max((m for m in held if m.startswith("fixed-")),
                 key=lambda n: held[n]["aggregate_tok_s"], default=None)  # fmt: skip
    comparisons = {
        "tuned_adaptive_vs_tuned_fixed": against(held[adaptive_name], held[tuned["fixed"]]),
        "untuned_adaptive_vs_tuned_fixed": against(held[untuned.name], held[tuned["fixed"]]),
        "tuned_adaptive_vs_target_alone": against(held[adaptive_name], held[BASELINE]),
        "tuned_fixed_vs_target_alone": against(held[tuned["fixed"]], held[BASELINE]),
        "best_fixed_picked_on_held_out": oracle,  # picked on the data it is scored on
    }
    return {
        "prompts_per_half": len(halves.held_out),
        "split": halves.record(args.seed),
        "tuning": {"modes": tuning, "repeats": args.tune_repeats},
        "tuned": tuned,
        "held_out": {"modes": held, "repeats": args.repeats, "comparisons": comparisons},
    }


def plot(result: dict[str, Any], path: Path) -> None:
    names = list(result["workloads"])
    fig, axes = plt.subplots(2, len(names), figsize=(7 * len(names), 9), squeeze=False)
    for col, name in enumerate(names):
        w = result["workloads"][name]
        held = w["held_out"]["modes"]
        ax = axes[0][col]
        labels = [m for m in held if m != BASELINE]
        x = np.arange(len(labels))
        ax.bar(x, [held[m]["speedup"] for m in labels], color="tab:blue", alpha=0.7,
               label="aggregate tokens/s")  # fmt: skip
        base_edges = held[BASELINE]["per_edge_tok_s"]
        for i, m in enumerate(labels):
            pairs = zip(held[m]["per_edge_tok_s"], base_edges, strict=True)
            ratios = [e / b for e, b in pairs if e and b]  # an idle edge has no rate
            ax.scatter([i] * len(ratios), ratios, color="k", s=12, zorder=3,
                       label="per edge" if i == 0 else None)  # fmt: skip
        ax.axhline(1.0, color="k", lw=0.8)
        tags = {w["tuned"]["fixed"]: " (tuned)", w["tuned"]["adaptive"]: " (tuned)"}
        ax.set_xticks(x, [m + tags.get(m, "") for m in labels], rotation=30, ha="right")
        ax.set(ylabel="speedup over the target alone",
               title=f"{name}: held-out half, {result['settings']['edges']} edges")  # fmt: skip
        ax.legend(fontsize=8)
        ax = axes[1][col]
        tuning = w["tuning"]["modes"]
        ks = [int(m.removeprefix("fixed-")) for m in tuning if m.startswith("fixed-")]
        ax.plot(ks, [tuning[f"fixed-{k}"]["speedup"] for k in ks], "o-", label="fixed, tuning half")
        kh = [int(m.removeprefix("fixed-")) for m in held if m.startswith("fixed-")]
        ax.plot(kh, [held[f"fixed-{k}"]["speedup"] for k in kh], "s--", label="fixed, held-out")
        # one line where the tuned adaptive is the untuned one
        lines = {"adaptive": (":", "untuned"), w["tuned"]["adaptive"]: ("-", "tuned")}
        for m, (style, what) in lines.items():
            if m in held:
                ax.axhline(held[m]["speedup"], ls=style, color="tab:red",
                           label=f"{m} ({what}), held-out")  # fmt: skip
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set(xscale="log", xlabel="fixed window k", ylabel="speedup over the target alone",
               title=f"{name}: tuned on one half, scored on the other")  # fmt: skip
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2-135m", help="a packaged model")
    parser.add_argument(
        "--target-precision",
        choices=["packaged", *get_args(GgufPrecision)],
        default="f16",
        help="serve the packaged file, or a copy at this precision (as speculative.py)",
    )
    parser.add_argument("--edges", type=int, default=4, help="edges decoding at once")
    parser.add_argument("--slots", type=int, default=8, help="the worker's engine slots")
    parser.add_argument(
        "--prompts", type=int, default=24, help="per prompt set, both halves together"
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--fixed", type=int, nargs="+", default=[2, 4, 8],
                        help="fixed windows scored on the held-out half")  # fmt: skip
    parser.add_argument("--tune-windows", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8, 12, 16],
                        help="fixed windows the tuning half chooses among")  # fmt: skip
    parser.add_argument("--adaptive-k-max", type=int, nargs="+", default=[8, 16, 24])
    parser.add_argument("--adaptive-decay", type=float, nargs="+", default=[0.7])
    parser.add_argument("--repeats", type=int, default=2, help="passes per mode, held-out half")
    parser.add_argument("--tune-repeats", type=int, default=1, help="passes per mode, tuning")
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="injected edge-cloud RTT")
    parser.add_argument("--seed", type=int, default=0, help="of the tuning/held-out split")
    parser.add_argument("--workloads", nargs="+", choices=["repeat", "agent"],
                        default=["repeat", "agent"])  # fmt: skip
    parser.add_argument(
        "--agent-prompts", type=int, help="agent steps, both halves (default: --prompts)"
    )
    parser.add_argument("--agent-steps", type=Path, default=AGENT_STEPS)
    parser.add_argument("--agent-hotpotqa-items", type=int, default=8)
    parser.add_argument("--agent-alfworld-games", type=int, default=4)
    parser.add_argument("--agent-alfworld-steps", type=int, default=6)
    parser.add_argument("--out", type=Path, default=RESULTS / "speculative_loaded.json")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot of --out")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads(args.out.read_text()), args.out.with_suffix(".png"))
        return
    args.agent_prompts = args.agent_prompts or args.prompts
    if min(args.prompts, args.agent_prompts) < 2 or (args.prompts | args.agent_prompts) % 2:
        raise SystemExit("--prompts and --agent-prompts must be even and at least 2 (two halves)")
    started = time.perf_counter()
    # Both prompt sets are split before the worker starts: too few recorded agent runs
    # for the halves fails here, not after the first set's passes.
    sets: dict[str, tuple[Split, dict[str, Any]]] = {}
    if "repeat" in args.workloads:
        sets["repeat"] = (
            split(repeat_jobs(args.prompts, args.max_tokens), args.prompts // 2, args.seed),
            {"source": "benchmarks/speculative.py prompts(): repeat a HotPotQA paragraph"},
        )
    if "agent" in args.workloads:
        jobs, source = agent_jobs(args)
        sets["agent"] = (split(jobs, args.agent_prompts // 2, args.seed), source)
    model = target_file(args)
    local = LocalLLM.load(model)  # the edges' copy of the tokenizer
    result: dict[str, Any] = {
        "benchmark": "speculative_loaded",
        "machine": machine(),
        "target": model,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        | {
            "jitter_of_rtt": JITTER,
            "drafter": DRAFTER.name,
            "timing": "end to end, prefill included; slots overwritten before every pass",
        },
        "workloads": {},
    }
    rtt = args.rtt_ms / 1000
    with worker(model, slots=args.slots) as url:
        edges = [
            Edge(
                index=i,
                target=OpenAICompatLLM(url, model, timeout_s=600, max_retries=0),
                tokenizer=local,
                link=NetworkLink(rtt_s=rtt, jitter_s=JITTER * rtt / 2, seed=i),
            )
            for i in range(args.edges)
        ]
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())  # fmt: skip
        with Progress(*columns) as progress:
            for name, (halves, source) in sets.items():
                result["workloads"][name] = {"source": source} | workload(
                    name, halves, Fleet(edges, args.slots), args, progress
                )
                write_json(args.out, result)  # a finished prompt set is kept
        for edge in edges:
            edge.target.close()
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["load_average_at_end"] = os.getloadavg()
    write_json(args.out, result)
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
