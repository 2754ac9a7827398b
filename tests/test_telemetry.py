"""OpenTelemetry export: the span tree and GenAI attributes of graph runs, cascades,
speculative decoding, evaluation items and served requests, read from an in-memory
exporter; and spans exported over OTLP/HTTP to a real collector (Arize Phoenix) and read
back from it."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from relaygraph import telemetry
from relaygraph.agents import Agent
from relaygraph.decoding import FixedWindow, PromptLookupDrafter, SpeculativeLLM
from relaygraph.errors import ConfigError
from relaygraph.eval.runner import run_suite
from relaygraph.graph import AgentGraph
from relaygraph.graph.results import StepEvent
from relaygraph.graph.runs import ItemRecord, RunManifest, RunStore
from relaygraph.graph.trace import Trace
from relaygraph.llm import LocalLLM
from relaygraph.llm.scripted import ScriptedLLM
from relaygraph.routing import Cascade, MeanLogprob, Rung
from relaygraph.routing.uncertainty import UncertaintyEstimate
from relaygraph.serving.server import BackgroundServer


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    telemetry.configure(memory, batch=False)
    yield memory
    telemetry.shutdown()


def lookup(key: str) -> str:
    """Look up a key."""
    return f"the value of {key} is 42"


def team(llm: ScriptedLLM | None = None) -> AgentGraph:
    def reply(prompt: object) -> str:
        text = str(prompt)
        if "You are solver" in text:
            return "Thought: the researcher found it\nAction: finish[42]"
        if "/observation]" in text:
            return "Thought: found\nAction: finish[x is 42]"
        return "Thought: look it up\nAction: lookup[x]"

    graph = AgentGraph("team", model=llm or ScriptedLLM(reply, name="scripted-7b"))
    graph.add_agent(Agent(name="researcher", role="researcher", tools=[lookup]))
    graph.add_agent(Agent(name="solver", role="solver"))
    return graph.add_edge("researcher", "solver").set_entry("researcher").set_finish("solver")


def by_name(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def events(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


def test_export_is_off_until_configured() -> None:
    telemetry.shutdown()
    assert not telemetry.enabled()
    with telemetry.span("nothing") as span:
        assert not span.is_recording()
    result = team().compile().invoke("What is x?")
    assert result.answer == "42"


def test_a_two_agent_run_is_a_tree_of_genai_spans(exporter: InMemorySpanExporter) -> None:
    result = team().compile().invoke("What is x?")
    assert result.answer == "42"
    spans = list(exporter.get_finished_spans())
    [run] = by_name(spans, "invoke_workflow team")
    steps = by_name(spans, "invoke_agent")
    chats = by_name(spans, "chat")
    [tool] = by_name(spans, "execute_tool")
    assert len({s.context.trace_id for s in spans if s.context}) == 1
    assert run.parent is None
    assert run.attributes is not None
    assert run.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert run.attributes["gen_ai.conversation.id"] == result.thread_id
    assert run.attributes["relaygraph.run_id"] == result.trace.run_id
    assert run.attributes["relaygraph.steps"] == len(result.trace.steps) == 3

    # one step span per trace step, each a child of the run, in order
    assert [s.attributes["gen_ai.agent.name"] for s in steps if s.attributes] == [
        "researcher",
        "researcher",
        "solver",
    ]
    assert all(parent_of(s) == span_id(run) for s in steps)
    for step, record in zip(steps, result.trace.steps, strict=True):
        attrs = step.attributes or {}
        assert attrs["gen_ai.operation.name"] == "invoke_agent"
        assert attrs["relaygraph.step"] == record.step
        assert attrs["gen_ai.usage.input_tokens"] == record.prompt_tokens
        assert attrs["relaygraph.budget.verdict"] == "ok"
        [context] = events(step, "relaygraph.context")
        assert list(context["relaygraph.context.items"]) == record.context.items
        costs = context["relaygraph.context.item_tokens"]
        # the item costs add up to what the record counted (one line break per item)
        assert sum(costs) - len(costs) <= record.context.tokens <= sum(costs)

    # a model call per step, a child of its step, with the conventions' attributes
    assert len(chats) == 3
    for chat, step in zip(chats, steps, strict=True):
        attrs = chat.attributes or {}
        assert parent_of(chat) == span_id(step)
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.request.model"] == attrs["gen_ai.response.model"] == "scripted-7b"
        assert attrs["gen_ai.usage.output_tokens"] > 0
        assert list(attrs["gen_ai.response.finish_reasons"]) == ["stop"]
        assert attrs["gen_ai.request.max_tokens"] > 0
        assert "gen_ai.input.messages" not in attrs  # content is opt-in

    # the tool call is a child of the step that made it
    assert parent_of(tool) == span_id(steps[0])
    assert tool.attributes is not None
    assert tool.attributes["gen_ai.tool.name"] == "lookup"
    assert tool.attributes["gen_ai.tool.call.id"] == "step-0"
    # the route after the researcher's turn is an event on its last step
    [route] = events(steps[1], "relaygraph.route")
    assert list(route["relaygraph.route.targets"]) == ["solver"]


def test_only_otlp_over_http_is_spoken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ConfigError, match="http/protobuf"):
        telemetry.configure(endpoint="http://127.0.0.1:4317")
    assert not telemetry.enabled()


def test_content_is_recorded_only_when_asked() -> None:
    memory = InMemorySpanExporter()
    telemetry.configure(memory, batch=False, record_content=True)
    try:
        team().compile().invoke("What is x?")
    finally:
        telemetry.shutdown()
    spans = list(memory.get_finished_spans())
    chat = by_name(spans, "chat")[0].attributes or {}
    assert "What is x?" in str(chat["gen_ai.input.messages"])
    assert "lookup[x]" in str(chat["gen_ai.output.messages"])
    tool = by_name(spans, "execute_tool")[0].attributes or {}
    assert tool["gen_ai.tool.call.result"] == "the value of x is 42"


def test_a_failed_run_marks_its_spans(exporter: InMemorySpanExporter) -> None:
    graph = AgentGraph("broken", model=ScriptedLLM(lambda prompt: "gibberish"))
    graph.add_agent(Agent(name="a", parse_retries=0)).set_entry("a").set_finish("a")
    result = graph.compile().invoke("task")
    assert result.error is not None
    spans = list(exporter.get_finished_spans())
    [run] = by_name(spans, "invoke_workflow")
    [step] = by_name(spans, "invoke_agent")
    for span in (run, step):
        assert span.status.status_code.name == "ERROR"
        assert (span.attributes or {})["error.type"] == result.error.kind


class Unsure:
    """An estimator that doubts every answer the same (a scripted model has no logprobs)."""

    name = "unsure"
    extra_calls = 0
    needs_logprobs = False

    def estimate(self, model: Any, prompt: Any, completion: Any, params: Any = None) -> Any:
        return UncertaintyEstimate(self.name, 0.9, 0.1, 0)


def test_a_run_left_mid_way_ends_its_span(exporter: InMemorySpanExporter) -> None:
    events = team().compile().stream("What is x?")
    first = next(events)
    assert isinstance(first, StepEvent)
    events.close()  # the consumer leaves after the first step
    spans = list(exporter.get_finished_spans())
    [run] = by_name(spans, "invoke_workflow team")
    assert len(by_name(spans, "invoke_agent")) == 1
    assert run.status.status_code.name == "ERROR"
    assert (run.attributes or {})["error.type"] == "GeneratorExit"


def test_a_cascade_reports_its_rungs(exporter: InMemorySpanExporter) -> None:
    small = ScriptedLLM(lambda prompt: "Paris, maybe", name="small")
    large = ScriptedLLM(lambda prompt: "Paris", name="large")
    doubting = Rung(small, Unsure(), threshold=0.5)
    graph = AgentGraph("routed")
    graph.add_agent(
        Agent(name="answerer", model=small, answer_format="plain",
              model_policy=Cascade([doubting, Rung(large)]))
    )  # fmt: skip
    graph.set_entry("answerer").set_finish("answerer")
    result = graph.compile().invoke("Capital of France?")
    assert result.answer == "Paris"
    [chat] = by_name(list(exporter.get_finished_spans()), "chat")
    attrs = chat.attributes or {}
    assert attrs["gen_ai.request.model"] == "small"
    assert attrs["gen_ai.response.model"] == "large"
    assert attrs["relaygraph.model.policy"] == "cascade"
    assert attrs["relaygraph.cascade.rungs"] == 2
    first, last = events(chat, "relaygraph.cascade.rung")
    assert first["relaygraph.cascade.model"] == "small"
    assert first["relaygraph.cascade.decision"] == "escalate"
    assert first["relaygraph.cascade.estimator"] == "unsure"
    assert first["relaygraph.cascade.score"] == 0.9
    assert first["relaygraph.cascade.threshold"] == 0.5
    assert last["relaygraph.cascade.decision"] == "final"


class OneGraphSuite:
    """A suite of two items, each one run of the scripted team."""

    name = "tiny"
    headline = "EM"

    def item_id(self, item: str) -> str:
        return item

    def groups(self, item: str) -> dict[str, str]:
        return {"type": "bridge"}

    def run(self, item: str) -> tuple[ItemRecord, Trace | None]:
        result = team().compile().invoke(f"What is {item}?")
        record = ItemRecord(id=item, success=float(result.answer == "42"), steps=3)
        return record, result.trace


def test_each_evaluation_item_is_a_span_over_its_run(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    manifest = RunManifest(
        suite="tiny", headline="EM", dataset="t", fingerprint="f", items=2, graph="team",
        model="scripted", seed=0,
    )  # fmt: skip
    store = RunStore.open(tmp_path / "run", manifest, resume=False)
    run_suite(OneGraphSuite(), ["x", "y"], store, show_progress=False)
    spans = list(exporter.get_finished_spans())
    items = by_name(spans, "evaluate tiny")
    runs = by_name(spans, "invoke_workflow")
    assert len(items) == len(runs) == 2
    assert {parent_of(r) for r in runs} == {span_id(i) for i in items}
    for item in items:
        attrs = item.attributes or {}
        assert attrs["relaygraph.eval.group.type"] == "bridge"
        [score] = events(item, "gen_ai.evaluation.result")
        assert score == {"gen_ai.evaluation.name": "EM", "gen_ai.evaluation.score.value": 1.0}


def wait_for(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    """The finished spans once one named ``prefix`` is among them (the server thread ends
    its request's span just after the response is sent)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        spans = list(exporter.get_finished_spans())
        if by_name(spans, prefix):
            return spans
        time.sleep(0.02)
    raise AssertionError(f"no span {prefix!r} was exported")


@pytest.mark.server
def test_the_server_continues_the_callers_trace(exporter: InMemorySpanExporter) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with BackgroundServer({"team": team().compile()}) as server:
        response = httpx.post(
            f"{server.base_url}/chat/completions",
            json={"model": "team", "messages": [{"role": "user", "content": "What is x?"}]},
            headers={"traceparent": f"00-{trace_id}-{parent}-01"},
            timeout=30,
        )
        spans = wait_for(exporter, "POST /v1/chat/completions")
    assert response.status_code == 200, response.text
    version, answered_trace, answered_span, flags = response.headers["traceresponse"].split("-")
    assert (version, answered_trace, flags) == ("00", trace_id, "01")
    [request] = by_name(spans, "POST /v1/chat/completions")
    [run] = by_name(spans, "invoke_workflow team")
    assert f"{span_id(request):016x}" == answered_span
    assert parent_of(request) == int(parent, 16)
    assert parent_of(run) == span_id(request)
    assert all(f"{s.context.trace_id:032x}" == trace_id for s in spans if s.context)
    assert (request.attributes or {})["http.response.status_code"] == 200
    # the run's id is still the relaygraph trace the response names
    assert response.json()["relaygraph"]["trace_id"] == (run.attributes or {})["relaygraph.run_id"]


@pytest.mark.server
def test_a_streamed_graph_run_joins_the_callers_trace(exporter: InMemorySpanExporter) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    with BackgroundServer({"team": team().compile()}) as server:
        with httpx.stream(
            "POST",
            f"{server.base_url}/chat/completions",
            json={
                "model": "team",
                "stream": True,
                "messages": [{"role": "user", "content": "What is x?"}],
            },
            headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
            timeout=30,
        ) as response:
            body = response.read().decode()
        spans = wait_for(exporter, "POST /v1/chat/completions")
    assert response.status_code == 200 and "[DONE]" in body
    assert response.headers["traceresponse"].split("-")[1] == trace_id
    [request] = by_name(spans, "POST /v1/chat/completions")
    [run] = by_name(spans, "invoke_workflow team")
    assert parent_of(run) == span_id(request)
    assert len(by_name(spans, "invoke_agent")) == 3
    assert all(f"{s.context.trace_id:032x}" == trace_id for s in spans if s.context)


@pytest.mark.server
def test_a_served_model_answers_in_a_model_span(exporter: InMemorySpanExporter) -> None:
    small = ScriptedLLM(lambda prompt: "Paris", name="small")
    with BackgroundServer({"small": small}) as server:
        chat = httpx.post(
            f"{server.base_url}/chat/completions",
            json={"model": "small", "messages": [{"role": "user", "content": "Capital?"}]},
            timeout=30,
        )
        spans = wait_for(exporter, "POST /v1/chat/completions")
        exporter.clear()
        text = httpx.post(
            f"{server.base_url}/completions",
            json={"model": "small", "prompt": "Capital of France?", "max_tokens": 8},
            timeout=30,
        )
        spans += wait_for(exporter, "POST /v1/completions")
    assert chat.status_code == text.status_code == 200, (chat.text, text.text)
    for route, operation in (("chat/completions", "chat"), ("completions", "text_completion")):
        [request] = by_name(spans, f"POST /v1/{route}")
        [call] = by_name(spans, f"{operation} small")
        assert parent_of(call) == span_id(request)
        attrs = call.attributes or {}
        assert attrs["gen_ai.operation.name"] == operation
        assert attrs["gen_ai.response.model"] == "small"
        assert attrs["gen_ai.usage.output_tokens"] == 1
    assert (by_name(spans, "text_completion")[0].attributes or {})["gen_ai.request.max_tokens"] == 8


@pytest.mark.server
def test_a_served_cascade_reports_its_rungs(exporter: InMemorySpanExporter) -> None:
    small = ScriptedLLM(lambda prompt: "Paris, maybe", name="small")
    large = ScriptedLLM(lambda prompt: "Paris", name="large")
    routed = Cascade([Rung(small, Unsure(), threshold=0.5), Rung(large)])
    with BackgroundServer({"routed": routed}) as server:
        response = httpx.post(
            f"{server.base_url}/chat/completions",
            json={"model": "routed", "messages": [{"role": "user", "content": "Capital?"}]},
            timeout=30,
        )
        spans = wait_for(exporter, "POST /v1/chat/completions")
    assert response.json()["relaygraph"]["answered_by"] == "large"
    [chat] = by_name(spans, "chat routed")
    attrs = chat.attributes or {}
    assert attrs["gen_ai.request.model"] == "routed"
    assert attrs["gen_ai.response.model"] == "large"
    assert [e["relaygraph.cascade.decision"] for e in events(chat, "relaygraph.cascade.rung")] == [
        "escalate",
        "final",
    ]


@pytest.mark.slow
def test_spans_of_a_real_model_with_speculative_decoding_and_a_cascade(
    exporter: InMemorySpanExporter, smollm2: LocalLLM
) -> None:
    speculative = SpeculativeLLM(PromptLookupDrafter(), smollm2, FixedWindow(4), tokenizer=smollm2)
    graph = AgentGraph("real", max_steps=4)
    graph.add_agent(Agent(name="drafter", model=speculative, answer_format="plain", max_tokens=16))
    graph.add_agent(
        Agent(name="answerer", model=smollm2, answer_format="plain", max_tokens=8,
              model_policy=Cascade([Rung(smollm2, MeanLogprob(), threshold=math.inf),
                                    Rung(smollm2)]))
    )  # fmt: skip
    graph.add_edge("drafter", "answerer").set_entry("drafter").set_finish("answerer")
    result = graph.compile().invoke("Repeat after me: the river Seine flows through Paris.")
    assert result.error is None, result.error
    spans = list(exporter.get_finished_spans())
    drafted, answered = by_name(spans, "chat")
    attrs = drafted.attributes or {}
    assert attrs["gen_ai.response.model"] == speculative.name
    assert attrs["relaygraph.decoding.decoder"] == "speculative"
    assert attrs["relaygraph.decoding.rounds"] >= 1
    assert len(attrs["relaygraph.decoding.windows"]) == attrs["relaygraph.decoding.rounds"]
    assert 0 < attrs["gen_ai.usage.output_tokens"] <= 16
    attrs = answered.attributes or {}
    assert attrs["gen_ai.response.model"] == "smollm2-135m"
    assert attrs["gen_ai.usage.input_tokens"] > 0
    [rung] = events(answered, "relaygraph.cascade.rung")
    assert rung["relaygraph.cascade.decision"] == "accept"
    assert rung["relaygraph.cascade.estimator"] == "mean_logprob"
    [run] = by_name(spans, "invoke_workflow")
    assert (run.attributes or {})["gen_ai.usage.output_tokens"] == sum(
        s.completion_tokens for s in result.trace.steps
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def phoenix(tmp_path: Path) -> Iterator[str]:
    """Arize Phoenix (a real OTLP collector and trace store) on a free loopback port."""
    port = free_port()
    env = os.environ | {
        "PHOENIX_WORKING_DIR": str(tmp_path / "phoenix"),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(free_port()),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    phoenix_bin = Path(sys.executable).parent / "phoenix"
    log = (tmp_path / "phoenix.log").open("w")
    process = subprocess.Popen([str(phoenix_bin), "serve"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"Phoenix did not start: {(tmp_path / 'phoenix.log').read_text()}"
                )
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


RUN_FROM_ENVIRONMENT = """
from relaygraph.agents import Agent
from relaygraph.graph import AgentGraph
from relaygraph.llm.scripted import ScriptedLLM

graph = AgentGraph("exported", model=ScriptedLLM(["Thought: easy\\nAction: finish[4]"]))
graph.add_agent(Agent(name="solver")).set_entry("solver").set_finish("solver")
print(graph.compile().invoke("What is 2 + 2?").trace.run_id)
"""


@pytest.mark.slow
@pytest.mark.server
def test_spans_reach_a_real_otlp_collector(phoenix: str) -> None:
    # The standard variables alone turn export on; the process flushes its spans at exit.
    env = os.environ | {
        "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix,
        "OTEL_SERVICE_NAME": "relaygraph-test",
    }
    done = subprocess.run(
        [sys.executable, "-c", RUN_FROM_ENVIRONMENT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    run_id = done.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 30
    while True:
        response = httpx.get(f"{phoenix}/v1/projects/default/spans", timeout=10)
        spans = response.json()["data"] if response.status_code == 200 else []
        if len(spans) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    named = {s["name"]: s for s in spans}
    assert set(named) == {"invoke_workflow exported", "invoke_agent solver", "chat scripted"}
    run, step, chat = (
        named["invoke_workflow exported"],
        named["invoke_agent solver"],
        named["chat scripted"],
    )
    assert run["attributes"]["relaygraph.run_id"] == run_id
    assert step["parent_id"] == run["context"]["span_id"]
    assert chat["parent_id"] == step["context"]["span_id"]
    assert chat["attributes"]["gen_ai.operation.name"] == "chat"
    assert chat["attributes"]["gen_ai.usage.output_tokens"] > 0
    assert len({s["context"]["trace_id"] for s in spans}) == 1
