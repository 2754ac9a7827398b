"""Graph runtime overhead: relaygraph vs the same model calls in a plain LangGraph graph.

relaygraph runs a graph while a recording wrapper logs every model call it makes
(generation and scoring). A plain LangGraph `StateGraph` then replays exactly those calls,
one node execution per step, with nothing else. The difference in wall time per step is
what relaygraph adds: context routing (token counting of every item), prompt building,
parsing, budget checks, trace records and its richer state.

Two settings:
- zero-cost model (`ScriptedLLM`): the model costs ~nothing, so the difference is the
  absolute overhead per step (goal: under 1 ms);
- SmolLM2-135M on the research-team example: the overhead as a share of a step (goal:
  under 2%).

A third measures OpenTelemetry export (`relaygraph.telemetry`) on the zero-cost model:
the same graph run with export off and on, interleaved, exporting over OTLP/HTTP in
batches to a local sink that accepts and drops them (the serialisation and the HTTP
posts happen, on the exporter's thread, as they would against a collector); and the
cost of the hooks a step passes with export off, timed alone. ``--only telemetry``
measures this alone and updates that section of the existing results file.

Usage: python benchmarks/runtime.py [--repeats 30] [--real-repeats 3] [--only telemetry]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypedDict

from _common import RESULTS, machine, write_json
from langgraph.graph import END, START, StateGraph

from relaygraph import telemetry
from relaygraph.agents import Agent
from relaygraph.agents.spans import chat_span, tool_span
from relaygraph.graph import AgentGraph
from relaygraph.graph.loader import load_factory
from relaygraph.graph.spans import step_span
from relaygraph.llm import LLM, BaseLLM, LocalLLM
from relaygraph.llm.scripted import ScriptedLLM
from relaygraph.llm.types import ChatPrompt, GenerationParams, Prompt, PromptInput

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
Call = tuple[str, tuple[Any, ...]]


class Recording(BaseLLM):
    """Delegates to a model and records each generation and scoring call."""

    def __init__(self, inner: LLM) -> None:
        self.inner = inner
        self.calls: list[Call] = []

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def context_window(self) -> int:
        return self.inner.context_window

    def complete(self, prompt: PromptInput | Prompt, params: Any = None) -> Any:
        self.calls.append(("complete", (prompt, params)))
        return self.inner.complete(prompt, params)

    def stream(self, prompt: PromptInput | Prompt, params: Any = None) -> Iterator[Any]:
        self.calls.append(("complete", (prompt, params)))
        return self.inner.stream(prompt, params)

    def score(self, prompt: PromptInput | Prompt, continuation: Any, top_logprobs: int = 0) -> Any:
        self.calls.append(("score", (prompt, continuation, top_logprobs)))
        return self.inner.score(prompt, continuation, top_logprobs)

    def encode(self, prompt: PromptInput | Prompt) -> list[int]:
        return self.inner.encode(prompt)

    def tokenize(self, text: str) -> list[int]:
        return self.inner.tokenize(text)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self.inner.detokenize(token_ids)


class ReplayState(TypedDict):
    index: int


def plain_langgraph(llm: LLM, calls: list[Call]) -> Callable[[], None]:
    """A LangGraph graph whose one node makes the next recorded call, until none are left."""

    def node(state: ReplayState) -> dict[str, int]:
        kind, args = calls[state["index"]]
        getattr(llm, kind)(*args)
        return {"index": state["index"] + 1}

    builder: StateGraph[ReplayState] = StateGraph(ReplayState)
    builder.add_node("call", node)
    builder.add_edge(START, "call")
    builder.add_conditional_edges(
        "call", lambda s: "call" if s["index"] < len(calls) else END, ["call", END]
    )
    graph = builder.compile()
    limit = len(calls) + 5
    return lambda: graph.invoke({"index": 0}, {"recursion_limit": limit})


def scripted_reply(prompt: Prompt) -> str:
    assert isinstance(prompt, ChatPrompt)
    seen = prompt.messages[-1].content.count("/observation]")
    if seen < 7:
        return f"Thought: step {seen}\nAction: lookup[{seen}]"
    return "Thought: done\nAction: finish[all done]"


def lookup(key: int) -> str:
    """Look up a key."""
    return f"value {key}"


def zero_cost_graph(llm: LLM) -> AgentGraph:
    graph = AgentGraph("zero-cost", model=llm, max_steps=20)
    graph.add_agent(Agent(name="worker", role="executor", tools=[lookup], max_steps=10))
    return graph.set_entry("worker").set_finish("worker")


def measure(
    build: Callable[[LLM], AgentGraph],
    model: LLM,
    tasks: list[str],
    repeats: int,
    reset: Callable[[], None],
) -> dict[str, Any]:
    """Median wall time per step of relaygraph and of the plain replay, interleaved."""
    ours: list[float] = []
    theirs: list[float] = []
    model_s: list[float] = []
    steps_per_run: list[int] = []

    def relaygraph_run(task: str) -> tuple[float, Any, list[Call]]:
        recorder = Recording(model)
        compiled = build(recorder).compile()
        reset()
        began = time.perf_counter()
        result = compiled.invoke(task)
        return time.perf_counter() - began, result, recorder.calls

    def replay_run(calls: list[Call]) -> float:
        replay = plain_langgraph(model, calls)
        reset()
        began = time.perf_counter()
        replay()
        return time.perf_counter() - began

    # Warm-up: the first decode pages the model's weights in; measure neither side cold.
    replay_run(relaygraph_run(tasks[0])[2])
    for repeat in range(repeats):
        for task in tasks:
            wall, result, calls = relaygraph_run(task)
            plain = replay_run(calls)
            if repeat % 2:  # alternate which side runs first (cache and frequency effects)
                plain = replay_run(calls)
                wall, result, _ = relaygraph_run(task)
            steps = len(result.trace.steps)
            ours.append(wall / steps)
            theirs.append(plain / steps)
            model_s.append(sum(s.latency_s for s in result.trace.steps) / steps)
            steps_per_run.append(steps)
    step_ours, step_plain = statistics.median(ours), statistics.median(theirs)
    overhead = [a - b for a, b in zip(ours, theirs, strict=True)]
    return {
        "runs": len(ours),
        "steps_per_run": statistics.median(steps_per_run),
        "relaygraph_ms_per_step": round(step_ours * 1e3, 3),
        "plain_langgraph_ms_per_step": round(step_plain * 1e3, 3),
        "overhead_ms_per_step": round(statistics.median(overhead) * 1e3, 3),
        "overhead_pct_of_step": round(statistics.median(overhead) / step_ours * 100, 2),
        "model_ms_per_step": round(statistics.median(model_s) * 1e3, 3),
    }


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts every export and keeps nothing."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a line per export would bury the benchmark's output."""


def measure_telemetry(repeats: int) -> dict[str, Any]:
    """Median ms per step of the zero-cost graph with export off and on, interleaved;
    and the no-op hooks of one step with export off, in microseconds."""
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}/v1/traces"
    off: list[float] = []
    on: list[float] = []
    spans_per_run = 0

    def run(export: bool) -> float:
        nonlocal spans_per_run
        compiled = zero_cost_graph(ScriptedLLM(scripted_reply)).compile()
        provider = telemetry.configure(endpoint=endpoint) if export else None
        began = time.perf_counter()
        result = compiled.invoke("collect values")
        wall = time.perf_counter() - began
        if provider is not None:
            provider.force_flush()
            telemetry.shutdown()
        steps = len(result.trace.steps)
        spans_per_run = 1 + steps * 2 + sum(1 for s in result.trace.steps if s.observation)
        return wall / steps

    telemetry.shutdown()
    run(False), run(True)  # warm-up
    for repeat in range(repeats):
        order = (True, False) if repeat % 2 else (False, True)
        for export in order:
            (on if export else off).append(run(export))
    sink.shutdown()

    # The hooks a step passes with export off: its step, model and tool spans.
    telemetry.shutdown()
    params, config = GenerationParams(), {"configurable": {"thread_id": "t"}}
    hooks = 10_000
    began = time.perf_counter()
    for _ in range(hooks):
        with step_span("a", "r", config), chat_span("m", params), tool_span("t", "1", None):
            pass
    hook_us = (time.perf_counter() - began) / hooks * 1e6
    step_off, step_on = statistics.median(off), statistics.median(on)
    return {
        "runs": len(off),
        "spans_per_run": spans_per_run,
        "export_off_ms_per_step": round(step_off * 1e3, 3),
        "export_on_ms_per_step": round(step_on * 1e3, 3),
        "export_overhead_ms_per_step": round((step_on - step_off) * 1e3, 3),
        "export_overhead_pct_of_step": round((step_on - step_off) / step_off * 100, 2),
        "off_hooks_us_per_step": round(hook_us, 3),
        "off_hooks_pct_of_step": round(hook_us / (step_off * 1e6) * 100, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--real-repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "runtime.json")
    parser.add_argument("--only", choices=["all", "telemetry"], default="all")
    args = parser.parse_args()

    from rich.console import Console

    console = Console()
    console.print(f"OpenTelemetry export, zero-cost model, {args.repeats} runs off and on...")
    traced = measure_telemetry(args.repeats) | {"machine": machine()}
    console.print(traced)
    if args.only == "telemetry":
        results = json.loads(args.out.read_text())
        write_json(args.out, results | {"telemetry": traced})
        console.print(f"updated {args.out}")
        return
    console.print(f"zero-cost model, {args.repeats} runs of 8 steps...")
    zero = measure(
        zero_cost_graph, ScriptedLLM(scripted_reply), ["collect values"], args.repeats, lambda: None
    )
    console.print(zero)

    console.print(f"SmolLM2-135M, research-team example, {args.real_repeats} x 3 questions...")
    sys.path.insert(0, str(EXAMPLES))
    from research_team import QUESTIONS

    smol = LocalLLM.load("smollm2-135m")

    build_team = load_factory(f"{EXAMPLES / 'research_team.py'}:build")

    def team(llm: LLM) -> AgentGraph:
        graph: AgentGraph = build_team(model=llm)  # AgentGraph takes a name or an LLM
        return graph

    real = measure(team, smol, QUESTIONS, args.real_repeats, smol.clear_cache)
    console.print(real)
    write_json(
        args.out,
        {
            "benchmark": "runtime",
            "machine": machine(),
            "settings": {
                "zero_cost_repeats": args.repeats,
                "real_repeats": args.real_repeats,
                "real_model": "smollm2-135m",
                "real_graph": "examples/research_team.py",
            },
            "zero_cost_model": zero,
            "smollm2_research_team": real,
            "telemetry": traced,
        },
    )
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
