"""Load for benchmarks/serving.py's ``peers`` and ``agents`` sections: a seeded prompt set,
a closed-loop streaming client at a given concurrency, the repeated-prefix probe, and
recorded agent conversations replayed by concurrent agents.

Every server gets the same requests: greedy chat completions, the same ``max_tokens``,
no ``ignore_eos`` (each server stops where the model does). Tokens produced are what the
server's usage says (``stream_options.include_usage``), or its count of content chunks
where it sends no usage while streaming (llama_cpp.server); each level records which.

Metrics follow vLLM's ``benchmark_serving``: time to first token (request sent to first
content chunk), inter-token latency (the gaps between content chunks, every one of every
request, pooled), time per output token ((last chunk - first chunk) / (tokens - 1)), and
throughput (all completion tokens / the level's wall time).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

_FILLER = (
    "harbor lantern river meadow copper engine signal winter orchard ledger canvas "
    "granite falcon market bridge thunder pepper cabinet violin compass glacier "
    "ribbon mirror tunnel basket shadow planet whistle garden feather marble rocket "
    "candle island forest silver hammer pocket ladder window blanket butter camera "
    "dragon helmet jacket kettle lemon magnet needle oyster pillow quartz saddle "
    "teapot umbrella velvet wagon yogurt zipper anchor beacon cactus dolphin "
    "eclipse fossil geyser hollow igloo jigsaw kernel lagoon mosaic nectar "
    "observes carries builds measures follows repairs gathers paints counts "
    "quickly slowly gently loudly quietly early later often rarely always "
    "red green blue small large ancient modern bright dark heavy light warm cold"
)
WORDS = tuple(_FILLER.split())
"""The words the filler prompts are drawn from."""


@dataclass(frozen=True, slots=True)
class Prompt:
    text: str
    tokens: int
    """Tokens of ``text`` alone (the chat template adds its own around it)."""


class PromptMaker:
    """Deterministic filler text cut to an exact token count with the GGUF's tokenizer.

    llama.cpp's tokenizer through llama-cpp-python (vocabulary only), not relaygraph's: the
    prompt set must not depend on the engine under test.
    """

    def __init__(self, gguf: Path) -> None:
        from llama_cpp import Llama

        self._llama = Llama(str(gguf), vocab_only=True, verbose=False)

    def make(self, rng: random.Random, tokens: int, tail: str = "") -> Prompt:
        """About ``tokens`` tokens of seeded sentences, then ``tail`` (counted too)."""
        sentences: list[str] = []
        ids: list[int] = []
        tail_ids = self._tokenize(tail) if tail else []
        budget = max(1, tokens - len(tail_ids))
        while len(ids) < budget:  # grow in sentences; tokenize the whole once in a while
            for _ in range(16):
                words = rng.choices(WORDS, k=rng.randint(6, 16))
                sentences.append(" ".join(words).capitalize() + ".")
            ids = self._tokenize(" ".join(sentences))
        text = self._llama.detokenize(ids[:budget]).decode("utf-8", errors="ignore").strip()
        text = f"{text}{tail}"
        return Prompt(text=text, tokens=len(self._tokenize(text)))

    def _tokenize(self, text: str) -> list[int]:
        return list(self._llama.tokenize(text.encode(), add_bos=False, special=False))


def prompt_lengths(seed: int, count: int, low: int, high: int) -> list[int]:
    """``count`` prompt lengths drawn uniformly from [low, high]: one schedule for every
    server and every concurrency level."""
    rng = random.Random(seed)
    return [rng.randint(low, high) for _ in range(count)]


def prompt_set(maker: PromptMaker, seed: int, label: str, lengths: list[int]) -> list[Prompt]:
    """Prompts of the given lengths; ``label`` seeds the text, so each concurrency level
    sends new text (no server serves a level from its cache of the level before) while
    the lengths stay the same."""
    rng = random.Random(f"{seed}:{label}")
    tail = "\n\nSummarize these notes in a few sentences."
    return [maker.make(rng, n, tail) for n in lengths]


@dataclass(frozen=True, slots=True)
class Reply:
    """One streamed request as the client saw it."""

    ttft_s: float | None
    gaps_s: list[float]
    """Between consecutive content chunks."""
    chunks: int
    """Content-bearing chunks."""
    usage: dict[str, Any] | None
    latency_s: float
    error: str | None = None

    @property
    def tokens(self) -> int:
        if self.usage and isinstance(self.usage.get("completion_tokens"), int):
            return int(self.usage["completion_tokens"])
        return self.chunks


Messages = list[dict[str, str]]


def _body(prompt: str | Messages, max_tokens: int, *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": 0,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def stream_one(
    client: httpx.AsyncClient, base_url: str, prompt: str | Messages, max_tokens: int
) -> Reply:
    began = time.perf_counter()
    stamps: list[float] = []
    usage: dict[str, Any] | None = None
    try:
        async with client.stream(
            "POST", f"{base_url}/chat/completions", json=_body(prompt, max_tokens, stream=True)
        ) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")[:200]
                return Reply(None, [], 0, None, time.perf_counter() - began, f"{text!r}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank lines, SSE comments and pings
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                data = json.loads(payload)
                if "error" in data:
                    return Reply(None, [], 0, None, time.perf_counter() - began, str(data))
                choices = data.get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    stamps.append(time.perf_counter())
                if data.get("usage"):
                    usage = data["usage"]
    except (httpx.HTTPError, json.JSONDecodeError) as error:
        return Reply(None, [], 0, None, time.perf_counter() - began, repr(error))
    ended = time.perf_counter()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    ttft = stamps[0] - began if stamps else None
    return Reply(ttft, gaps, len(stamps), usage, ended - began)


@dataclass
class Level:
    """One concurrency level against one server."""

    concurrency: int
    replies: list[Reply] = field(default_factory=list)
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        ok = [r for r in self.replies if r.error is None]
        ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
        gaps = [g for r in ok for g in r.gaps_s]
        tpot = [
            (r.latency_s - r.ttft_s) / (r.tokens - 1)
            for r in ok
            if r.ttft_s is not None and r.tokens > 1
        ]
        tokens = sum(r.tokens for r in ok)
        prompt_tokens = [r.usage.get("prompt_tokens") for r in ok if r.usage]
        ms = 1e3
        return {
            "concurrency": self.concurrency,
            "requests": len(self.replies),
            "errors": len(self.replies) - len(ok),
            "first_error": next((r.error for r in self.replies if r.error), None),
            "wall_s": round(self.wall_s, 3),
            "completion_tokens": tokens,
            "tokens_from": "usage" if ok and all(r.usage for r in ok) else "chunks",
            "content_chunks": sum(r.chunks for r in ok),
            "prompt_tokens_reported": sum(p for p in prompt_tokens if isinstance(p, int))
            if prompt_tokens
            else None,
            "tokens_per_s": round(tokens / self.wall_s, 2) if self.wall_s else None,
            "requests_per_s": round(len(ok) / self.wall_s, 3) if self.wall_s else None,
            "ttft_p50_ms": _pct(ttft, 50, ms),
            "ttft_p99_ms": _pct(ttft, 99, ms),
            "itl_p50_ms": _pct(gaps, 50, ms),
            "itl_p99_ms": _pct(gaps, 99, ms),
            "tpot_p50_ms": _pct(tpot, 50, ms),
            "latency_p50_ms": _pct([r.latency_s for r in ok], 50, ms),
        }


def _pct(values: list[float], q: float, scale: float) -> float | None:
    return round(float(np.percentile(values, q)) * scale, 2) if values else None


async def run_level(
    base_url: str,
    prompts: list[Prompt],
    concurrency: int,
    max_tokens: int,
    on_reply: Callable[[Reply], None] = lambda _: None,
) -> Level:
    """All ``prompts`` through ``concurrency`` clients, each sending its next request when
    its last one ends (closed loop), in the prompts' order."""
    single_requests = [
        [AgentStep(messages=[{"role": "user", "content": p.text}], max_tokens=max_tokens)]
        for p in prompts
    ]
    return await run_conversations(base_url, single_requests, concurrency, on_reply)


@dataclass(frozen=True, slots=True)
class AgentStep:
    """One recorded model call of an agent: its chat messages and its token cap."""

    messages: Messages
    max_tokens: int


def agent_conversations(path: Path) -> list[list[AgentStep]]:
    """The agent steps recorded by benchmarks/speculative_loaded.py (HotPotQA and ALFWorld
    runs on SmolLM2), grouped by the item they came from, each group in step order.

    A step's recorded prefill (the start of the agent's reply) is left out: chat
    completions have no portable way to send one, and every server gets the same requests.
    """
    saved = json.loads(path.read_text())
    groups: dict[str, list[AgentStep]] = {}
    for step in saved["steps"]:
        groups.setdefault(step["group"], []).append(
            AgentStep(messages=step["messages"], max_tokens=step["max_tokens"])
        )
    return list(groups.values())


async def run_conversations(
    base_url: str,
    conversations: list[list[AgentStep]],
    concurrency: int,
    on_reply: Callable[[Reply], None] = lambda _: None,
) -> Level:
    """``concurrency`` agents sharing the server, each taking the next conversation and
    sending its steps one after another (a step when the last reply has ended), as
    agents do: their prompts grow by an observation and share the prefix before it."""
    pending = list(reversed(conversations))
    level = Level(concurrency)
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(900.0, connect=30.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:

        async def agent() -> None:
            while pending:
                for step in pending.pop():
                    reply = await stream_one(client, base_url, step.messages, step.max_tokens)
                    level.replies.append(reply)
                    on_reply(reply)

        began = time.perf_counter()
        await asyncio.gather(*(agent() for _ in range(concurrency)))
        level.wall_s = time.perf_counter() - began
    return level


def repeated_prefix(
    base_url: str, maker: PromptMaker, seed: int, prefix_tokens: int, repeats: int
) -> dict[str, Any]:
    """Two requests sharing a ~``prefix_tokens`` prefix, differing in the question at the
    end, one after the other on an idle server, ``repeats`` times with fresh prefixes.

    Non-streaming with ``max_tokens=1``, so latency is close to prompt processing, which a
    prefix cache shortens; the second reply's ``usage.prompt_tokens_details.cached_tokens``
    is recorded as the server reports it (None where it reports nothing).
    """
    rng = random.Random(f"{seed}:prefix")
    pairs = []
    with httpx.Client(timeout=300, trust_env=False) as client:
        for _ in range(repeats):
            prefix = maker.make(rng, prefix_tokens).text
            latencies, usages = [], []
            for question in ("Which object is named first?", "Which object is named last?"):
                body = _body(f"{prefix}\n\nQuestion: {question}", 1, stream=False)
                began = time.perf_counter()
                response = client.post(f"{base_url}/chat/completions", json=body)
                latencies.append(time.perf_counter() - began)
                response.raise_for_status()
                usages.append(response.json().get("usage") or {})
            details = usages[1].get("prompt_tokens_details") or {}
            pairs.append(
                {
                    "prompt_tokens": usages[1].get("prompt_tokens"),
                    "cached_tokens": details.get("cached_tokens"),
                    "first_ms": round(latencies[0] * 1e3, 2),
                    "second_ms": round(latencies[1] * 1e3, 2),
                    "second_usage": usages[1],  # as sent: servers differ in what they add
                }
            )
    return {
        "prefix_tokens": prefix_tokens,
        "max_tokens": 1,
        "pairs": pairs,
        "second_ms_p50": round(float(np.median([p["second_ms"] for p in pairs])), 2),
        "first_ms_p50": round(float(np.median([p["first_ms"] for p in pairs])), 2),
        "cached_tokens": [p["cached_tokens"] for p in pairs],
    }
