"""Embedded engine benchmark: load, prefill, decode, batching, memory, overhead vs llama.cpp.

For each packaged model, in its own subprocess (so peak RSS is that model's alone):

- load time of `LocalLLM`;
- prompt processing (prefill) tokens/s on a ~500-token prompt with a cold cache;
- single-stream greedy decode tokens/s, relaygraph vs llama-cpp-python's own
  ``Llama.create_completion`` on the same GGUF, prompt and thread count, each in its own
  process (see `measure_raw`); the ratio is relaygraph's overhead (goal: at most 5%);
- batched decode tokens/s for 8 prompts (one llama_decode per step) vs the same 8
  prompts one after another;
- peak RSS of the relaygraph engine.

``--compare-transformers`` adds the backend choice behind `LocalLLM`: SmolLM2's GGUF
dequantized into transformers + torch (load time, decode tokens/s, RSS).

Usage:
    python benchmarks/engine.py [--repeats 3] [--tokens 128] [--compare-transformers]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, machine, write_json

STORY = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
PREFILL_TEXT = (
    "The history of lighthouses spans more than two thousand years, from the Pharos of "
    "Alexandria to automated beacons guarding modern shipping lanes. "
) * 18
PROMPT = f"{STORY}\n\nOnce upon a time,"
BATCH_TOPICS = [
    "a dragon",
    "a robot",
    "the sea",
    "a city",
    "a forest",
    "a clock",
    "a river",
    "a train",
]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _decode_rate(chunk_times: list[float]) -> float:
    """Tokens/s over decode only: from the first token to the last, excluding prefill."""
    if len(chunk_times) < 2:
        return float("nan")
    return (len(chunk_times) - 1) / (chunk_times[-1] - chunk_times[0])


def measure_model(name: str, repeats: int, tokens: int) -> dict[str, Any]:
    """relaygraph's engine, in a subprocess of its own (so peak RSS is this model's)."""
    from relaygraph.llm import GenerationParams, LocalLLM
    from relaygraph.llm.catalog import packaged_model

    path = packaged_model(name).locate()
    threads = os.cpu_count() or 1
    began = time.perf_counter()
    llm = LocalLLM(path, name=name, chat_format=packaged_model(name).chat_format, n_threads=threads)
    load_s = time.perf_counter() - began

    prefill = []
    n_prefill = llm.count_tokens(PREFILL_TEXT)
    for _ in range(repeats):
        llm.clear_cache()
        began = time.perf_counter()
        llm.score(PREFILL_TEXT, " The")
        prefill.append(n_prefill / (time.perf_counter() - began))

    # Raw text prompt: both engines see exactly the same tokens, no chat template.
    params = GenerationParams(max_tokens=tokens)
    batch_prompts = [
        f"Write a long story about {topic}.\n\nOnce upon a time," for topic in BATCH_TOPICS
    ]
    sequential, batched, decode = [], [], []
    for _ in range(repeats):
        llm.clear_cache()
        times = []
        for _chunk in llm.stream(PROMPT, params):
            times.append(time.perf_counter())
        decode.append(_decode_rate(times))
        llm.clear_cache()
        began = time.perf_counter()
        done = [llm.complete(p, params) for p in batch_prompts]
        sequential.append(
            sum(c.usage.completion_tokens for c in done) / (time.perf_counter() - began)
        )
        llm.clear_cache()
        began = time.perf_counter()
        done = llm.complete_batch(batch_prompts, params)
        batched.append(sum(c.usage.completion_tokens for c in done) / (time.perf_counter() - began))
    return {
        "model": name,
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "threads": threads,
        "load_s": round(load_s, 3),
        "prefill_tokens": n_prefill,
        "prefill_tok_s": round(statistics.median(prefill), 1),
        "decode_tok_s": round(statistics.median(decode), 1),
        "sequential_8_tok_s": round(statistics.median(sequential), 1),
        "batched_8_tok_s": round(statistics.median(batched), 1),
        "batch_speedup": round(statistics.median(batched) / statistics.median(sequential), 2),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "samples": {
            "decode": decode,
            "prefill": prefill,
            "sequential_8": sequential,
            "batched_8": batched,
        },
    }


def measure_raw(name: str, repeats: int, tokens: int) -> dict[str, Any]:
    """llama-cpp-python's own `Llama.create_completion`, alone in its process.

    In its own process because llama.cpp's OpenMP teams belong to the calling thread: a
    second library driving llama.cpp from another thread of the same process slows both
    (see llm/local.py).
    """
    from llama_cpp import Llama

    from relaygraph.llm.catalog import packaged_model

    threads = os.cpu_count() or 1
    began = time.perf_counter()
    raw = Llama(
        str(packaged_model(name).locate()),
        n_ctx=2048,
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    load_s = time.perf_counter() - began
    rates = []
    for _ in range(repeats):
        raw.reset()
        times = []
        for _piece in raw.create_completion(
            PROMPT, max_tokens=tokens, temperature=0.0, stream=True
        ):
            times.append(time.perf_counter())
        rates.append(_decode_rate(times))
    return {
        "load_s": round(load_s, 3),
        "decode_tok_s": round(statistics.median(rates), 1),
        "samples": rates,
    }


def measure_transformers(tokens: int) -> dict[str, Any]:
    """SmolLM2's GGUF in transformers + torch (dequantized to float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from relaygraph.llm.catalog import packaged_model

    path = packaged_model("smollm2-135m").locate()
    torch.set_num_threads(os.cpu_count() or 1)
    began = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    load_s = time.perf_counter() - began
    ids = tokenizer(f"{STORY}\n\nOnce upon a time,", return_tensors="pt").input_ids
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=4, do_sample=False)
        began = time.perf_counter()
        first = model.generate(ids, max_new_tokens=1, do_sample=False)
        prefill_s = time.perf_counter() - began
        began = time.perf_counter()
        out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        total_s = time.perf_counter() - began
    generated = out.shape[1] - ids.shape[1]
    del first
    return {
        "backend": "transformers+torch (GGUF dequantized to float32)",
        "model": "smollm2-135m",
        "load_s": round(load_s, 1),
        "decode_tok_s": round((generated - 1) / (total_s - prefill_s), 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def _in_subprocess(args: list[str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, *args],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    if result.returncode != 0:
        raise SystemExit(f"benchmark subprocess {args} failed:\n{result.stderr}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def plot(models: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [
        "llama-cpp-python\nLlama (1 stream)",
        "relaygraph\n(1 stream)",
        "relaygraph\n8 one by one",
        "relaygraph\n8 batched",
    ]
    keys = ["raw_llama_decode_tok_s", "decode_tok_s", "sequential_8_tok_s", "batched_8_tok_s"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        xs = [k + i * width for k in range(len(keys))]
        ax.bar(xs, [m[k] for k in keys], width, label=m["model"])
    ax.set_xticks([k + width * (len(models) - 1) / 2 for k in range(len(keys))], labels)
    ax.set_ylabel("generated tokens / s")
    ax.set_title("Embedded engine on this CPU (higher is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--compare-transformers", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "engine.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "transformers":
        print(json.dumps(measure_transformers(args.tokens)))
        return
    if args.worker and args.worker.startswith("raw:"):
        print(json.dumps(measure_raw(args.worker.removeprefix("raw:"), args.repeats, args.tokens)))
        return
    if args.worker:
        print(json.dumps(measure_model(args.worker, args.repeats, args.tokens)))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    facts = machine()
    models = []
    for name in args.models:
        console.print(f"measuring {name} ({args.repeats} repeats, {args.tokens} tokens)...")
        settings = ["--repeats", str(args.repeats), "--tokens", str(args.tokens)]
        ours = _in_subprocess(["--worker", name, *settings])
        raw = _in_subprocess(["--worker", f"raw:{name}", *settings])
        ours["raw_llama_load_s"] = raw["load_s"]
        ours["raw_llama_decode_tok_s"] = raw["decode_tok_s"]
        ours["overhead_vs_raw_pct"] = round(
            (raw["decode_tok_s"] / ours["decode_tok_s"] - 1) * 100, 2
        )
        ours["samples"]["raw_decode"] = raw["samples"]
        models.append(ours)
    comparison = None
    if args.compare_transformers:
        console.print("measuring transformers + torch on SmolLM2 (slow to load)...")
        comparison = _in_subprocess(["--worker", "transformers", "--tokens", str(args.tokens)])

    write_json(
        args.out,
        {
            "benchmark": "engine",
            "machine": facts,
            "settings": {
                "repeats": args.repeats,
                "tokens": args.tokens,
                "context_window": 2048,
                "batch": len(BATCH_TOPICS),
                "greedy": True,
            },
            "models": models,
            "transformers_comparison": comparison,
        },
    )
    plot(models, args.out.with_suffix(".png"))

    table = Table(title="Embedded engine (medians)")
    for column in (
        "model",
        "load s",
        "prefill tok/s",
        "decode tok/s",
        "raw llama.cpp tok/s",
        "overhead",
        "8 batched tok/s",
        "batch speedup",
        "peak RSS MB",
    ):
        table.add_column(column)
    for m in models:
        table.add_row(
            m["model"],
            str(m["load_s"]),
            str(m["prefill_tok_s"]),
            str(m["decode_tok_s"]),
            str(m["raw_llama_decode_tok_s"]),
            f"{m['overhead_vs_raw_pct']:+.1f}%",
            str(m["batched_8_tok_s"]),
            f"{m['batch_speedup']}x",
            str(m["peak_rss_mb"]),
        )
    console.print(table)
    if comparison:
        console.print(comparison)
    console.print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
