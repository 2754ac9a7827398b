"""Distributed speculative decoding: a real edge-cloud run on loopback, the simulator's
prediction of it, and simulated fleets.

The pair. The packaged models have different tokenizers, so the draft must come from the
target itself. A layer-truncated self-draft is measured first (greedy agreement with
the target and cost, per kept depth): without retraining it agrees too rarely to pay.
The run therefore drafts by prompt lookup (n-gram copies from the context; free, and
exact in the target's vocabulary) on answers that quote their context (the target
repeats a HotPotQA paragraph), with a truncated self-draft served by a second worker
process as the model-draft comparison at RTT 0.

The target. The cloud serves the target at 16 bits (``--target-precision f16``: the
packaged 4-bit file expanded by llama.cpp's quantizer; same answers). On this CPU the
4-bit kernels are compute-bound at any batch, so verifying k tokens costs about k decode
steps and no draft can pay; a 16-bit decode step is bound by reading the weights, as on
a GPU, and one pass over 9 tokens costs about three steps. The in-process section
measures both files.

1. real: the target runs in a `relaygraph worker` process on 127.0.0.1; the edge (this
   process, with its own copy of the tokenizer) drafts and calls it over HTTP through a
   `NetworkLink` adding RTT 0/10/50 ms (10% jitter). Cloud-only decoding (the edge sends
   the request, the cloud decodes it all) is the baseline on the same link. For every
   RTT: fixed windows and adaptive window control (AWC); speedup = cloud-only seconds /
   speculative seconds over the same prompts (each mode timed in ``--repeats`` passes,
   the median per prompt); whether the outputs are the target's own; AWC against the
   best fixed window with a paired bootstrap interval over the prompts.
2. profile: fitted from the real runs (acceptance, draft, verification line, prefill,
   decode step split by a batched step measured in process) and saved as JSON.
3. validation: the simulator, fed that profile, predicts each real configuration's
   speedup (E=1, C=1, the measured answer lengths); error per configuration. Replay:
   every window policy run exactly and offline on the target's own greedy answers, each
   round priced by the profile (the policies' choices without timing noise).
4. sweeps (simulated): fleets of 1-64 edges on one cloud, RTT 0/10/50 ms, fixed windows
   and AWC, with the measured CPU profile and an assumed GPU-cloud profile (verifying k
   tokens costs about one decode step; labelled as an assumption in the JSON).
5. in process (``--in-process-only`` runs just this and adds it to the JSON): the target
   in this process, no HTTP and no link, so verification costs only the target's pass;
   speculative vs the target's own decoding of the same prompts, with the prompt-lookup
   draft and, where one was trained (benchmarks/distillation.py), the distilled student;
   and the exact replay of prompt lookup, its rounds priced by a line fitted to the
   run's own (`Prices.local`).
6. vLLM (``--vllm-url URL`` with ``--vllm-only``; added to the JSON): a running vLLM
   server serving the target (``relaygraph export`` writes it as a folder vLLM loads) as
   the cloud, RTT 0, prompt lookup, over the first ``--vllm-prompts`` prompts: cloud-only
   against fixed windows and AWC; verification through vLLM's ``prompt_logprobs``.

Usage:
    python benchmarks/speculative.py [--target smollm2-135m] [--target-precision f16]
        [--prompts 16] [--max-tokens 64]
        [--rtts-ms 0 10 50] [--windows 1 2 3 4 5 6 7 8 12 16 24] [--requests 20] [--repeats 3]
        [--in-process-only] [--student runs/distillation/student-structured-seed0/student.gguf]
        [--vllm-only --vllm-url http://127.0.0.1:8001/v1 --vllm-prompts 3]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, get_args

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from _common import RESULTS, machine, worker, write_json
from rich.progress import track

from relaygraph.decoding import (
    AdaptiveWindow,
    FixedWindow,
    NetworkLink,
    PromptLookupDrafter,
    SpeculativeLLM,
    WindowPolicy,
)
from relaygraph.decoding.drafts import resumes_at
from relaygraph.decoding.sim import LatencyProfile, SimConfig, fit_profile, simulate
from relaygraph.decoding.window import EARLIER_ROUNDS, CostPrior, Round
from relaygraph.eval.hotpotqa import load_hotpotqa
from relaygraph.fileio import save_figure
from relaygraph.llm import LocalLLM, OpenAICompatLLM
from relaygraph.llm.catalog import packaged_model
from relaygraph.llm.protocol import LLM
from relaygraph.llm.quantize import GgufPrecision, requantize
from relaygraph.llm.truncate import truncate_layers
from relaygraph.llm.types import ChatPrompt, GenerationParams, Message

RUNS = Path(__file__).resolve().parent.parent / "runs" / "speculative"
JITTER = 0.1  # of the RTT, per one-way trip
DRAFTER = PromptLookupDrafter(max_ngram=4, min_ngram=3)
"""Matching 3-grams at least: a 1- or 2-gram recurs almost everywhere ("of the") and its
continuation is mostly wrong, which costs a verification of the whole window."""


def target_file(args: argparse.Namespace) -> str:
    """The target the cloud serves: the packaged model, or a copy at ``--target-precision``
    (made once under runs/speculative/)."""
    if args.target_precision == "packaged":
        return str(args.target)
    path = RUNS / f"{args.target}-{args.target_precision}.gguf"
    if not path.exists():
        requantize(packaged_model(args.target).locate(), path, args.target_precision)
    return str(path)


def prompts(count: int) -> tuple[list[ChatPrompt], ChatPrompt]:
    """``count`` requests whose answers quote their context (repeat a HotPotQA paragraph),
    and one more that every decoder serves untimed first (`measure`)."""
    examples = load_hotpotqa(sample="distractor-100").examples
    out = []
    for example in examples[: count + 1]:
        text = " ".join(example.context[0].sentences)
        ask = f"Repeat the following text exactly, word for word:\n\n{text}"
        out.append(ChatPrompt(messages=(Message(role="user", content=ask),)))
    return out[:count], out[count]


def truncation_study(target: LocalLLM, name: str, depths: list[int]) -> list[dict[str, Any]]:
    """Greedy agreement with the target and decode cost of self-drafts keeping the first
    ``depth`` blocks (teacher-forced over a paragraph)."""
    text = " ".join(load_hotpotqa(sample="distractor-100").examples[0].context[1].sentences)
    ids = target.tokenize(text)
    reference = target.logits(ids[:1], ids[1:]).argmax(axis=1)
    params = GenerationParams(max_tokens=48)

    def per_token(model: LocalLLM) -> float:
        model.complete("Tell me about Paris.", params)
        began = time.perf_counter()
        out = model.complete("Tell me about Paris.", params)
        return (time.perf_counter() - began) / len(out.choices[0].token_ids)

    target_s = per_token(target)
    rows = []
    source = packaged_model(name).locate()
    for depth in depths:
        path = RUNS / f"{name}-{depth}l.gguf"
        if not path.exists():
            truncate_layers(source, path, keep=list(range(depth)))
        draft = LocalLLM(path, name=path.stem)
        agreement = float(np.mean(draft.logits(ids[:1], ids[1:]).argmax(axis=1) == reference))
        rows.append(
            {
                "kept_blocks": depth,
                "greedy_agreement": round(agreement, 3),
                "cost_per_token_vs_target": round(per_token(draft) / target_s, 3),
            }
        )
    return rows


def warm(target: LLM, prompt: ChatPrompt) -> None:
    """Have the worker read the prompt before a timed request (untimed), so that every
    mode is timed on decoding alone, whatever the worker's prefix cache holds."""
    target.complete(prompt, GenerationParams(max_tokens=1))


def measure(
    target: LLM,
    specs: dict[str, SpeculativeLLM],
    workload: tuple[list[ChatPrompt], ChatPrompt],
    params: GenerationParams,
    *,
    link: NetworkLink,
    tokenizer: LocalLLM,
    label: str,
    repeats: int = 1,
) -> dict[str, Any]:
    """Per prompt, the cloud-only request and each speculative variant back to back (each
    after a warm-up, the variants in a shuffled order), so that drift in the machine's
    speed hits every mode alike; ``repeats`` passes over the prompts, and each mode's time
    on a prompt is the median of its passes (one slow pass does not decide a comparison
    that is a few percent wide).

    Cloud-only: the edge sends the request, the cloud decodes it all, one trip. Every
    speculative variant first serves the spare prompt of ``workload`` untimed: an edge in
    service has served requests before, and AWC starts a request from what the edge's
    earlier ones showed; the first timed request should not time its cold start. The
    outputs and rounds reported are the first pass's; `summary` counts an output as the
    target's own only if it was so in every pass.
    """
    batch, spare = workload
    for spec in specs.values():
        spec.complete(spare, params)
    rng, order_rng = random.Random(0), random.Random(1)
    base: dict[str, Any] = {"cloud_s": [], "lengths": []}
    cloud_spent: list[list[float]] = [[] for _ in batch]
    cloud_times: list[list[float]] = [[] for _ in batch]
    times: dict[str, list[list[float]]] = {name: [[] for _ in batch] for name in specs}
    outs: dict[str, list[Any]] = {name: [] for name in specs}
    same: dict[str, list[bool]] = {name: [True] * len(batch) for name in specs}
    reference: list[list[int]] = []
    for rep in range(repeats):
        passing = f"{label} (pass {rep + 1}/{repeats})" if repeats > 1 else label
        for i, prompt in enumerate(track(batch, description=passing)):
            warm(target, prompt)
            delay = link.delay(tokenizer.count_tokens(prompt), 1, rng)
            time.sleep(delay)
            began = time.perf_counter()
            out = target.complete(prompt, params)
            cloud_spent[i].append(time.perf_counter() - began)
            cloud_times[i].append(cloud_spent[i][-1] + delay)
            if rep == 0:
                base["lengths"].append(len(out.choices[0].token_ids))
                reference.append(out.choices[0].token_ids)
            names = list(specs)
            order_rng.shuffle(names)
            for name in names:
                warm(target, prompt)
                began = time.perf_counter()
                done = specs[name].complete(prompt, params)
                times[name][i].append(time.perf_counter() - began)
                same[name][i] &= done.choices[0].token_ids == reference[i]
                if rep == 0:
                    outs[name].append(done)
    base["cloud_s"] = [float(np.median(t)) for t in cloud_spent]  # the cloud's part
    base["seconds"] = round(sum(float(np.median(t)) for t in cloud_times), 4)
    runs = {}
    for name in specs:
        per_prompt = [float(np.median(t)) for t in times[name]]
        runs[name] = summary(outs[name], per_prompt, same[name])
        runs[name]["speedup"] = round(base["seconds"] / runs[name]["seconds"], 4)
    return {
        "repeats": repeats,
        "cloud_only": base,
        "speculative": runs,
        **comparisons(runs),
    }


def comparisons(runs: dict[str, Any]) -> dict[str, Any]:
    """AWC against the best of all the fixed windows run, and of windows 1-8 (the
    range the issue names; AWC chooses up to the largest run)."""
    return {
        "adaptive_vs_best_fixed": against_best_fixed(runs),
        "adaptive_vs_best_fixed_up_to_8": against_best_fixed(runs, up_to=8),
    }


def against_best_fixed(
    runs: dict[str, Any], up_to: int | None = None, resamples: int = 10_000
) -> dict[str, Any] | None:
    """AWC against the fastest fixed window of the same run (of windows up to ``up_to``,
    if given): the best fixed window's seconds over AWC's (above 1: AWC is faster) and a
    95% bootstrap interval over the prompts (paired: each resample sums both modes over
    the same prompts). The best window is picked on these same timings, which favours it
    a little (the fastest of several noisy totals)."""
    fixed = {
        n: r
        for n, r in runs.items()
        if n.startswith("fixed-") and (up_to is None or int(n.removeprefix("fixed-")) <= up_to)
    }
    if "adaptive" not in runs or not fixed:
        return None
    best = min(fixed, key=lambda n: fixed[n]["seconds"])
    adaptive = np.array(runs["adaptive"]["per_prompt_s"])
    best_s = np.array(fixed[best]["per_prompt_s"])
    picks = np.random.default_rng(0).integers(0, len(adaptive), (resamples, len(adaptive)))
    ratios = best_s[picks].sum(axis=1) / adaptive[picks].sum(axis=1)
    low, high = np.quantile(ratios, [0.025, 0.975])
    return {
        "best_fixed": best,
        "ratio": round(float(best_s.sum() / adaptive.sum()), 4),
        "ci95": [round(float(low), 4), round(float(high), 4)],
    }


def _drop_rounds(runs: dict[str, Any]) -> dict[str, Any]:
    """``runs`` (from `measure`) without the per-round records, which only the profile
    fit reads; they would swell the results JSON."""
    for run in runs["speculative"].values():
        del run["per_round"]
    return runs


def summary(outs: list[Any], per_prompt_s: list[float], same: list[bool]) -> dict[str, Any]:
    """A mode's figures: its (median) seconds per prompt and their sum, whether each output
    was the target's own in every pass, and the first pass's decoding statistics."""
    stats = [o.decoding or {} for o in outs]
    drafted = sum(s["drafted"] for s in stats)
    return {
        "seconds": round(sum(per_prompt_s), 4),
        "per_prompt_s": [round(t, 4) for t in per_prompt_s],
        "tokens": sum(len(o.choices[0].token_ids) for o in outs),
        "same_as_cloud_only": sum(same),
        "acceptance_rate": round(sum(s["accepted"] for s in stats) / drafted, 4)
        if drafted
        else None,
        "rounds": sum(s["rounds"] for s in stats),
        "mean_window": round(float(np.mean([w for s in stats for w in s["windows"]])), 3),
        "draft_s": round(sum(s["draft_s"] for s in stats), 4),
        "verify_s": round(sum(s["verify_s"] for s in stats), 4),
        "network_s": round(sum(s["network_s"] for s in stats), 4),
        "per_round": [s["per_round"] for s in stats],
    }


def policies(windows: list[int], profile: LatencyProfile | None = None) -> list[WindowPolicy]:
    """Fixed windows and AWC (which starts from the deployment's profile when one is known)."""
    prior = profile.window_prior() if profile is not None else CostPrior()
    return [*(FixedWindow(k) for k in windows), AdaptiveWindow(k_max=max(windows), prior=prior)]


def batch_step_ratio(local: LocalLLM, size: int = 4) -> tuple[float, int]:
    """How much longer one decode step of ``size`` sequences takes than of one (in
    process): seconds per step of each, from answers to a prompt that runs long."""
    prompt = "Count from one to one hundred in words: one, two, three,"
    params = GenerationParams(max_tokens=48)

    def per_step(batch: int) -> float:
        began = time.perf_counter()
        outs = local.complete_batch([prompt] * batch, params)
        return (time.perf_counter() - began) / max(len(o.choices[0].token_ids) for o in outs)

    per_step(1)
    return per_step(size) / per_step(1), size


def validate(
    profile: LatencyProfile, real: dict[str, Any], windows: list[int]
) -> list[dict[str, Any]]:
    rows = []
    for rtt_key, runs in real.items():
        rtt_ms = int(rtt_key)
        rtt_profile = profile.model_copy(
            update={"rtt_s": rtt_ms / 1000, "jitter_s": JITTER * rtt_ms / 2000}
        )
        lengths = runs["cloud_only"]["lengths"]
        config = SimConfig(requests_per_edge=len(lengths), output_tokens=lengths)
        base = simulate(rtt_profile, config, "cloud-only")
        for policy in policies(windows):
            measured = runs["speculative"][policy.name]["speedup"]
            sim = simulate(rtt_profile, config, "speculative", policy)
            predicted = base.makespan_s / sim.makespan_s
            rows.append(
                {
                    "rtt_ms": rtt_ms,
                    "window": policy.name,
                    "measured_speedup": measured,
                    "predicted_speedup": round(predicted, 4),
                    "error": round(abs(predicted - measured) / measured, 4),
                }
            )
    return rows


def sweeps(
    profiles: dict[str, LatencyProfile], windows: list[int], requests: int
) -> list[dict[str, Any]]:
    rows = []
    for label, profile in profiles.items():
        for rtt_ms in (0, 10, 50):
            p = profile.model_copy(
                update={"rtt_s": rtt_ms / 1000, "jitter_s": JITTER * rtt_ms / 2000}
            )
            for edges in (1, 4, 16, 64):
                config = SimConfig(
                    edges=edges, requests_per_edge=requests, output_tokens=[64], max_batch=64
                )
                base = simulate(p, config, "cloud-only")
                for policy in policies(windows, p):
                    r = simulate(p, config, "speculative", policy)
                    rows.append(
                        {
                            "profile": label,
                            "rtt_ms": rtt_ms,
                            "edges": edges,
                            "window": policy.name,
                            "throughput_tok_s": round(r.throughput_tok_s, 2),
                            "cloud_only_throughput_tok_s": round(base.throughput_tok_s, 2),
                            "latency_p50_s": round(r.latency_p50_s, 4),
                            "latency_p95_s": round(r.latency_p95_s, 4),
                            "cloud_only_latency_p50_s": round(base.latency_p50_s, 4),
                            "speedup": round(base.latency_p50_s / r.latency_p50_s, 4),
                            "throughput_ratio": round(
                                r.throughput_tok_s / base.throughput_tok_s, 4
                            ),
                            "cloud_utilization": round(r.cloud_utilization, 4),
                        }
                    )
    return rows


def plot(result: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    ax = axes[0]
    for rtt_ms, runs in result["real"].items():
        names = list(runs["speculative"])
        ax.plot(
            names,
            [runs["speculative"][n]["speedup"] for n in names],
            "o-",
            label=f"RTT {rtt_ms} ms",
        )
    ax.axhline(1.0, color="k", lw=0.8)
    served = Path(result["target"]).name
    ax.set(ylabel="speedup over cloud-only", title=f"real loopback run ({served})")
    ax.tick_params(axis="x", rotation=30)
    ax.legend()
    ax = axes[1]
    rows = result["validation"]
    measured = [r["measured_speedup"] for r in rows]
    ax.scatter(measured, [r["predicted_speedup"] for r in rows])
    lim = [min(measured) * 0.8, max(measured) * 1.2]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.fill_between(lim, [x * 0.85 for x in lim], [x * 1.15 for x in lim], alpha=0.15, label="±15%")
    ax.set(xlabel="measured speedup", ylabel="simulated speedup", title="simulator vs real run")
    ax.legend()
    ax = axes[2]
    for label in {r["profile"] for r in result["sweeps"]}:
        for policy in ("fixed-1", "fixed-4", "adaptive"):
            pts = [
                r
                for r in result["sweeps"]
                if r["profile"] == label and r["rtt_ms"] == 10 and r["window"] == policy
            ]
            ax.plot(
                [r["edges"] for r in pts],
                [r["throughput_ratio"] for r in pts],
                "o-",
                label=f"{label}, {policy}",
            )
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(xscale="log", xlabel="edges per cloud server", ylabel="throughput / cloud-only",
           title="simulated fleets, RTT 10 ms")  # fmt: skip
    ax.legend(fontsize=7)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2-135m", help="a packaged model")
    parser.add_argument(
        "--target-precision",
        choices=["packaged", *get_args(GgufPrecision)],
        default="f16",
        help="serve the packaged file, or a copy at this precision",
    )
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rtts-ms", type=int, nargs="+", default=[0, 10, 50])
    parser.add_argument(
        "--windows",
        type=int,
        nargs="+",
        default=[*range(1, 9), 12, 16, 24],
        help="fixed windows; AWC chooses among 1 to the largest",
    )
    parser.add_argument("--depths", type=int, nargs="+", default=[12, 20, 24, 28])
    parser.add_argument("--requests", type=int, default=20, help="per edge, in the sweeps")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed passes over the prompts, real and in-process runs (median per prompt)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "speculative.json")
    parser.add_argument(
        "--simulate-only",
        action="store_true",
        help="reuse the real runs (in --out and runs/speculative/); refit the profile, redo "
        "validation and sweeps",
    )
    parser.add_argument(
        "--in-process-only",
        action="store_true",
        help="measure the in-process section only and add it to --out",
    )
    parser.add_argument(
        "--student",
        type=Path,
        default=Path("runs/distillation/student-structured-seed0/student.gguf"),
        help="a distilled student of the target to draft with in process, if it exists",
    )
    parser.add_argument("--vllm-url", help="a vLLM server serving the target as --target")
    parser.add_argument("--vllm-prompts", type=int, default=3)
    parser.add_argument(
        "--vllm-only",
        action="store_true",
        help="measure the vLLM section only (needs --vllm-url) and add it to --out",
    )
    args = parser.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    if args.vllm_only:
        if not args.vllm_url:
            raise SystemExit("--vllm-only needs --vllm-url")
        result = json.loads(args.out.read_text())
        result["vllm_rtt0"] = vllm_run(args)
        write_json(args.out, result)
        print(f"wrote {args.out}")
        return
    if args.in_process_only:
        result = json.loads(args.out.read_text())
        result["in_process"] = in_process(args)
        write_json(args.out, result)
        print(f"wrote {args.out}")
        return
    if args.simulate_only:
        result = json.loads(args.out.read_text())
        served = target_file(args)
        profile = loopback_profile(served, LocalLLM.load(served), args.prompts)
        result["profile"] = profile.model_dump()
        finish(result, profile, args)
        return

    earlier_vllm = kept_vllm(args.out)
    params = GenerationParams(max_tokens=args.max_tokens)
    workload = prompts(args.prompts)
    served = target_file(args)
    local = LocalLLM.load(served)  # the edge's copy of the tokenizer
    result: dict[str, Any] = {
        "benchmark": "speculative",
        "machine": machine(),
        "target": served,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        | {"jitter_of_rtt": JITTER},
        "truncated_self_drafts": truncation_study(local, args.target, args.depths),
    }
    real: dict[str, Any] = {}
    with worker(served) as url:
        target = OpenAICompatLLM(url, served, timeout_s=120, max_retries=0)
        for prompt in workload[0][:2]:  # warm the worker's code paths
            target.complete(prompt, params)
        for rtt_ms in args.rtts_ms:
            link = NetworkLink(rtt_s=rtt_ms / 1000, jitter_s=JITTER * rtt_ms / 2000, seed=0)
            specs = {
                policy.name: SpeculativeLLM(DRAFTER, target, policy, link=link, tokenizer=local)
                for policy in policies(args.windows)
            }
            real[str(rtt_ms)] = measure(
                target,
                specs,
                workload,
                params,
                link=link,
                tokenizer=local,
                label=f"RTT {rtt_ms} ms",
                repeats=args.repeats,
            )
        depth = max(args.depths)
        draft_path = RUNS / f"{args.target}-{depth}l.gguf"
        with worker(str(draft_path)) as draft_url:  # the model draft: a second worker process
            draft = OpenAICompatLLM(draft_url, str(draft_path), timeout_s=120, max_retries=0)
            specs = {
                policy.name: SpeculativeLLM(draft, target, policy, tokenizer=local)
                for policy in (FixedWindow(2), AdaptiveWindow(k_max=max(args.windows)))
            }
            runs = measure(
                target,
                specs,
                workload,
                params,
                link=NetworkLink(),
                tokenizer=local,
                label="model draft",
            )
            result["model_draft_rtt0"] = {"draft": draft_path.name, **_drop_rounds(runs)}
            draft.close()
        target.close()
    zero = real[str(args.rtts_ms[0])]
    rounds = [r for run in zero["speculative"].values() for r in run["per_round"]]
    write_json(RUNS / "rounds_rtt0.json", {"rounds": rounds, "cloud_only": zero["cloud_only"]})
    profile = loopback_profile(served, local, args.prompts)
    for runs in real.values():
        _drop_rounds(runs)
    result["real"] = real
    result["profile"] = profile.model_dump()
    write_json(args.out, result)  # the real runs are kept even if a later section fails
    result["in_process"] = in_process(args)
    if earlier_vllm is not None:
        result["vllm_rtt0"] = earlier_vllm
    finish(result, profile, args)


def kept_vllm(out: Path) -> dict[str, Any] | None:
    """The vLLM section of the results at ``out``, if any, with the machine it ran on: a
    full run does not measure it (that needs a vLLM server, ``--vllm-only``), and should
    not drop it."""
    if not out.exists():
        return None
    earlier = json.loads(out.read_text())
    if "vllm_rtt0" not in earlier:
        return None
    return {"machine": earlier.get("machine"), **earlier["vllm_rtt0"]}


def loopback_profile(served: str, local: LocalLLM, prompts: int) -> LatencyProfile:
    """The deployment profile fitted to the RTT-0 rounds of the real run (kept in
    runs/speculative/rounds_rtt0.json), saved beside the results."""
    saved = json.loads((RUNS / "rounds_rtt0.json").read_text())
    rounds, cloud_only = saved["rounds"], saved["cloud_only"]
    profile = fit_profile(
        f"{Path(served).stem}-cpu-loopback",
        rounds,
        list(zip(cloud_only["cloud_s"], cloud_only["lengths"], strict=True)),
        batch_step_ratio=batch_step_ratio(local),
        rtt_s=0.0,
        jitter_s=0.0,
        source=f"benchmarks/speculative.py, {Path(served).name} worker on 127.0.0.1, "
        "prompt-lookup draft",
        kinds=[i % prompts for i in range(len(rounds))],  # each policy ran every prompt
    )
    profile.save(RESULTS / "speculative_profile.json")
    return profile


def in_process(args: argparse.Namespace) -> dict[str, Any]:
    """Speculative decoding with the target in this process against its own decoding: the
    served target and, when that is a copy, the packaged file too (prompt lookup on both;
    the distilled student, where one was trained, on the served target)."""
    params = GenerationParams(max_tokens=args.max_tokens)
    workload = prompts(args.prompts)
    served = target_file(args)
    out: dict[str, Any] = {"student": str(args.student) if args.student.exists() else None}
    for model in dict.fromkeys((served, args.target)):
        target = LocalLLM.load(model)
        drafts: dict[str, Any] = {"prompt-lookup": DRAFTER}
        if args.student.exists() and model == served:
            drafts["student"] = LocalLLM(args.student, name="student")
        out[Path(model).name] = {}
        for label, draft in drafts.items():
            specs = {
                policy.name: SpeculativeLLM(draft, target, policy)
                for policy in policies(args.windows)
            }
            runs = measure(
                target,
                specs,
                workload,
                params,
                link=NetworkLink(),
                tokenizer=target,
                label=label,
                repeats=args.repeats,
            )
            if draft is DRAFTER:  # determined proposals: replayable
                prices = Prices.local(runs)
                runs["prices"] = asdict(prices)
                runs["replay"] = replay(
                    greedy_answers(target, args), prices, [0], args.windows, target.end_token_ids
                )["0"]
            out[Path(model).name][label] = _drop_rounds(runs)
    return out


def vllm_run(args: argparse.Namespace) -> dict[str, Any]:
    """Prompt lookup against a vLLM server as the cloud, at RTT 0."""
    params = GenerationParams(max_tokens=args.max_tokens)
    workload = prompts(args.vllm_prompts)
    local = LocalLLM.load(target_file(args))  # the edge's copy of the tokenizer
    target = OpenAICompatLLM(args.vllm_url, args.target, timeout_s=600, max_retries=0)
    specs = {
        policy.name: SpeculativeLLM(DRAFTER, target, policy, tokenizer=local)
        for policy in (FixedWindow(4), AdaptiveWindow(k_max=max(args.windows)))
    }
    runs = measure(
        target, specs, workload, params, link=NetworkLink(), tokenizer=local, label="vLLM"
    )
    target.close()
    return {"machine": machine(), "url": args.vllm_url, "model": args.target, **_drop_rounds(runs)}


def gpu_shaped(profile: LatencyProfile) -> LatencyProfile:
    """The measured profile with GPU cost shapes: a pass over k tokens, or a step over b
    sequences, costs one decode step plus 2% per extra token or sequence. An assumption,
    labelled so in the JSON; no GPU was measured."""
    step = profile.decode_base_s + profile.decode_per_seq_s
    return profile.model_copy(
        update={
            "name": "assumed-gpu-cloud",
            "verify_base_s": step,
            "verify_per_token_s": 0.02 * step,
            "decode_base_s": step,
            "decode_per_seq_s": 0.02 * step,
            "source": "ASSUMED, not measured: the CPU profile with GPU cost shapes (a pass "
            "over k tokens or a step over b sequences costs one step plus 2% per extra)",
        }
    )


@dataclass(frozen=True)
class Prices:
    """What the replay charges for a round.

    Attributes:
        draft_per_token_s: Drafting, per drafted token.
        verify_base_s: A verification pass, fixed part.
        verify_per_token_s: Each drafted token it verifies.
        own_token_s: A token of the target's own decoding (the baseline's rate; over a
            link also the rate of a round the cloud decodes alone).
        alone_base_s: Over a link, the fixed part of a round the cloud decodes alone.
        in_process: The target is in process: a round without a proposal is one step of
            ``step_s`` that yields one token (not a decode of the window's k + 1).
        step_s: That step.
    """

    draft_per_token_s: float
    verify_base_s: float
    verify_per_token_s: float
    own_token_s: float
    alone_base_s: float = 0.0
    in_process: bool = False
    step_s: float = 0.0

    @classmethod
    def remote(cls, profile: LatencyProfile) -> Prices:
        """The fitted deployment profile's prices (a worker over a link)."""
        return cls(
            draft_per_token_s=profile.draft_per_token_s,
            verify_base_s=profile.verify_base_s,
            verify_per_token_s=profile.verify_per_token_s,
            own_token_s=profile.decode_base_s + profile.decode_per_seq_s,
            alone_base_s=profile.solo_overhead_s,
        )

    @classmethod
    def local(cls, runs: dict[str, Any]) -> Prices:
        """Prices fitted to an in-process `measure` (its per-round records): the
        verification line by least squares over rounds that drafted, the step as the
        mean of those that did not, the baseline's rate from the target's own decoding."""
        rounds = [
            (drafted, verify_s, draft_s)
            for run in runs["speculative"].values()
            for request in run["per_round"]
            for drafted, verify_s, draft_s in zip(
                request["drafted"], request["verify_s"], request["draft_s"], strict=True
            )
        ]
        passes = np.array([(d, v, t) for d, v, t in rounds if d])
        slope, base = np.polyfit(passes[:, 0], passes[:, 1], 1)
        cloud_only = runs["cloud_only"]
        return cls(
            draft_per_token_s=float(passes[:, 2].sum() / passes[:, 0].sum()),
            verify_base_s=float(base),
            verify_per_token_s=float(slope),
            own_token_s=cloud_only["seconds"] / sum(cloud_only["lengths"]),
            in_process=True,
            step_s=float(np.mean([v for d, v, _ in rounds if not d])),
        )


def greedy_answers(target: LocalLLM, args: argparse.Namespace) -> list[tuple[list[int], list[int]]]:
    """Prompt and answer ids of the spare prompt, then the batch: the target's own greedy
    decoding, which a lossless speculative decoder reproduces."""
    batch, spare = prompts(args.prompts)
    params = GenerationParams(max_tokens=args.max_tokens)
    return [
        (target.encode(p), target.complete(p, params).choices[0].token_ids) for p in (spare, *batch)
    ]


def replay(
    answers: list[tuple[list[int], list[int]]],
    prices: Prices,
    rtts_ms: list[int],
    windows: list[int],
    ends: frozenset[int],
) -> dict[str, dict[str, float]]:
    """Per RTT, each window policy's speedup over the target's own decoding, replayed
    exactly and offline: prompt lookup against the target's own greedy ``answers`` (so
    what it proposes and how much of it stands are determined), each round charged
    ``prices``. No timing noise and no machine load: the policies' choices alone, as in
    `measure` (the spare prompt first, untimed)."""
    out = {}
    for rtt_ms in rtts_ms:
        rtt = rtt_ms / 1000
        own = sum(rtt + prices.own_token_s * len(answer) for _, answer in answers[1:])
        out[str(rtt_ms)] = {
            policy.name: round(own / _replayed(policy, answers, prices, rtt, ends), 4)
            for policy in policies(windows)
        }
    return out


def _replayed(
    policy: WindowPolicy,
    answers: list[tuple[list[int], list[int]]],
    prices: Prices,
    rtt_s: float,
    ends: frozenset[int],
) -> float:
    """Seconds ``policy`` takes over ``answers[1:]`` (prompt and answer ids), having served
    ``answers[0]`` first; rounds as `SpeculativeLLM` makes them."""
    greedy, rng = GenerationParams(temperature=0.0), np.random.default_rng(0)
    earlier: deque[Round] = deque(maxlen=EARLIER_ROUNDS)
    seconds = 0.0
    for i, (prompt, answer) in enumerate(answers):
        ids, made, rounds = list(prompt), 0, []
        history = tuple(earlier)
        while made < len(answer):
            room = len(answer) - made
            offered = DRAFTER.propose(ids, min(policy.largest, room), greedy, rng, ends).ids
            k = min(policy.next_window(rounds, history, len(offered)), room)
            drafted = offered[:k]
            if drafted:
                stood = next(
                    (j for j, t in enumerate(drafted)
                     if made + j >= len(answer) or t != answer[made + j]),
                    len(drafted),
                )  # fmt: skip
                new = min(stood + 1, room)
                verify_s = prices.verify_base_s + prices.verify_per_token_s * len(drafted)
                draft_s = prices.draft_per_token_s * len(drafted)
                done = Round(k, len(drafted), stood, draft_s, verify_s, rtt_s)
            elif prices.in_process:  # one step of the target: its next token
                new = 1
                done = Round(k, 0, 0, 0.0, prices.step_s, 0.0)
            else:  # the cloud decodes the window's k + 1 tokens itself
                new = min(k + 1, room)
                alone_s = prices.alone_base_s + prices.own_token_s * new
                resume_at = resumes_at(DRAFTER, ids, answer[made : made + new], rng, ends)
                done = Round(k, 0, 0, 0.0, alone_s, rtt_s, decoded=new, resume_at=resume_at)
            rounds.append(done)
            ids.extend(answer[made : made + new])
            made += new
            if i:
                seconds += done.draft_s + done.verify_s + done.network_s
        earlier.extend(rounds)
    return seconds


def finish(result: dict[str, Any], profile: LatencyProfile, args: argparse.Namespace) -> None:
    """Validation, the exact replay, sweeps, JSON and plot, from the real runs and their
    profile."""
    # from the stored timings, so that runs measured before a comparison was added have it
    local = [r for d in result["in_process"].values() if isinstance(d, dict) for r in d.values()]
    for runs in [*result["real"].values(), *local]:
        runs.update(comparisons(runs["speculative"]))
    result["validation"] = validate(profile, result["real"], args.windows)
    target = LocalLLM.load(target_file(args))
    answers = greedy_answers(target, args)
    result["replay"] = replay(
        answers, Prices.remote(profile), args.rtts_ms, args.windows, target.end_token_ids
    )
    gpu = gpu_shaped(profile)
    result["sweeps"] = sweeps(
        {"cpu-measured": profile, "gpu-assumed": gpu}, args.windows, args.requests
    )
    result["gpu_profile"] = gpu.model_dump()
    write_json(args.out, result)
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
