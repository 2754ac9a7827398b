"""Does a token's result depend on how many rows its forward pass held? (llama.cpp on the CPU)

Continuous batching puts a request's tokens in passes beside other requests' tokens, and
the prefix cache reuses key/value entries computed in earlier passes of other sizes. If
llama.cpp's CPU kernels give different numbers for the same row in passes of different
sizes, greedy text depends on what else the engine was doing. Two measurements per model:

1. rows: the logits of the first rows of a prompt evaluated in one pass of n rows, against
   a pass of 4 rows and one of 256 rows (a row's numbers do not depend on the other rows'
   contents, only on the kernel the pass size selects);
2. prefixes: a 600-token prompt prefilled in chunks of c tokens (the last token alone, as
   the engine does), the next-token logits against one 512-token chunk, and whether 32
   greedy tokens decoded after it agree.

Writes benchmarks/results/pass_invariance.json.

Usage:
    python benchmarks/pass_invariance.py [--models smollm2-135m,gemma3-270m]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from _common import RESULTS, machine, write_json
from rich.progress import track

from relaygraph.llm.catalog import packaged_model
from relaygraph.llm.llamacpp import DecodeItem, LlamaRuntime

ROW_PASSES = (1, 2, 3, 4, 8, 16, 32, 48, 63, 64, 65, 96, 128, 256)
CHUNKS = (1, 2, 4, 16, 32, 63, 64, 128, 256, 512)
TEXT = (
    "The history of lighthouses spans more than two thousand years, from the Pharos of "
    "Alexandria to automated beacons guarding modern shipping lanes. Keepers trimmed wicks, "
    "wound clockwork and logged every passing ship; storms, fog and isolation shaped their "
    "days. "
) * 12


def rows(runtime: LlamaRuntime, tokens: list[int]) -> list[dict[str, Any]]:
    """First four rows' logits in one pass of n rows, against 4-row and 256-row passes."""

    def first_rows(n: int) -> np.ndarray:
        runtime.truncate(0, 0)
        return runtime.decode([DecodeItem(0, tokens[:n], 0, 0)])[0][:4]

    small, large = first_rows(4), first_rows(256)
    found = []
    for n in track(ROW_PASSES, description="rows per pass"):
        got = first_rows(n)
        k = len(got)
        found.append(
            {
                "rows_in_pass": n,
                "max_abs_diff_vs_4_rows": float(np.abs(got - small[:k])[1:].max(initial=0.0)),
                "max_abs_diff_vs_256_rows": float(np.abs(got - large[:k])[1:].max(initial=0.0)),
            }
        )
    return found


def prefixes(runtime: LlamaRuntime, tokens: list[int]) -> list[dict[str, Any]]:
    """The prompt prefilled in chunks of c; next-token logits and 32 greedy tokens."""
    body, last = tokens[:-1], tokens[-1]

    def run(chunk: int) -> tuple[np.ndarray, list[int]]:
        runtime.truncate(0, 0)
        for start in range(0, len(body), chunk):
            part = body[start : start + chunk]
            runtime.decode([DecodeItem(0, part, start, len(part))])
        logits = runtime.decode([DecodeItem(0, [last], len(body), 0)])[0][0]
        first = logits
        text, position = [], len(tokens)
        for _ in range(32):
            token = int(logits.argmax())
            text.append(token)
            logits = runtime.decode([DecodeItem(0, [token], position, 0)])[0][0]
            position += 1
        return first, text

    reference, reference_text = run(512)
    found = []
    for chunk in track(CHUNKS, description="prefill chunks"):
        logits, text = run(chunk)
        pairs = enumerate(zip(text, reference_text, strict=True))
        agree = next((i for i, (a, b) in pairs if a != b), len(text))
        found.append(
            {
                "chunk": chunk,
                "max_abs_diff_next_token_logits": float(np.abs(logits - reference).max()),
                "same_next_token": bool(logits.argmax() == reference.argmax()),
                "greedy_tokens_agreeing": agree,
            }
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m")
    args = parser.parse_args()
    started = time.time()
    models: dict[str, Any] = {}
    for name in args.models.split(","):
        path = packaged_model(name).locate()
        runtime = LlamaRuntime(path, seq_len=2048, n_seq_max=1, n_threads=2)
        tokens = runtime.tokenize(TEXT, add_special=True, parse_special=False)[:600]
        models[name] = {
            "prompt_tokens": len(tokens),
            "rows": rows(runtime, tokens),
            "prefixes": prefixes(runtime, tokens),
        }
        runtime.close()
    result = {
        "benchmark": "pass_invariance",
        "machine": machine(),
        "settings": {"threads": 2, "row_passes": ROW_PASSES, "chunks": CHUNKS},
        "models": models,
        "seconds": round(time.time() - started, 1),
    }
    write_json(RESULTS / "pass_invariance.json", result)
    print(f"wrote {RESULTS / 'pass_invariance.json'} in {result['seconds']} s")


if __name__ == "__main__":
    main()
