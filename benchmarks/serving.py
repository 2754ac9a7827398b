"""Serving benchmark: the HTTP path's overhead, and streaming under concurrency.

1. Zero-cost model (`ScriptedLLM`): latency of a chat completion through relaygraph's
   server (real uvicorn on 127.0.0.1, httpx client) vs the same call in process; the
   difference is the server's per-request overhead (goal: under 5 ms p50).
2. SmolLM2-135M: 1, 4 and 16 concurrent streaming clients; time to first token, total
   tokens/s and errors, vs as many threads calling the engine's `stream` directly.

Usage: python benchmarks/serving.py [--requests 300] [--tokens 48]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _common import RESULTS, machine, worker, write_json

from relaygraph.llm import GenerationParams, LocalLLM
from relaygraph.llm.scripted import ScriptedLLM
from relaygraph.serving.server import BackgroundServer

MESSAGES = [{"role": "user", "content": "Write a short story about a lighthouse."}]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def zero_cost(requests: int) -> dict[str, Any]:
    llm = ScriptedLLM(lambda prompt: "A short and fixed reply.")
    params = GenerationParams(max_tokens=16)
    body = {"model": "scripted", "messages": MESSAGES, "max_tokens": 16}
    direct, http = [], []
    with BackgroundServer({"scripted": llm}) as server, httpx.Client() as client:
        url = f"{server.base_url}/chat/completions"
        for _ in range(20):  # warm-up: connections, imports, caches
            client.post(url, json=body)
        for _ in range(requests):
            began = time.perf_counter()
            llm.complete(MESSAGES, params)
            direct.append(time.perf_counter() - began)
            began = time.perf_counter()
            response = client.post(url, json=body)
            http.append(time.perf_counter() - began)
            assert response.status_code == 200
    ms = 1e3
    return {
        "requests": requests,
        "in_process_p50_ms": round(statistics.median(direct) * ms, 3),
        "http_p50_ms": round(statistics.median(http) * ms, 3),
        "http_p99_ms": round(percentile(http, 0.99) * ms, 3),
        "overhead_p50_ms": round((statistics.median(http) - statistics.median(direct)) * ms, 3),
        "overhead_p99_ms": round((percentile(http, 0.99) - percentile(direct, 0.99)) * ms, 3),
    }


async def http_streams(base_url: str, clients: int, tokens: int) -> dict[str, Any]:
    body = {
        "model": "smollm2-135m",
        "messages": MESSAGES,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    ttft: list[float] = []
    counts: list[int] = []
    errors = 0

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal errors
        began = time.perf_counter()
        first = None
        async with client.stream("POST", f"{base_url}/chat/completions", json=body) as response:
            if response.status_code != 200:
                errors += 1
                return
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    errors += 1
                if (
                    first is None
                    and data.get("choices")
                    and data["choices"][0]["delta"].get("content")
                ):
                    first = time.perf_counter() - began
                if data.get("usage"):
                    counts.append(data["usage"]["completion_tokens"])
        ttft.append(first if first is not None else float("nan"))

    began = time.perf_counter()
    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(one(client) for _ in range(clients)))
    wall = time.perf_counter() - began
    return {
        "ttft_p50_s": statistics.median(ttft),
        "ttft_max_s": max(ttft),
        "tokens_per_s": sum(counts) / wall,
        "errors": errors,
    }


def direct_streams(llm: LocalLLM, clients: int, tokens: int) -> dict[str, Any]:
    params = GenerationParams(max_tokens=tokens)
    ttft: list[float] = []
    counts: list[int] = []

    def one() -> None:
        began = time.perf_counter()
        first = None
        n = 0
        for chunk in llm.stream(MESSAGES, params):
            if first is None and chunk.text:
                first = time.perf_counter() - began
            n += len(chunk.token_ids)
        ttft.append(first if first is not None else float("nan"))
        counts.append(n)

    threads = [threading.Thread(target=one) for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    return {
        "ttft_p50_s": statistics.median(ttft),
        "ttft_max_s": max(ttft),
        "tokens_per_s": sum(counts) / wall,
        "errors": 0,
    }


def concurrency(tokens: int, levels: list[int]) -> list[dict[str, Any]]:
    """Direct engine calls in this process vs a `relaygraph worker` in its own process
    (so this process's client work does not compete with the server for the GIL)."""
    llm = LocalLLM.load("smollm2-135m")
    rows = []
    with worker("smollm2-135m") as base_url:
        asyncio.run(http_streams(base_url, 1, 4))  # warm-up
        direct_streams(llm, 1, 4)
        for clients in levels:
            direct = direct_streams(llm, clients, tokens)
            served = asyncio.run(http_streams(base_url, clients, tokens))
            ratio = served["tokens_per_s"] / direct["tokens_per_s"]
            rows.append(
                {
                    "clients": clients,
                    "direct": _round(direct),
                    "server": _round(served),
                    "server_vs_direct_tokens_per_s": round(ratio, 3),
                }
            )
    return rows


def _round(row: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--out", type=Path, default=RESULTS / "serving.json")
    args = parser.parse_args()

    from rich.console import Console

    console = Console()
    console.print(f"zero-cost model, {args.requests} requests...")
    overhead = zero_cost(args.requests)
    console.print(overhead)
    console.print(
        f"SmolLM2 streaming, {args.levels} concurrent clients, {args.tokens} tokens each..."
    )
    rows = concurrency(args.tokens, args.levels)
    for row in rows:
        console.print(row)
    write_json(
        args.out,
        {
            "benchmark": "serving",
            "machine": machine(),
            "settings": {
                "requests": args.requests,
                "tokens": args.tokens,
                "levels": args.levels,
                "model": "smollm2-135m",
                "greedy": True,
            },
            "zero_cost_overhead": overhead,
            "concurrent_streams": rows,
        },
    )
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
