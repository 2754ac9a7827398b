"""The nodes of a compiled graph: each agent's LangGraph node runs one step, and its router
says where the graph goes when the agent's turn ends (static edges, a condition, the end).

A step is where the run's state meets the agent: the tools a run allows and its answer
format, the turn so far, the budget ledger, the memory namespace with the log written
back, token streaming; what the step did becomes the state's update, and a failure a
structured error that ends the run (its checkpoint kept).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from langgraph.config import get_stream_writer

from relaygraph.agents.record import FailureKind, StepRecord
from relaygraph.agents.step import StepInput, run_step
from relaygraph.errors import RelayGraphError
from relaygraph.graph.budget import BudgetLedger
from relaygraph.graph.builder import END
from relaygraph.graph.results import RunView
from relaygraph.graph.spans import record_update, step_span

# LangGraph reads a node's state annotation at run time to infer its input schema.
from relaygraph.graph.state import RunState  # noqa: TC001
from relaygraph.graph.trace import Route, RunFailure
from relaygraph.llm.constraints import JsonSchemaFormat
from relaygraph.llm.counting import TokenCounter
from relaygraph.memory import MemoryEntry
from relaygraph.routing.context import ContextItem

if TYPE_CHECKING:
    from collections.abc import Callable

    from langchain_core.runnables import RunnableConfig

    from relaygraph.agents.agent import BoundAgent
    from relaygraph.graph.budget import Budget
    from relaygraph.graph.builder import Condition
    from relaygraph.memory import Memory, MemoryScope

STREAM_TOKENS = "relaygraph_stream_tokens"
"""The run config key that asks steps to stream their tokens."""


@dataclass(frozen=True, slots=True)
class _AgentNode:
    """The LangGraph node of one agent: one step per call."""

    nodes: AgentNodes
    agent: BoundAgent

    def __call__(self, state: RunState, config: RunnableConfig) -> dict[str, Any]:
        name, role = self.agent.name, self.agent.role
        with step_span(name, role, config) as span:
            try:
                update = self.nodes.step(self.agent, state, config)
            except RelayGraphError as exc:  # bad input mid-run: end the run, keep the checkpoint
                record = StepRecord(step=len(state["records"]), agent=name, role=role, turn_step=0)
                update = self.nodes.fail(name, record, "model", str(exc))
            record_update(span, update)
            return update


class AgentNodes:
    """A graph's agents as LangGraph nodes, and the routing between them."""

    def __init__(
        self,
        *,
        agents: dict[str, BoundAgent],
        edges: dict[str, list[str]],
        conditions: dict[str, Condition],
        finish: set[str],
        max_steps: int | None,
        budget: Budget,
        memory: Memory | None,
    ) -> None:
        self.agents = agents
        self.finish = finish
        self._edges = edges
        self._conditions = conditions
        self._max_steps = max_steps
        self._budget = budget
        self._memory = memory
        self._counters: dict[str, TokenCounter] = {}

    def node(self, agent: BoundAgent) -> _AgentNode:
        return _AgentNode(self, agent)

    def _counter(self, agent: BoundAgent) -> TokenCounter:
        """The memoised token counter of an agent's model (shared by agents of one model)."""
        counter = self._counters.get(agent.llm.name)
        if counter is None:
            counter = self._counters[agent.llm.name] = TokenCounter(agent.llm)
        return counter

    def router(self, agent: str) -> Callable[[RunState], list[str]]:
        def route(state: RunState) -> list[str]:
            return state["next"].get(agent, [END])

        return route

    def step(self, agent: BoundAgent, state: RunState, config: RunnableConfig) -> dict[str, Any]:
        name = agent.name
        allowed = state.get("allowed_tools")
        if allowed is not None:
            agent = replace(agent, tools={k: t for k, t in agent.tools.items() if k in allowed})
        answer_format = state.get("answer_format")
        if answer_format is not None and name in self.finish:
            agent = replace(agent, answer_format=JsonSchemaFormat.model_validate(answer_format))
        records = state["records"]
        turn = state["turns"].get(name)
        turn_step = turn["step"] if turn and not turn["finished"] else 0
        if self._max_steps is not None and len(records) >= self._max_steps:
            record = StepRecord(step=len(records), agent=name, role=agent.role, turn_step=turn_step)
            return self.fail(
                name, record, "step_limit", f"the run reached its limit of {self._max_steps} steps"
            )
        ledger = BudgetLedger(self._budget, records)
        own = [d for d in state["log"] if d["author"] == name]
        last_observation = next(
            (d["text"] for d in reversed(own) if d["kind"] == "observation"), None
        )
        last_error = next((r["tool_error"] for r in reversed(records) if r["agent"] == name), None)
        this_turn = [r for r in records if r["agent"] == name][-turn_step:] if turn_step else []
        calls_in_turn = sum(1 for r in this_turn if (r["action"] or {}).get("type") == "tool")
        on_token = None
        if config.get("configurable", {}).get(STREAM_TOKENS):
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
            failed = self.fail(name, record, record.error.kind, record.error.message)
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
                return self.fail(name, record, "routing", error) | {"log": update["log"]}
            update["next"] = {name: targets}
            route = Route(after_step=record.step, source=name, targets=targets, reason=reason)
            update["routes"] = [route.model_dump()]
        return update

    def _memory_scope(self, config: RunnableConfig, log: list[ContextItem]) -> MemoryScope | None:
        """The run's memory namespace, with every log item written back to it.

        Writing back from the checkpointed log (rather than as steps finish) keeps the
        memory complete after a resume, and writes each item once.
        """
        if self._memory is None:
            return None
        scope = self._memory.scope(config["configurable"]["thread_id"])
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
            if item.text.strip() and scope.entry_id(item.id) not in self._memory
        ]
        if missing:
            scope.add_many(missing)
        return scope

    def _route(self, name: str, view: RunView) -> tuple[list[str], str, str | None]:
        """Where to go after ``name``'s turn: (targets, why, error)."""
        if name in self.finish:
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

    def fail(
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
