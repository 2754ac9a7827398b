"""Small-to-large model routing by uncertainty: which estimator tells a wrong answer, and
what escalating by it buys, against random routing.

Task: the shipped facts (capitals of 190 countries, symbols of 115 elements; few-shot,
exact match). The embedded models split on it (SmolLM2-135M about half, Gemma-3-270M
about two thirds, ENVIRONMENT.md), every answer is checked without a judge, and the
answers are short, as the paper's UQ methods assume. HotPotQA, even with its gold
paragraphs, is beyond both models (F1 0.13 and 0.03), which leaves nothing to route.

Three parts (answers are resumed from earlier runs; --no-live skips the third):

1. answers: the small model answers every question with all seven estimators; the large
   model answers every question (hold-out files under runs/model_routing/, resumable).
2. analysis (no model): questions split in two halves, stratified by category and
   seeded: a calibration half and a test half. Per estimator, on the test half: AUROC of
   the score for telling wrong answers; ECE of the method's own confidence and of the
   isotonic and Platt calibrations fitted on the calibration half; the accuracy vs
   escalation-rate curve (escalate the highest scores; ties in random order, as an
   expectation) against random routing, always-small, always-large and an oracle; PGR
   (share of the large model's lead recovered) at 20/50/80% with a bootstrap 95% interval
   of the gain over random; and thresholds chosen on the calibration half for those rates,
   applied to the test half (the escalation rate they really give); AUROC and APGR per
   category too. The best estimator is picked by APGR on the calibration half, never on
   the test half (the estimator that best tells wrong answers is not always the one that
   routes best: routing also needs the large model to be right where the small is wrong).
3. live: the real `Cascade` (best estimator, calibrated threshold for 50% escalation) on
   the test half, end to end: realized escalation rate and accuracy vs the analysis'
   prediction, and seconds per query vs always-small and always-large.

Usage:
    python benchmarks/model_routing.py [--small smollm2-135m] [--large gemma3-270m]
        [--limit N] [--seed 0] [--no-live]

Any registry name works for --small/--large, so two vLLM workers are
``--small openai:http://host-a:8000/v1/<model> --large openai:http://host-b:8000/v1/<model>``.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from _common import RESULTS, machine, write_json
from rich.progress import track

from relaygraph.eval.facts import load_facts
from relaygraph.eval.holdout import (
    ANSWER_PARAMS,
    HoldoutRow,
    QAItem,
    build_holdout,
    calibration_items,
    fact_items,
    judge,
)
from relaygraph.eval.routing import (
    auroc,
    escalation_quality,
    oracle_quality,
    random_quality,
    recovered_share,
)
from relaygraph.eval.runner import sample_items
from relaygraph.fileio import save_figure
from relaygraph.llm.registry import load_llm
from relaygraph.routing import Cascade, Rung
from relaygraph.routing.calibration import Calibration, expected_calibration_error, fit_calibration
from relaygraph.routing.uncertainty import ESTIMATORS

RUNS = Path(__file__).resolve().parent.parent / "runs" / "model_routing"
RATES = np.round(np.linspace(0.0, 1.0, 21), 2)
REPORTED = (0.2, 0.5, 0.8)
BOOTSTRAP = 2000


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def answers(small: str, large: str, items: list[QAItem]) -> tuple[list[HoldoutRow], ...]:
    """Both models' hold-out rows for ``items`` (built, or resumed, under RUNS)."""
    estimators = {name: factory() for name, factory in ESTIMATORS.items()}
    small_rows = build_holdout(load_llm(small), items, estimators, RUNS / f"{slug(small)}.jsonl")
    large_rows = build_holdout(load_llm(large), items, {}, RUNS / f"{slug(large)}.jsonl")
    return small_rows, large_rows


def split(items: list[QAItem], seed: int) -> tuple[set[str], set[str]]:
    """Calibration and test ids: halves of each category, drawn with ``seed``."""
    calibration = sample_items(items, len(items) // 2, seed, stratum=lambda item: item.group)
    ids = {item.id for item in calibration}
    return ids, {item.id for item in items} - ids


def bootstrap_gain(
    scores: np.ndarray, small: np.ndarray, large: np.ndarray, rate: float, seed: int
) -> list[float]:
    """95% interval of (routed - random) accuracy at ``rate``, resampling questions."""
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(BOOTSTRAP):
        pick = rng.integers(0, len(scores), len(scores))
        s, a, b = scores[pick], small[pick], large[pick]
        routed = escalation_quality(s, a, b, [rate])[0]
        gains.append(routed - random_quality(a, b, [rate])[0])
    low, high = np.percentile(gains, [2.5, 97.5])
    return [round(float(low), 4), round(float(high), 4)]


def alignment(
    name: str, rows: dict[str, HoldoutRow], large: dict[str, HoldoutRow], ids: list[str]
) -> dict[str, float | None]:
    """AUROC for telling the small model's wrong answers, and APGR (the area under the
    PGR curve), on the questions ``ids``; None where a set has one class or no gap."""
    scores = np.array([rows[i].scores[name] for i in ids])
    small = np.array([rows[i].correct for i in ids], dtype=np.float64)
    big = np.array([large[i].correct for i in ids], dtype=np.float64)
    area = None
    if big.mean() > small.mean():
        quality = escalation_quality(scores, small, big, RATES)
        area = round(
            float(np.trapezoid(recovered_share(quality, small.mean(), big.mean()), RATES)), 4
        )
    one_class = small.min() == small.max()
    return {"auroc": None if one_class else round(auroc(scores, small == 0), 4), "apgr": area}


def analyse_estimator(
    name: str,
    rows: dict[str, HoldoutRow],
    large: dict[str, HoldoutRow],
    calibration_ids: list[str],
    test_ids: list[str],
    *,
    seed: int,
) -> tuple[dict[str, Any], Calibration]:
    """Every figure of one estimator (see the module docstring)."""
    fit_rows = [rows[i] for i in calibration_ids]
    test = [rows[i] for i in test_ids]
    scores = np.array([r.scores[name] for r in test])
    small = np.array([r.correct for r in test], dtype=np.float64)
    big = np.array([large[r.id].correct for r in test], dtype=np.float64)
    small_acc, large_acc = float(small.mean()), float(big.mean())
    fits = {
        method: fit_calibration(
            calibration_items(fit_rows, name), model=test[0].model, estimator=name, method=method
        )
        for method in ("isotonic", "platt")
    }
    quality = escalation_quality(scores, small, big, RATES)
    baseline = random_quality(small, big, RATES)
    pgr = recovered_share(quality, small_acc, large_acc)
    inner = (RATES > 0) & (RATES < 1)
    transfer = []
    for rate in REPORTED:
        threshold = fits["isotonic"].threshold_for_escalation(rate)
        escalate = scores > threshold
        accuracy = float(np.where(escalate, big, small).mean())
        transfer.append(
            {
                "target_rate": rate,
                "threshold": threshold,
                "test_rate": round(float(escalate.mean()), 4),
                "test_accuracy": round(accuracy, 4),
            }
        )
    at = {rate: int(np.flatnonzero(np.isclose(RATES, rate))[0]) for rate in REPORTED}
    groups = sorted({rows[i].group for i in test_ids})
    result = {
        "calibration_half": alignment(name, rows, large, calibration_ids),
        "auroc": round(auroc(scores, small == 0), 4),
        "by_category": {
            g: alignment(name, rows, large, [i for i in test_ids if rows[i].group == g])
            for g in groups
        },
        "ece_raw": round(
            expected_calibration_error([min(1, max(0, r.confidence[name])) for r in test], small), 4
        ),
        "ece_isotonic": round(
            expected_calibration_error(fits["isotonic"].probability(scores), small), 4
        ),
        "ece_platt": round(expected_calibration_error(fits["platt"].probability(scores), small), 4),
        "extra_calls": test[0].extra_calls[name],
        "estimate_s_mean": round(float(np.mean([r.estimator_s.get(name, 0.0) for r in test])), 4),
        "accuracy_curve": [round(float(q), 4) for q in quality],
        "random_curve": [round(float(q), 4) for q in baseline],
        "pgr": {f"{rate:.0%}": round(float(pgr[at[rate]]), 4) for rate in REPORTED},
        "apgr": round(float(np.trapezoid(pgr, RATES)), 4),
        "gain_over_random": {
            f"{rate:.0%}": {
                "accuracy_points": round(float(quality[at[rate]] - baseline[at[rate]]), 4),
                "ci95": bootstrap_gain(scores, small, big, rate, seed),
            }
            for rate in REPORTED
        },
        "min_gain_over_random": round(float((quality - baseline)[inner].min()), 4),
        "beats_random_everywhere": bool(((quality - baseline)[inner] > 0).all()),
        "calibrated_thresholds_on_test": transfer,
    }
    return result, fits["isotonic"]


def analysis(
    items: list[QAItem], small_rows: list[HoldoutRow], large_rows: list[HoldoutRow], seed: int
) -> tuple[dict[str, Any], dict[str, Calibration]]:
    rows = {r.id: r for r in small_rows}
    large = {r.id: r for r in large_rows}
    calibration_set, test_set = split(items, seed)
    calibration_ids = [i.id for i in items if i.id in calibration_set]
    test_ids = [i.id for i in items if i.id in test_set]
    small = np.array([rows[i].correct for i in test_ids], dtype=np.float64)
    big = np.array([large[i].correct for i in test_ids], dtype=np.float64)
    per_estimator, calibrations = {}, {}
    for name in ESTIMATORS:
        per_estimator[name], calibrations[name] = analyse_estimator(
            name, rows, large, calibration_ids, test_ids, seed=seed
        )
    best = max(per_estimator, key=lambda n: per_estimator[n]["calibration_half"]["apgr"])
    by_auroc = max(per_estimator, key=lambda n: per_estimator[n]["calibration_half"]["auroc"])
    groups = sorted({r.group for r in small_rows})
    return {
        "questions": len(items),
        "calibration_questions": len(calibration_ids),
        "test_questions": len(test_ids),
        "accuracy": {
            "small": round(float(small.mean()), 4),
            "large": round(float(big.mean()), 4),
            "small_by_category": {
                g: round(float(np.mean([r.correct for r in small_rows if r.group == g])), 4)
                for g in groups
            },
            "large_by_category": {
                g: round(float(np.mean([r.correct for r in large_rows if r.group == g])), 4)
                for g in groups
            },
            "either": round(float(np.maximum(small, big).mean()), 4),
        },
        "answer_s_mean": {
            "small": round(float(np.mean([rows[i].latency_s for i in test_ids])), 4),
            "large": round(float(np.mean([large[i].latency_s for i in test_ids])), 4),
        },
        "rates": RATES.tolist(),
        "oracle_curve": [round(float(q), 4) for q in oracle_quality(small, big, RATES)],
        "random_apgr": 0.5,
        "estimators": per_estimator,
        "best_estimator": best,
        "best_chosen_by": "APGR on the calibration half",
        "best_by_auroc_on_calibration_half": by_auroc,
        "test_ids": test_ids,
    }, calibrations


def live(
    small: str, large: str, items: list[QAItem], result: dict[str, Any], calibration: Calibration
) -> dict[str, Any]:
    """The real cascade at the calibrated 50% threshold, on the test half."""
    best = result["best_estimator"]
    small_llm, large_llm = load_llm(small), load_llm(large)
    cascade = Cascade(
        [
            Rung.calibrated(small_llm, ESTIMATORS[best](), calibration, escalation_rate=0.5),
            Rung(large_llm),
        ]
    )
    test = [item for item in items if item.id in set(result["test_ids"])]
    escalated = right = 0
    seconds = []
    for item in track(test, description=f"cascade ({best})"):
        began = time.perf_counter()
        routed = cascade.route(item.prompt, ANSWER_PARAMS)
        seconds.append(time.perf_counter() - began)
        escalated += routed.model == large_llm.name
        right += judge(item, routed.completion.text)[1]
    predicted = next(
        t
        for t in result["estimators"][best]["calibrated_thresholds_on_test"]
        if t["target_rate"] == 0.5
    )
    return {
        "estimator": best,
        "threshold": calibration.threshold_for_escalation(0.5),
        "questions": len(test),
        "escalation_rate": round(escalated / len(test), 4),
        "accuracy": round(right / len(test), 4),
        "predicted_escalation_rate": predicted["test_rate"],
        "predicted_accuracy": predicted["test_accuracy"],
        "seconds_per_query": round(float(np.mean(seconds)), 4),
        "always_small_s": result["answer_s_mean"]["small"],
        "always_large_s": result["answer_s_mean"]["large"],
    }


def plot(result: dict[str, Any], path: Path) -> None:
    a = result["analysis"]
    rates = np.array(a["rates"])
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    ax = axes[0]
    best = a["best_estimator"]
    for name, e in a["estimators"].items():
        width, alpha = (2.5, 1.0) if name == best else (1.0, 0.6)
        ax.plot(rates, e["accuracy_curve"], lw=width, alpha=alpha, label=f"{name} ({e['auroc']})")
    ax.plot(rates, a["estimators"][best]["random_curve"], "k--", label="random")
    ax.plot(rates, a["oracle_curve"], "k:", label="oracle")
    ax.set(
        xlabel="share escalated to the large model",
        ylabel="accuracy (test half)",
        title="accuracy vs escalation (legend: AUROC)",
    )
    ax.legend(fontsize=7)
    ax = axes[1]
    names = list(a["estimators"])
    x = np.arange(len(names))
    for offset, key in ((-0.27, "ece_raw"), (0.0, "ece_isotonic"), (0.27, "ece_platt")):
        ax.bar(x + offset, [a["estimators"][n][key] for n in names], 0.27, label=key)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="ECE (test half)", title="calibration error before / after")
    ax.legend(fontsize=8)
    ax = axes[2]
    for offset, rate in zip((-0.27, 0.0, 0.27), ("20%", "50%", "80%"), strict=True):
        gains = [a["estimators"][n]["gain_over_random"][rate] for n in names]
        points = np.array([g["accuracy_points"] for g in gains])
        low = points - np.array([g["ci95"][0] for g in gains])
        high = np.array([g["ci95"][1] for g in gains]) - points
        ax.bar(x + offset, points, 0.27, yerr=[low, high], capsize=2, label=f"{rate} escalated")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="accuracy gain over random (95% CI)", title="gain over random routing")
    ax.legend(fontsize=8)
    fig.suptitle(f"{result['small']} → {result['large']}, facts ({a['test_questions']} test qs)")
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", default="smollm2-135m")
    parser.add_argument("--large", default="gemma3-270m")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-live", action="store_true", help="skip the live cascade run")
    parser.add_argument("--out", type=Path, default=RESULTS / "model_routing.json")
    args = parser.parse_args()

    items = sample_items(
        fact_items(load_facts()), args.limit, args.seed, stratum=lambda item: item.group
    )
    result: dict[str, Any] = {
        "benchmark": "model_routing",
        "machine": machine(),
        "small": args.small,
        "large": args.large,
        "task": "shipped facts (capitals, chemical symbols), few-shot, exact match",
        "settings": {
            "limit": args.limit,
            "seed": args.seed,
            "answer_max_tokens": 32,
            "bootstrap": BOOTSTRAP,
        },
    }
    small_rows, large_rows = answers(args.small, args.large, items)
    result["analysis"], calibrations = analysis(items, small_rows, large_rows, args.seed)
    if not args.no_live:
        best = result["analysis"]["best_estimator"]
        result["live"] = live(args.small, args.large, items, result["analysis"], calibrations[best])
    write_json(args.out, result)
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
