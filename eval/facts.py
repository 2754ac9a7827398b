"""Short factual questions (capitals, chemical symbols), shipped for model routing.

The embedded models split on them: SmolLM2-135M knows about half the capitals, Gemma-3-270M
most (ENVIRONMENT.md), so a router has answers to keep and answers to escalate, and every
answer is checked against a short gold list without a judge. Each category asks its
questions few-shot as a text document ("Q: … A: …"), the one format both models follow:
Gemma-3-270M is a base model without a chat template.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from relaygraph.errors import ConfigError
from relaygraph.fileio import read_model
from relaygraph.llm.types import TextPrompt

FACTS_FILE = "facts.json"
"""The shipped set in eval/data (see its NOTICE.md)."""


class Fact(BaseModel):
    """One question's subject and its accepted answers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    subject: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    aliases: tuple[str, ...] = ()


class FactCategory(BaseModel):
    """A question template, its worked examples (never asked) and its facts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str = Field(pattern=r"\{subject\}")
    shots: tuple[tuple[str, str], ...] = Field(min_length=1)
    items: tuple[Fact, ...] = Field(min_length=1)

    def prompt(self, subject: str) -> TextPrompt:
        """The few-shot document that ends where the answer to ``subject`` starts."""
        shots = "".join(f"Q: {self.question.format(subject=s)}\nA: {a}\n\n" for s, a in self.shots)
        return TextPrompt(text=f"{shots}Q: {self.question.format(subject=subject)}\nA:")


class FactSet(BaseModel):
    """Every category of a facts file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    categories: dict[str, FactCategory] = Field(min_length=1)


def load_facts(path: str | Path | None = None) -> FactSet:
    """The shipped facts, or a file in the same layout.

    Raises:
        ConfigError: Unreadable file, bad JSON, a malformed category or repeated ids.
    """
    source = Path(path) if path is not None else files("relaygraph.eval") / "data" / FACTS_FILE
    facts = read_model(FactSet, source, what="fact set")
    ids = [fact.id for category in facts.categories.values() for fact in category.items]
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        raise ConfigError(f"{source}: repeated fact ids {repeated[:5]}", parameter="path")
    return facts
