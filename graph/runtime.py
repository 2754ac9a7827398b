"""`CompiledAgentGraph`: a compiled LangGraph `StateGraph` with one node per agent.

Each agent step is one LangGraph super-step, so a checkpointer saves the run after every
step: a run killed mid-graph resumes from its last completed step. An agent's node
(`relaygraph.graph.nodes`) runs one ReAct step; while the agent's turn is not finished,
the node routes back to itself; when it is, the node decides where the graph goes next
(static edges, a condition, or the end) and records why. This module runs the graph:
invoke, stream, resume, and what a run may be asked for (tools, an answer format). Users
who know LangGraph reach the compiled graph as ``compiled.langgraph`` and the builder as
``compiled.state_graph``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any, cast

from langgraph.errors import GraphRecursionError
from langgraph.graph import START, StateGraph

from relaygraph import telemetry
from relaygraph.agents.record import StepRecord
from relaygraph.errors import ConfigError
from relaygraph.graph.builder import END
from relaygraph.graph.checkpoints import Checkpointer, Closeable, open_checkpointer
from relaygraph.graph.nodes import STREAM_TOKENS, AgentNodes
from relaygraph.graph.results import ResultEvent, RunEvent, RunResult, StepEvent, TokenEvent
from relaygraph.graph.spans import finish_run, run_span
from relaygraph.graph.state import RunState, initial_state
from relaygraph.graph.trace import Route, RunFailure, Trace
from relaygraph.llm.constraints import JsonObjectFormat, JsonSchemaFormat
from relaygraph.llm.local import LocalLLM
from relaygraph.llm.types import GenerationParams

if TYPE_CHECKING:
    from collections.abc import Collection, Generator, Iterator

    from langchain_core.runnables import RunnableConfig

    from relaygraph.agents.agent import BoundAgent
    from relaygraph.graph.budget import Budget
    from relaygraph.graph.builder import Condition
    from relaygraph.memory import Memory

AnswerFormat = JsonSchemaFormat | JsonObjectFormat
"""A run's format for its answer: a JSON schema, or any JSON object."""


class CompiledAgentGraph:
    """A runnable agent graph: `invoke`, `stream`, `ainvoke`, `resume`.

    Built by `AgentGraph.compile()`; close it (or use it as a context manager) to close
    its sqlite checkpoint file, and whatever it was given to close (`close_with`).
    """

    def __init__(
        self,
        *,
        name: str,
        agents: dict[str, BoundAgent],
        edges: dict[str, list[str]],
        conditions: dict[str, Condition],
        entry: str,
        finish: set[str],
        max_steps: int | None,
        budget: Budget,
        checkpointer: Checkpointer,
        memory: Memory | None = None,
    ) -> None:
        self.name = name
        self.agents = agents
        self.max_steps = max_steps
        self.budget = budget
        self.memory = memory
        self._nodes = AgentNodes(
            agents=agents,
            edges=edges,
            conditions=conditions,
            finish=finish,
            max_steps=max_steps,
            budget=budget,
            memory=memory,
        )
        builder: StateGraph[RunState] = StateGraph(RunState)
        for agent_name, bound in agents.items():
            builder.add_node(agent_name, self._nodes.node(bound))
        builder.add_edge(START, entry)
        for agent in agents:
            builder.add_conditional_edges(agent, self._nodes.router(agent), [*agents, END])
        self.state_graph = builder
        saver, conn = open_checkpointer(checkpointer)
        self._owned: list[Closeable] = [] if conn is None else [conn]
        self.langgraph = builder.compile(checkpointer=saver, name=name)
        self.durable = saver is not None

    # -- lifecycle --------------------------------------------------------------------

    def close_with(self, resource: Closeable) -> None:
        """Close ``resource`` when this graph closes: something opened for this graph
        alone, such as the shared memory a server's config names for it."""
        self._owned.append(resource)

    def close(self) -> None:
        """Close the checkpoint file or database connection this graph opened (if any)
        and what `close_with` gave it, newest first."""
        while self._owned:
            self._owned.pop().close()

    def __enter__(self) -> CompiledAgentGraph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running ----------------------------------------------------------------------

    def _config(self, thread_id: str, *, tokens: bool) -> RunnableConfig:
        limit = (self.max_steps or 10_000) + 2
        return {
            "configurable": {"thread_id": thread_id, STREAM_TOKENS: tokens},
            "recursion_limit": limit,
        }

    @property
    def tool_names(self) -> list[str]:
        """Every tool any agent of the graph can use."""
        return sorted({t for agent in self.agents.values() for t in agent.tools})

    def check_tools(self, tools: Collection[str] | None) -> list[str] | None:
        """The tools a run may use, sorted (None: all); unknown names are a ConfigError."""
        if tools is None:
            return None
        unknown = sorted(set(tools) - set(self.tool_names))
        if unknown:
            raise ConfigError(
                f"graph {self.name!r} has no tool {unknown[0]!r}; its tools: {self.tool_names}",
                parameter="tools",
                value=unknown[0],
            )
        return sorted(tools)

    def check_answer_format(self, fmt: AnswerFormat | None) -> JsonSchemaFormat | None:
        """The format the finishing agents' answers take in a run, as a JSON schema.

        A graph's answer is what its finishing agents say, so a run's format binds them,
        in place of their own ``output_schema``; like OpenAI's structured outputs, the
        schema's root is an object.

        Raises:
            ConfigError: The graph has no finishing agent, the root is not an object, or a
                finishing agent's embedded model cannot decode under the schema.
        """
        if fmt is None:
            return None
        if isinstance(fmt, JsonObjectFormat):
            fmt = JsonSchemaFormat(json_schema={"type": "object"}, name="json_object")
        if not self._nodes.finish:
            raise ConfigError(
                f"graph {self.name!r} has no finishing agent to give its answer a format",
                parameter="response_format",
            )
        if fmt.json_schema.get("type") != "object":
            raise ConfigError(
                "a graph's answer format must be a JSON schema whose root is an object "
                '({"type": "object", ...})',
                parameter="response_format",
            )
        for name in sorted(self._nodes.finish):
            llm = self.agents[name].llm
            if isinstance(llm, LocalLLM):  # a schema the grammar cannot hold fails now
                llm.compile_constraints(GenerationParams(response_format=fmt), chat=True)
        return fmt

    def _events(
        self,
        task: str | None,
        thread_id: str,
        *,
        tokens: bool,
        tools: Collection[str] | None = None,
        answer_format: AnswerFormat | None = None,
    ) -> Iterator[RunEvent]:
        config = self._config(thread_id, tokens=tokens)
        payload: Any = None
        if task is not None:
            fmt = self.check_answer_format(answer_format)
            payload = initial_state(
                uuid.uuid4().hex,
                task,
                self.check_tools(tools),
                fmt.model_dump(mode="json") if fmt else None,
            )
        span = run_span(self.name, thread_id)
        try:
            values = yield from self._stream_values(payload, config, span, tokens=tokens)
            if values is None:
                raise ConfigError(f"thread {thread_id!r} has no state to return")
            result = self._result(values, thread_id)
            finish_run(span, result)
        except BaseException as exc:  # the run raised, or its consumer left mid-run
            telemetry.fail(span, type(exc).__name__, str(exc))
            raise
        finally:
            span.end()
        yield ResultEvent(result=result)

    def _stream_values(
        self, payload: Any, config: RunnableConfig, span: telemetry.Span, *, tokens: bool
    ) -> Generator[RunEvent, None, dict[str, Any] | None]:
        """Run LangGraph, yielding step and token events; return the run's last state."""
        values: dict[str, Any] | None = None
        try:
            # "sync": each step's checkpoint is written before the next step starts, so a
            # killed process loses at most the step that was running.
            stream = self.langgraph.stream(
                payload,
                config,
                # "custom" carries token events; subscribing costs ~0.8 ms a step, so
                # only when tokens were asked for.
                stream_mode=["updates", "values", "custom"] if tokens else ["updates", "values"],
                durability="sync" if self.durable else None,
            )
            # Steps run inside the run's span, so their spans are its children.
            steps = cast("Iterator[tuple[str, Any]]", stream)
            for mode, data in telemetry.iterate_within(span, steps):
                if mode == "values":
                    values = data
                elif mode == "custom":
                    yield TokenEvent(agent=data["agent"], text=data["text"])
                else:
                    for update in data.values():
                        for record in (update or {}).get("records", []):
                            yield StepEvent(record=StepRecord.model_validate(record))
        except GraphRecursionError:
            values = dict(self.langgraph.get_state(config).values) if self.durable else values
            if values is not None:
                values["error"] = {
                    "kind": "step_limit",
                    "message": "LangGraph's recursion limit was reached",
                    "agent": None,
                }
        return values

    def _result(self, values: dict[str, Any], thread_id: str) -> RunResult:
        error = RunFailure.model_validate(values["error"]) if values.get("error") else None
        trace = Trace(
            run_id=values["run_id"],
            thread_id=thread_id,
            graph=self.name,
            task=values["task"],
            answer=values.get("answer"),
            error=error,
            steps=[StepRecord.model_validate(r) for r in values["records"]],
            routes=[Route.model_validate(r) for r in values["routes"]],
        )
        return RunResult(
            thread_id=thread_id,
            answer=values.get("answer"),
            answers=values.get("answers", {}),
            structured=values.get("structured", {}),
            error=error,
            trace=trace,
        )

    def invoke(
        self,
        task: str,
        *,
        thread_id: str | None = None,
        tools: Collection[str] | None = None,
        answer_format: AnswerFormat | None = None,
    ) -> RunResult:
        """Run the graph on a task to its end (answer or structured error).

        ``tools`` restricts the run to these of the agents' tools (None: all of them);
        ``answer_format`` is the JSON schema the finishing agents' answers follow in this
        run (see `check_answer_format`).

        Raises:
            ConfigError: An empty task, a tool no agent has, or an answer format the
                graph cannot follow.
        """
        if not task.strip():
            raise ConfigError("task is empty", parameter="task")
        events = self._events(
            task,
            thread_id or uuid.uuid4().hex,
            tokens=False,
            tools=tools,
            answer_format=answer_format,
        )
        *_, last = events
        assert isinstance(last, ResultEvent)  # _events always ends with the result
        return last.result

    def stream(
        self,
        task: str,
        *,
        thread_id: str | None = None,
        tokens: bool = False,
        tools: Collection[str] | None = None,
        answer_format: AnswerFormat | None = None,
    ) -> Iterator[RunEvent]:
        """Run the graph, yielding a `StepEvent` per step, `TokenEvent`s when ``tokens``,
        and the `ResultEvent` last (``tools`` and ``answer_format`` as in `invoke`)."""
        if not task.strip():
            raise ConfigError("task is empty", parameter="task")
        self.check_tools(tools)  # fail now, not at the first next()
        self.check_answer_format(answer_format)
        return self._events(
            task,
            thread_id or uuid.uuid4().hex,
            tokens=tokens,
            tools=tools,
            answer_format=answer_format,
        )

    async def ainvoke(
        self,
        task: str,
        *,
        thread_id: str | None = None,
        tools: Collection[str] | None = None,
        answer_format: AnswerFormat | None = None,
    ) -> RunResult:
        """`invoke` on a worker thread (the sqlite checkpointer is synchronous)."""
        return await asyncio.to_thread(
            self.invoke, task, thread_id=thread_id, tools=tools, answer_format=answer_format
        )

    def resume(self, thread_id: str) -> RunResult:
        """Continue an interrupted run from its last completed step (needs a checkpointer).

        Raises:
            ConfigError: The graph has no checkpointer, or no run has this thread id.
        """
        if not self.durable:
            raise ConfigError("resume() needs a checkpointer; compile(checkpointer='runs.sqlite')")
        state = self.langgraph.get_state(self._config(thread_id, tokens=False))
        if not state.values:
            raise ConfigError(f"no run with thread id {thread_id!r} in the checkpoint store")
        if not state.next:
            return self._result(dict(state.values), thread_id)
        *_, last = self._events(None, thread_id, tokens=False)
        assert isinstance(last, ResultEvent)  # _events always ends with the result
        return last.result

    def trace(self, thread_id: str) -> Trace:
        """The trace of a run stored in the checkpointer."""
        if not self.durable:
            raise ConfigError("trace(thread_id) needs a checkpointer")
        state = self.langgraph.get_state(self._config(thread_id, tokens=False))
        if not state.values:
            raise ConfigError(f"no run with thread id {thread_id!r} in the checkpoint store")
        return self._result(dict(state.values), thread_id).trace
