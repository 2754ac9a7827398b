"""relaygraph quickstart: the embedded model answering questions, alone and batched.

Run with ``python examples/quickstart.py``: the bare engine, below the agent graphs that
``make demo`` runs. Real generation on the packaged SmolLM2-135M-Instruct (CPU, in
process), with token counts, latency and the uncertainty signal (mean token
log-probability) per answer.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from relaygraph import GenerationParams, load_llm

QUESTIONS = [
    "What is the capital of Italy?",
    "Which planet is known as the Red Planet?",
    "Who wrote Romeo and Juliet?",
    "What gas do plants absorb from the air?",
]


def main() -> None:
    console = Console()
    llm = load_llm("smollm2-135m")
    params = GenerationParams(max_tokens=48, logprobs=True)
    prompts = [[{"role": "user", "content": q}] for q in QUESTIONS]

    began = time.perf_counter()
    answers = [llm.complete(p, params) for p in prompts]
    sequential_s = time.perf_counter() - began
    began = time.perf_counter()
    batched = llm.complete_batch(prompts, params)
    batched_s = time.perf_counter() - began

    table = Table(title=f"{llm.name} on CPU (embedded, llama.cpp)")
    for column in (
        "question",
        "answer",
        "prompt tok",
        "completion tok",
        "latency s",
        "mean logprob",
    ):
        table.add_column(column, overflow="fold")
    for question, answer in zip(QUESTIONS, answers, strict=True):
        logprobs = answer.choice.logprobs or []
        mean = sum(t.logprob for t in logprobs) / max(1, len(logprobs))
        table.add_row(
            question,
            answer.text.strip(),
            str(answer.usage.prompt_tokens),
            str(answer.usage.completion_tokens),
            f"{answer.latency_s:.2f}",
            f"{mean:.2f}",
        )
    console.print(table)
    tokens = sum(a.usage.completion_tokens for a in batched)
    same = all(a.text == b.text for a, b in zip(answers, batched, strict=True))
    console.print(
        f"one by one: {sequential_s:.2f} s; batched: {batched_s:.2f} s "
        f"({tokens / batched_s:.0f} tok/s, {sequential_s / batched_s:.1f}x), "
        f"identical greedy answers: {same}"
    )


if __name__ == "__main__":
    main()
