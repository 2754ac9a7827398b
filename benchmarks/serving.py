"""Serving benchmark: the HTTP path's overhead, streaming under concurrency, and peers.

Sections (``--only`` runs one; a partial run keeps the other's results in the JSON):

``own``
  1. Zero-cost model (`ScriptedLLM`): latency of a chat completion through relaygraph's
     server (real uvicorn on 127.0.0.1, httpx client) vs the same call in process; the
     difference is the server's per-request overhead (goal: under 5 ms p50).
  2. SmolLM2-135M: 1, 4 and 16 concurrent streaming clients; time to first token, total
     tokens/s and errors, vs as many threads calling the engine's `stream` directly.
``peers``
  relaygraph's server vs llama.cpp's ``llama-server`` and ``llama_cpp.server``
  (llama-cpp-python) on the same GGUF (SmolLM2-135M), threads (2), slots (8) and context
  per slot (2,048), each in its own process on 127.0.0.1, one after the other. Streaming
  greedy chat completions at 1, 4, 8 and 16 concurrent clients over a seeded set of
  prompts of 50-1,500 tokens, ``max_tokens`` 64 (no ``ignore_eos``; tokens produced are
  counted): throughput, time to first token and inter-token latency (p50/p99), and the
  ratios relaygraph / llama-server. Then a repeated ~1.2k-token prefix: the second
  request's latency and its ``usage.prompt_tokens_details.cached_tokens`` as each server
  reports it. Written under ``peers`` (with its own machine and settings) and plotted to
  results/serving_peers.png. Needs ``pip install -e '.[bench]'`` and
  ``benchmarks/build_llama_server.sh`` (llama-server; about 10 minutes on 2 cores).

``agents``
  The same servers under an agent workload: the model calls that HotPotQA and ALFWorld
  agents made (recorded by benchmarks/speculative_loaded.py in
  benchmarks/data/agent_steps.json: a conversation per item, its prompts growing by an
  observation a step) replayed by 1 and 4 agents sharing the server, each sending its
  next step when its last reply has ended: wall time, time to first token, tokens, and
  relaygraph / llama-server. Every server gets the same requests (greedy, each step's own
  ``max_tokens``), so what differs is serving: batching and reuse of the conversation's
  cached prefix. Written under ``agents``.

A smoke run of the peers: ``--only peers --peer-concurrency 1 4 --peer-requests 8
--prefix-repeats 1 --out /tmp/serving.json``.

Usage:
    python benchmarks/serving.py [--only own|peers|agents] [--requests 300] [--tokens 48]
        [--peer-concurrency 1 4 8 16] [--peer-requests 64] [--prefix-repeats 3]
        [--peers relaygraph llama-server llama-cpp-python] [--agents 1 4]
        [--agent-repeats 2] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from _common import RESULTS, ROOT, machine, worker, write_json

if TYPE_CHECKING:
    from _peer_servers import PeerSettings

    from relaygraph.llm import LocalLLM

# relaygraph's engine and server are imported where the `own` section uses them: the
# `peers` section runs relaygraph in a child process and its client needs neither.

MESSAGES = [{"role": "user", "content": "Write a short story about a lighthouse."}]
AGENT_STEPS = Path(__file__).resolve().parent / "data" / "agent_steps.json"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def zero_cost(requests: int) -> dict[str, Any]:
    from relaygraph.llm import GenerationParams
    from relaygraph.llm.scripted import ScriptedLLM
    from relaygraph.serving.server import BackgroundServer

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
    from relaygraph.llm import GenerationParams

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
    from relaygraph.llm import LocalLLM

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


def peers(args: argparse.Namespace, console: Any) -> dict[str, Any]:
    """The ``peers`` section: each server in turn, never two at once."""
    from _peer_servers import PeerSettings, running
    from _serving_load import PromptMaker, prompt_lengths, prompt_set, repeated_prefix, run_level
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    settings = PeerSettings(gguf=args.gguf or _packaged_gguf())
    maker = PromptMaker(settings.gguf)
    lengths = prompt_lengths(args.peer_seed, args.peer_requests, 50, 1500)
    prompt_sets = {
        c: prompt_set(maker, args.peer_seed, f"c{c}", lengths) for c in args.peer_concurrency
    }
    warmup = prompt_set(maker, args.peer_seed, "warm-up", [64, 512])
    results: dict[str, Any] = {}
    columns = (*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeElapsedColumn())
    for name in args.peers:
        console.print(f"[bold]{name}[/]: starting")
        began = time.perf_counter()
        with running(name, settings) as peer:
            startup_s = time.perf_counter() - began
            for prompt in warmup:  # connections, first-call allocations, thread pools
                asyncio.run(run_level(peer.base_url, [prompt], 1, args.peer_max_tokens))
            prefix = None
            if args.prefix_repeats:
                console.print(f"  repeated {args.prefix_tokens}-token prefix...")
                prefix = repeated_prefix(
                    peer.base_url, maker, args.peer_seed, args.prefix_tokens, args.prefix_repeats
                )
                console.print(f"  {prefix}")
            levels = []
            with Progress(*columns, BarColumn(), console=console) as progress:
                for c in args.peer_concurrency:
                    task = progress.add_task(f"{name} x{c}", total=len(prompt_sets[c]))
                    level = asyncio.run(
                        run_level(
                            peer.base_url,
                            prompt_sets[c],
                            c,
                            args.peer_max_tokens,
                            on_reply=lambda _, task=task: progress.advance(task),
                        )
                    )
                    levels.append(level.summary())
                    progress.console.print(f"  {_brief(levels[-1])}")
        results[name] = {
            "command": [
                "PORT" if part == str(peer.port) else _relative(part) for part in peer.command
            ],
            "startup_s": round(startup_s, 2),
            "levels": levels,
            "repeated_prefix": prefix,
        }
    return {
        "machine": machine(),
        "settings": {
            **_served_alike(settings),
            "concurrency": args.peer_concurrency,
            "requests_per_level": args.peer_requests,
            "max_tokens": args.peer_max_tokens,
            "greedy": True,
            "seed": args.peer_seed,
            "prompt_tokens": {
                "range": [50, 1500],
                "min": min(lengths),
                "median": statistics.median(lengths),
                "max": max(lengths),
                "sum_per_level": sum(lengths),
            },
            "prefix_tokens": args.prefix_tokens,
            "prefix_repeats": args.prefix_repeats,
        },
        "servers": results,
        "relaygraph_vs_llama_server": _ratios(results),
    }


def agents(args: argparse.Namespace, console: Any) -> dict[str, Any]:
    """The ``agents`` section: recorded agent conversations replayed against each server."""
    from _peer_servers import PeerSettings, running
    from _serving_load import AgentStep, agent_conversations, run_conversations

    settings = PeerSettings(gguf=args.gguf or _packaged_gguf())
    conversations = agent_conversations(AGENT_STEPS) * args.agent_repeats
    steps = sum(len(c) for c in conversations)
    results: dict[str, Any] = {}
    for name in args.peers:
        console.print(f"[bold]{name}[/]: starting")
        with running(name, settings) as peer:
            # Warm-up on a conversation of its own: connections and first-call allocations,
            # without caching any prompt the replay sends.
            warm = [[AgentStep(messages=[{"role": "user", "content": "Hello."}], max_tokens=8)]]
            asyncio.run(run_conversations(peer.base_url, warm, 1))
            levels = []
            for count in args.agents:
                level = asyncio.run(run_conversations(peer.base_url, conversations, count))
                levels.append(level.summary())
                console.print(f"  {count} agents: {levels[-1]['wall_s']} s, {_brief(levels[-1])}")
        results[name] = {"levels": levels}
    ratios = None
    if "relaygraph" in results and "llama-server" in results:
        ratios = [
            {
                "agents": ours["concurrency"],
                "wall_s": round(ours["wall_s"] / theirs["wall_s"], 3),
                "tokens_per_s": round(ours["tokens_per_s"] / theirs["tokens_per_s"], 3),
                "ttft_p50_ms": round(ours["ttft_p50_ms"] / theirs["ttft_p50_ms"], 3),
            }
            for ours, theirs in zip(
                results["relaygraph"]["levels"], results["llama-server"]["levels"], strict=True
            )
        ]
    return {
        "machine": machine(),
        "settings": {
            **_served_alike(settings),
            "agent_steps": str(AGENT_STEPS.relative_to(ROOT)),
            "conversations": len(conversations),
            "steps": steps,
            "repeats": args.agent_repeats,
            "agents": args.agents,
            "greedy": True,
        },
        "servers": results,
        "relaygraph_vs_llama_server": ratios,
    }


def _served_alike(settings: PeerSettings) -> dict[str, Any]:
    """What every server of a section gets alike, for the JSON."""
    return {
        "model": "smollm2-135m",
        "gguf": settings.gguf.name,
        "threads": settings.threads,
        "slots": settings.slots,
        "context_per_slot": settings.context_per_slot,
    }


def _packaged_gguf() -> Path:
    from relaygraph.llm.catalog import packaged_model

    return Path(packaged_model("smollm2-135m").locate())


def _relative(part: str) -> str:
    """A command-line part without this machine's paths (the JSON is committed)."""
    path = Path(part)
    if not path.is_absolute():
        return part
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


RATIO_KEYS = ("tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms")


def _ratios(results: dict[str, Any]) -> list[dict[str, Any]] | None:
    """relaygraph / llama-server per level (throughput: above 1 is better for relaygraph;
    latencies: below 1 is)."""
    if "relaygraph" not in results or "llama-server" not in results:
        return None
    rows = []
    for ours, theirs in zip(
        results["relaygraph"]["levels"], results["llama-server"]["levels"], strict=True
    ):
        row: dict[str, Any] = {"concurrency": ours["concurrency"]}
        for key in RATIO_KEYS:
            a, b = ours[key], theirs[key]
            row[key] = round(a / b, 3) if a is not None and b else None
        rows.append(row)
    return rows


def _brief(level: dict[str, Any]) -> str:
    return (
        f"x{level['concurrency']}: {level['tokens_per_s']} tok/s, "
        f"TTFT p50/p99 {level['ttft_p50_ms']}/{level['ttft_p99_ms']} ms, "
        f"ITL p50/p99 {level['itl_p50_ms']}/{level['itl_p99_ms']} ms, "
        f"{level['completion_tokens']} tokens ({level['tokens_from']}), "
        f"{level['errors']} errors"
    )


def plot_peers(section: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from relaygraph.fileio import save_figure

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, result in section["servers"].items():
        xs = [row["concurrency"] for row in result["levels"]]
        left.plot(xs, [row["tokens_per_s"] for row in result["levels"]], "o-", label=name)
        right.plot(xs, [row["ttft_p50_ms"] for row in result["levels"]], "o-", label=name)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(section["settings"]["concurrency"], section["settings"]["concurrency"])
        ax.set_xlabel("concurrent streams")
        ax.grid(alpha=0.3)
    left.set_ylabel("completion tokens / s (higher is better)")
    left.set_ylim(bottom=0)
    right.set_ylabel("time to first token p50, ms (lower is better)")
    right.set_yscale("log")
    left.legend()
    s = section["settings"]
    fig.suptitle(
        f"SmolLM2-135M, {s['threads']} threads, {s['slots']} slots, "
        f"prompts {s['prompt_tokens']['range'][0]}-{s['prompt_tokens']['range'][1]} tokens, "
        f"max_tokens {s['max_tokens']}"
    )
    save_figure(fig, path)


def main() -> None:
    from _peer_servers import PEERS, missing

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["own", "peers", "agents"], help="run one section")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    parser.add_argument("--peer-concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--peer-requests", type=int, default=64, help="per level")
    parser.add_argument("--peer-max-tokens", type=int, default=64)
    parser.add_argument("--peer-seed", type=int, default=0)
    parser.add_argument("--prefix-tokens", type=int, default=1200)
    parser.add_argument("--prefix-repeats", type=int, default=3, help="0 skips the test")
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--agent-repeats", type=int, default=2, help="passes over the steps")
    parser.add_argument("--gguf", type=Path, help="default: the packaged SmolLM2-135M")
    parser.add_argument("--out", type=Path, default=RESULTS / "serving.json")
    args = parser.parse_args()

    if args.only in (None, "peers", "agents"):  # before the `own` section's minutes
        problems = [f"{name}: {why}" for name in args.peers if (why := missing(name))]
        if problems:
            raise SystemExit("cannot run the peers section:\n" + "\n".join(problems))

    from rich.console import Console

    console = Console()
    # A one-section run keeps the other section's results from the last run.
    result: dict[str, Any] = {"benchmark": "serving"}
    if args.only and args.out.is_file():
        result = json.loads(args.out.read_text())
    if args.only in (None, "own"):
        console.print(f"zero-cost model, {args.requests} requests...")
        overhead = zero_cost(args.requests)
        console.print(overhead)
        console.print(
            f"SmolLM2 streaming, {args.levels} concurrent clients, {args.tokens} tokens each..."
        )
        rows = concurrency(args.tokens, args.levels)
        for row in rows:
            console.print(row)
        result |= {
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
        }
    if args.only in (None, "peers"):
        result["peers"] = peers(args, console)
        for row in result["peers"]["relaygraph_vs_llama_server"] or []:
            console.print(f"relaygraph / llama-server: {row}")
        figure = args.out.with_name(f"{args.out.stem}_peers.png")
        plot_peers(result["peers"], figure)
        console.print(f"wrote {figure}")
    if args.only in (None, "agents"):
        result["agents"] = agents(args, console)
        for row in result["agents"]["relaygraph_vs_llama_server"] or []:
            console.print(f"relaygraph / llama-server: {row}")
    write_json(args.out, result)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
