"""`AgentGraph`: the builder. Add agents and edges, then `compile()` validates the whole
structure and returns a runnable `CompiledAgentGraph` over a LangGraph `StateGraph`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from relaygraph.errors import ConfigError
from relaygraph.graph.budget import Budget

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from relaygraph.agents.agent import Agent
    from relaygraph.graph.checkpoints import Checkpointer
    from relaygraph.graph.results import RunView
    from relaygraph.graph.runtime import CompiledAgentGraph
    from relaygraph.llm.protocol import LLM
    from relaygraph.memory import Memory

END = "__end__"
"""Route target that ends the run."""


@dataclass(frozen=True, slots=True)
class Condition:
    """A conditional edge: a function of the run that names the next agent (or END)."""

    fn: Callable[[RunView], str]
    targets: tuple[str, ...] | None


class AgentGraph:
    """Builder of a multi-agent graph; every structural error surfaces at `compile()`.

    Example:
        >>> graph = AgentGraph("qa", model="smollm2-135m")
        >>> graph.add_agent(Agent(name="researcher", role="researcher", tools=[search]))
        >>> graph.add_agent(Agent(name="solver", role="solver", answer_format="plain"))
        >>> graph.add_edge("researcher", "solver").set_entry("researcher").set_finish("solver")
        >>> result = graph.compile().invoke("Who wrote Hamlet?")   # doctest: +SKIP

    Args:
        name: Graph name (in traces and when served as a model).
        model: Default model for agents that name none: a model name or an `LLM`.
        max_steps: Cap on agent steps in one run; required (not None) for a graph
            whose cycles have no conditional exit.
        budget: Token, time and cost limits per run and per role.
        memory: Shared memory for the team (in process, or in PostgreSQL where several
            processes share it: `open_memory`). Each run gets the namespace of its
            thread id; agents' outputs are written back to it after every step, and
            context policies choose from it (so a run can be seeded by adding entries to
            that namespace before it starts).
    """

    def __init__(
        self,
        name: str = "graph",
        *,
        model: str | LLM = "smollm2-135m",
        max_steps: int | None = 50,
        budget: Budget | None = None,
        memory: Memory | None = None,
    ) -> None:
        if max_steps is not None and max_steps < 1:
            raise ConfigError(
                "max_steps must be >= 1 or None", parameter="max_steps", value=max_steps
            )
        self.name = name
        self.model = model
        self.max_steps = max_steps
        self.budget = budget or Budget()
        self.memory = memory
        self._agents: dict[str, Agent] = {}
        self._edges: dict[str, list[str]] = {}
        self._conditions: dict[str, Condition] = {}
        self._entry: str | None = None
        self._finish: set[str] = set()

    def add_agent(self, agent: Agent) -> AgentGraph:
        if agent.name in self._agents:
            raise ConfigError(f"an agent named {agent.name!r} was already added", parameter="name")
        if agent.name == END:
            raise ConfigError(f"{END!r} is reserved", parameter="name")
        self._agents[agent.name] = agent
        return self

    def add_edge(self, source: str, target: str) -> AgentGraph:
        """After ``source`` finishes its turn, run ``target`` (several targets run in parallel)."""
        self._edges.setdefault(source, []).append(target)
        return self

    def add_conditional_edges(
        self, source: str, condition: Callable[[RunView], str], targets: Sequence[str] | None = None
    ) -> AgentGraph:
        """After ``source`` finishes, run the agent ``condition(run)`` names (or END).

        ``targets`` lists the names the condition may return; given, they are checked at
        compile() and every returned name is checked at run time.
        """
        if source in self._conditions:
            raise ConfigError(f"{source!r} already has conditional edges", parameter="source")
        self._conditions[source] = Condition(condition, tuple(targets) if targets else None)
        return self

    def set_entry(self, agent: str) -> AgentGraph:
        self._entry = agent
        return self

    def set_finish(self, agent: str) -> AgentGraph:
        """When ``agent`` finishes its turn, the run ends with its answer."""
        self._finish.add(agent)
        return self

    def compile(self, *, checkpointer: Checkpointer = None) -> CompiledAgentGraph:
        """Validate the structure and build the runnable graph.

        Args:
            checkpointer: Where runs are saved after every step, so they can be resumed:
                a sqlite file path, a ``postgresql://`` URL (runs that any process
                pointing at that database can resume), any LangGraph checkpointer, or
                None (runs are not persisted).

        Raises:
            ConfigError: No agents or no entry; an edge to or from an unknown agent; an
                agent with no way out; a cycle with no exit and no step limit; a tool
                that cannot be described by a schema; an unknown model.
        """
        from relaygraph.graph.runtime import CompiledAgentGraph
        from relaygraph.llm.registry import load_llm

        self._validate()
        models: dict[str, LLM] = {}

        def resolve(model: str | LLM) -> LLM:
            if not isinstance(model, str):
                return model
            if model not in models:
                models[model] = load_llm(model)
            return models[model]

        bound = {name: a.bind(resolve(a.model or self.model)) for name, a in self._agents.items()}
        return CompiledAgentGraph(
            name=self.name,
            agents=bound,
            edges={k: list(v) for k, v in self._edges.items()},
            conditions=dict(self._conditions),
            entry=self._entry or "",
            finish=set(self._finish),
            max_steps=self.max_steps,
            budget=self.budget,
            memory=self.memory,
            checkpointer=checkpointer,
        )

    def _validate(self) -> None:
        if not self._agents:
            raise ConfigError(f"graph {self.name!r} has no agents; add_agent() first")
        if self._entry is None:
            raise ConfigError(f"graph {self.name!r} has no entry; call set_entry(<agent>)")
        known = set(self._agents)
        if self._entry not in known:
            raise ConfigError(f"entry {self._entry!r} is not an agent; agents: {sorted(known)}")
        self._validate_edges(known)
        for name in self._agents:  # in the order added, so the first error is predictable
            ways = [name in self._edges, name in self._conditions, name in self._finish]
            if sum(ways) > 1:
                raise ConfigError(
                    f"agent {name!r} has more than one kind of way out (edges, conditional edges, "
                    "finish); keep one: a condition can also return END"
                )
            if not any(ways):
                raise ConfigError(
                    f"agent {name!r} has no way out: add_edge({name!r}, ...), "
                    f"add_conditional_edges({name!r}, ...) or set_finish({name!r})"
                )
        if self.max_steps is None and (cycle := self._cycle_without_exit()):
            raise ConfigError(
                f"cycle {' -> '.join(cycle)} has no conditional exit and the graph has no "
                "step limit; set max_steps or add a conditional edge that can leave it"
            )

    def _validate_edges(self, known: set[str]) -> None:
        """Every edge starts and ends at a known agent (or END)."""
        pairs = [(s, t, "edge") for s, ts in self._edges.items() for t in ts]
        for source, condition in self._conditions.items():
            pairs += [(source, t, "conditional edge") for t in condition.targets or ()]
            if not condition.targets:
                pairs.append((source, END, "conditional edge"))
        for source, target, kind in pairs:
            if source not in known:
                raise ConfigError(f"{kind} from unknown agent {source!r}; add_agent() it first")
            if target not in known and target != END:
                raise ConfigError(f"{kind} {source!r} -> {target!r}: no agent named {target!r}")
        for source in self._finish:
            if source not in known:
                raise ConfigError(f"set_finish({source!r}): no such agent")

    def _cycle_without_exit(self) -> list[str] | None:
        """A cycle over static edges only, from whose agents nothing leads out (DFS)."""
        static = {
            s: [t for t in ts if t != END]
            for s, ts in self._edges.items()
            if s not in self._conditions
        }
        state: dict[str, int] = {}
        path: list[str] = []

        def visit(node: str) -> list[str] | None:
            state[node] = 1
            path.append(node)
            for nxt in static.get(node, []):
                if state.get(nxt) == 1:
                    cycle = path[path.index(nxt) :]
                    leaves = any(
                        n in self._finish
                        or END in self._edges.get(n, [])
                        or any(t not in cycle for t in static.get(n, []))
                        for n in cycle
                    )
                    if not leaves:
                        return [*cycle, nxt]
                elif nxt not in state and (found := visit(nxt)):
                    return found
            path.pop()
            state[node] = 2
            return None

        for start in static:
            if start not in state and (found := visit(start)):
                return found
        return None
