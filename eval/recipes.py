"""Suites as recipes: what another process needs to rebuild a suite, and nothing it cannot.

A `HotpotSuite` or `AlfworldSuite` holds a loaded model, which cannot be pickled or
shipped. A recipe holds the names instead (graph factory spec, model spec, options): it
names and groups items as its suite does, and `build` loads the factory and the model
where it runs, so a driver can fan items out to worker processes (`relaygraph.eval.fanout`)
that each build the suite once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from relaygraph.eval.alfworld.suite import AlfworldSuite
from relaygraph.eval.hotpotqa.judge import AnswerJudge
from relaygraph.eval.hotpotqa.suite import HotpotSuite
from relaygraph.graph.loader import load_factory
from relaygraph.llm.registry import OPENAI_PREFIX, EngineOptions, load_llm

if TYPE_CHECKING:
    from relaygraph.eval.alfworld.games import AlfworldGame
    from relaygraph.eval.hotpotqa.data import HotpotExample
    from relaygraph.eval.runner import Suite
    from relaygraph.llm.protocol import LLM


class SuiteRecipe(Protocol):
    """A picklable description of a suite: it names and groups items, and builds the suite."""

    @property
    def name(self) -> str:
        """The suite's name."""
        ...

    @property
    def headline(self) -> str:
        """What an item's success means."""
        ...

    def item_id(self, item: Any) -> str:
        """The item's id in its dataset."""
        ...

    def groups(self, item: Any) -> dict[str, str]:
        """What the report breaks this item's result down by."""
        ...

    def build(self, threads: int | None = None) -> Suite[Any]:
        """The suite, with its graph factory and model loaded in this process (an
        embedded model on ``threads`` CPU threads; None: every core)."""
        ...

    def __hash__(self) -> int:
        """Hashable, so a worker process keeps one built suite per recipe."""
        ...


@dataclass(frozen=True, slots=True)
class HotpotRecipe:
    """A `HotpotSuite` by name: graph factory spec, model spec, judge model spec.

    Example:
        >>> recipe = HotpotRecipe("relaygraph.eval.hotpotqa.agents:reader", "smollm2-135m")
        >>> suite = recipe.build()                                  # doctest: +SKIP
    """

    graph: str
    model: str
    judge: str | None = None
    name: ClassVar[str] = HotpotSuite.name
    headline: ClassVar[str] = HotpotSuite.headline

    def item_id(self, item: HotpotExample) -> str:
        return HotpotSuite.item_id(item)

    def groups(self, item: HotpotExample) -> dict[str, str]:
        return HotpotSuite.groups(item)

    def build(self, threads: int | None = None) -> HotpotSuite:
        """Load the factory, the model and the judge (`load_llm` keeps one per process).

        Raises:
            ConfigError: A spec that names no factory or model.
        """
        judge = AnswerJudge(_model(self.judge, threads)) if self.judge else None
        return HotpotSuite(load_factory(self.graph), _model(self.model, threads), judge)


@dataclass(frozen=True, slots=True)
class AlfworldRecipe:
    """An `AlfworldSuite` by name: graph factory spec, model spec, commands per game, and
    the expert commands left when the agent enters (None: the whole game).

    Example:
        >>> recipe = AlfworldRecipe("relaygraph.eval.alfworld.agent:alfworld_react",
        ...                         "smollm2-135m", max_steps=50)
        >>> suite = recipe.build()                                  # doctest: +SKIP
    """

    graph: str
    model: str
    max_steps: int = 50
    remaining: int | None = None
    name: ClassVar[str] = AlfworldSuite.name
    headline: ClassVar[str] = AlfworldSuite.headline

    def item_id(self, item: AlfworldGame) -> str:
        return AlfworldSuite.item_id(item)

    def groups(self, item: AlfworldGame) -> dict[str, str]:
        return AlfworldSuite.groups(item)

    def build(self, threads: int | None = None) -> AlfworldSuite:
        """Load the factory and the model (`load_llm` keeps one per process).

        Raises:
            ConfigError: A spec that names no factory or model.
        """
        model = _model(self.model, threads)
        return AlfworldSuite(load_factory(self.graph), model, self.max_steps, self.remaining)


def _model(spec: str, threads: int | None) -> LLM:
    """The model ``spec`` names; an embedded one on ``threads`` CPU threads (a remote
    worker's threads are its own)."""
    if threads is None or spec.startswith(OPENAI_PREFIX):
        return load_llm(spec)
    return load_llm(spec, engine=EngineOptions(threads=threads))
