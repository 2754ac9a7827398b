"""`CompiledAgentGraph`: a compiled LangGraph `StateGraph` with one node per agent.

Each agent step is one LangGraph super-step, so a checkpointer saves the run after every
step: a run killed mid-graph resumes from its last completed step. An agent's node runs
one ReAct step; while the agent's turn is not finished, the node routes back to itself;
when it is, the node decides where the graph goes next (static edges, a condition, or
the end) and records why. Users who know LangGraph reach the compiled graph as
``compiled.langgraph`` and the builder as ``compiled.state_graph``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.config import get_stream_writer
from langgraph.errors import GraphRecursionError
from langgraph.graph import START, StateGraph
from pydantic import BaseModel

from relaygraph.agents.record import FailureKind, StepRecord
from relaygraph.agents.step import StepInput, run_step
from relaygraph.errors import ConfigError, RelayGraphError
from relaygraph.graph.budget import BudgetLedger
from relaygraph.graph.builder import END
from relaygraph.graph.state import RunState, initial_state
from relaygraph.graph.trace import Route, RunFailure, Trace
from relaygraph.llm.constraints import JsonObjectFormat, JsonSchemaFormat
from relaygraph.llm.counting import TokenCounter
from relaygraph.llm.local import LocalLLM
from relaygraph.llm.types import GenerationParams
from relaygraph.memory import MemoryEntry
from relaygraph.routing.context import ContextItem

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator

    from langchain_core.runnables import RunnableConfig

    from relaygraph.agents.agent import BoundAgent
    from relaygraph.graph.budget import Budget
    from relaygraph.graph.builder import Condition
    from relaygraph.memory import MemoryScope, SharedMemory

_STREAM_TOKENS = "relaygraph_stream_tokens"

AnswerFormat = JsonSchemaFormat | JsonObjectFormat
"""A run's format for its answer: a JSON schema, or any JSON object."""


@dataclass(frozen=True, slots=True)
class RunView:
    """What a condition sees when an agent's turn ends.

    Attributes:
        task: The run's input.
        last_agent: The agent whose turn just ended.
        answer: That turn's answer (None if it gave none).
        answers: Every agent's last answer.
        structured: Answers parsed into agents' output schemas.
        log: Everything agents wrote so far, oldest first.
        steps: Steps taken so far.
    """

    task: str
    last_agent: str
    answer: str | None
    answers: dict[str, str]
    structured: dict[str, dict[str, Any]]
    log: list[ContextItem]
    steps: int


class RunResult(BaseModel):
    """The outcome of a run: its answer or structured error, and its trace."""

    thread_id: str
    answer: str | None
    answers: dict[str, str]
    structured: dict[str, dict[str, Any]]
    error: RunFailure | None
    trace: Trace

    @property
    def ok(self) -> bool:
        return self.error is None


class StepEvent(BaseModel):
    """Streamed after every agent step."""

    kind: Literal["step"] = "step"
    record: StepRecord


class TokenEvent(BaseModel):
    """Streamed for every text delta a model produces (``stream(..., tokens=True)``)."""

    kind: Literal["token"] = "token"
    agent: str
    text: str


class ResultEvent(BaseModel):
    """Streamed last."""

    kind: Literal["result"] = "result"
    result: RunResult


RunEvent = StepEvent | TokenEvent | ResultEvent


@dataclass(frozen=True, slots=True)
class _AgentNode:
    """The LangGraph node of one agent: one step per call."""

    graph: CompiledAgentGraph
    agent: BoundAgent

    def __call__(self, state: RunState, config: RunnableConfig) -> dict[str, Any]:
        try:
            return self.graph._step(self.agent, state, config)
        except RelayGraphError as exc:  # bad input met mid-run: end the run, keep the checkpoint
            name, role = self.agent.name, self.agent.role
            record = StepRecord(step=len(state["records"]), agent=name, role=role, turn_step=0)
            return self.graph._fail(name, record, "model", str(exc))


def _saver(
    checkpointer: str | Path | BaseCheckpointSaver[Any] | None,
) -> tuple[Any, sqlite3.Connection | None]:
    if checkpointer is None or isinstance(checkpointer, BaseCheckpointSaver):
        return checkpointer, None
    path = Path(checkpointer)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False)
    return SqliteSaver(conn), conn


class CompiledAgentGraph:
    """A runnable agent graph: `invoke`, `stream`, `ainvoke`, `resume`.

    Built by `AgentGraph.compile()`; close it (or use it as a context manager) to close
    its sqlite checkpoint file.
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
        checkpointer: str | Path | BaseCheckpointSaver[Any] | None,
        memory: SharedMemory | None = None,
    ) -> None:
        self.name = name
        self.agents = agents
        self._edges = edges
        self._conditions = conditions
        self._finish = finish
        self.max_steps = max_steps
        self.budget = budget
        self.memory = memory
        self._counters: dict[str, TokenCounter] = {}
        builder: StateGraph[RunState] = StateGraph(RunState)
        for agent_name, bound in agents.items():
            builder.add_node(agent_name, _AgentNode(self, bound))
        builder.add_edge(START, entry)
        for agent in agents:
            builder.add_conditional_edges(agent, self._router(agent), [*agents, END])
        self.state_graph = builder
        saver, self._conn = _saver(checkpointer)
        self.langgraph = builder.compile(checkpointer=saver, name=name)
        self.durable = saver is not None

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Close the sqlite checkpoint file this graph opened (if any)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> CompiledAgentGraph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- nodes and routing ------------------------------------------------------------

    def _counter(self, agent: BoundAgent) -> TokenCounter:
        """The memoised token counter of an agent's model (shared by agents of one model)."""
        counter = self._counters.get(agent.llm.name)
        if counter is None:
            counter = self._counters[agent.llm.name] = TokenCounter(agent.llm)
        return counter

    def _router(self, agent: str) -> Callable[[RunState], list[str]]:
        def route(state: RunState) -> list[str]:
            return state["next"].get(agent, [END])

        return route

    def _step(self, agent: BoundAgent, state: RunState, config: RunnableConfig) -> dict[str, Any]:
        name = agent.name
        allowed = state.get("allowed_tools")
        if allowed is not None:
            agent = replace(agent, tools={k: t for k, t in agent.tools.items() if k in allowed})
        answer_format = state.get("answer_format")
        if answer_format is not None and name in self._finish:
            agent = replace(agent, answer_format=JsonSchemaFormat.model_validate(answer_format))
        records = state["records"]
        turn = state["turns"].get(name)
        turn_step = turn["step"] if turn and not turn["finished"] else 0
        if self.max_steps is not None and len(records) >= self.max_steps:
            record = StepRecord(step=len(records), agent=name, role=agent.role, turn_step=turn_step)
            return self._fail(
                name, record, "step_limit", f"the run reached its limit of {self.max_steps} steps"
            )
        ledger = BudgetLedger(self.budget, records)
        own = [d for d in state["log"] if d["author"] == name]
        last_observation = next(
            (d["text"] for d in reversed(own) if d["kind"] == "observation"), None
        )
        last_error = next((r["tool_error"] for r in reversed(records) if r["agent"] == name), None)
        this_turn = [r for r in records if r["agent"] == name][-turn_step:] if turn_step else []
        calls_in_turn = sum(1 for r in this_turn if (r["action"] or {}).get("type") == "tool")
        on_token = None
        if config.get("configurable", {}).get(_STREAM_TOKENS):
            writer = get_stream_writer()

            def on_token(text: str) -> None:
                writer({"agent": name, "text": text})

        items = [ContextItem(**d) for d in state["log"]]
        scope = self._memory_scope(config, items)
        out = run_step(
            agent,
            StepInput(
                task=state["task"],
                items=items,
                count_tokens=self._counter(agent),
                run_step=len(records),
                turn_step=turn_step,
                budget=ledger,
                on_token=on_token,
                last_observation=last_observation,
                last_error=last_error,
                memory=scope,
                tool_calls_in_turn=calls_in_turn,
            ),
        )
        record = out.record
        record.cost = ledger.cost(record.model.name, record.prompt_tokens, record.completion_tokens)
        if out.failed:
            assert record.error is not None  # failed means an error was recorded
            failed = self._fail(name, record, record.error.kind, record.error.message)
            return failed | {"log": [i.to_dict() for i in out.items]}
        update: dict[str, Any] = {
            "log": [i.to_dict() for i in out.items],
            "records": [record.model_dump(mode="json")],
            "turns": {name: {"step": turn_step + 1, "finished": out.finished}},
            "next": {name: [name]},
        }
        if out.answer is not None:
            update["answers"] = {name: out.answer}
            update["answer"] = out.answer
        if out.structured is not None:
            update["structured"] = {name: out.structured}
        if out.finished:
            view = RunView(
                task=state["task"],
                last_agent=name,
                answer=out.answer,
                answers={**state["answers"], **update.get("answers", {})},
                structured={**state["structured"], **update.get("structured", {})},
                log=items + out.items,
                steps=len(records) + 1,
            )
            targets, reason, error = self._route(name, view)
            if error is not None:
                return self._fail(name, record, "routing", error) | {"log": update["log"]}
            update["next"] = {name: targets}
            route = Route(after_step=record.step, source=name, targets=targets, reason=reason)
            update["routes"] = [route.model_dump()]
        return update

    def _memory_scope(self, config: RunnableConfig, log: list[ContextItem]) -> MemoryScope | None:
        """The run's memory namespace, with every log item written back to it.

        Writing back from the checkpointed log (rather than as steps finish) keeps the
        memory complete after a resume, and writes each item once.
        """
        if self.memory is None:
            return None
        scope = self.memory.scope(config["configurable"]["thread_id"])
        missing = [
            MemoryEntry(
                id=scope.entry_id(item.id),
                text=item.text,
                author=item.author,
                role=item.role,
                stage=item.stage,
                round=item.step,
                kind=item.kind,
                namespace=scope.namespace,
            )
            for item in log
            if item.text.strip() and scope.entry_id(item.id) not in self.memory
        ]
        if missing:
            scope.add_many(missing)
        return scope

    def _route(self, name: str, view: RunView) -> tuple[list[str], str, str | None]:
        """Where to go after ``name``'s turn: (targets, why, error)."""
        if name in self._finish:
            return [END], "finish", None
        condition = self._conditions.get(name)
        if condition is None:
            return list(self._edges[name]), "edge", None
        try:
            target = condition.fn(view)
        except Exception as exc:
            return [], "", f"condition after {name!r} raised {type(exc).__name__}: {exc}"
        allowed = condition.targets or (*self.agents, END)
        if target not in allowed:
            return (
                [],
                "",
                f"condition after {name!r} returned {target!r}; expected one of {sorted(allowed)}",
            )
        return [target], f"condition -> {target}", None

    def _fail(
        self, name: str, record: StepRecord, kind: FailureKind, message: str
    ) -> dict[str, Any]:
        error = RunFailure(kind=kind, message=message, agent=name)
        record.error = error
        return {
            "records": [record.model_dump(mode="json")],
            "turns": {name: {"step": record.turn_step + 1, "finished": True}},
            "next": {name: [END]},
            "error": error.model_dump(mode="json"),
        }

    # -- running ----------------------------------------------------------------------

    def _config(self, thread_id: str, *, tokens: bool) -> RunnableConfig:
        limit = (self.max_steps or 10_000) + 2
        return {
            "configurable": {"thread_id": thread_id, _STREAM_TOKENS: tokens},
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
        if not self._finish:
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
        for name in sorted(self._finish):
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
        values: dict[str, Any] | None = None
        payload: Any = None
        if task is not None:
            fmt = self.check_answer_format(answer_format)
            payload = initial_state(
                uuid.uuid4().hex,
                task,
                self.check_tools(tools),
                fmt.model_dump(mode="json") if fmt else None,
            )
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
            for mode, data in cast("Iterator[tuple[str, Any]]", stream):
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
        if values is None:
            raise ConfigError(f"thread {thread_id!r} has no state to return")
        yield ResultEvent(result=self._result(values, thread_id))

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
