"""The reasoning modules a resource-aware policy chooses among, and its action space.

At every step an executor (the small model) proposes a command and says how sure it is.
A module then decides the command: ``act`` takes the proposal as it is; a reasoning
module has a model write a thought first and choose the command after it. The action
space is the modules' names plus ``stop`` (end the episode now), always last.

Example:
    >>> space = ActionSpace.default("smollm2-135m", "gemma3-270m")
    >>> space.names
    ('act', 'reason_small', 'reason_large', 'stop')
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

STOP = "stop"
"""The action that ends the episode without another command."""


class ModuleSpec(BaseModel):
    """One way to produce a step's command.

    Attributes:
        name: The action's name.
        reasoner: The model that writes a thought first; None: no explicit reasoning.
        chooser: The model that scores the valid commands (after the thought, if any).
        thought_tokens: Cap on the thought.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    reasoner: str | None = None
    chooser: str
    thought_tokens: int = Field(default=40, ge=1, le=512)


class ActionSpace(BaseModel):
    """The executor and the modules, cheapest first; ``stop`` follows them.

    Raises:
        ValidationError: Duplicate or reserved module names, or no module that acts
            without reasoning through the executor (the policy's cheapest choice).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    executor: str
    modules: tuple[ModuleSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> ActionSpace:
        names = [m.name for m in self.modules]
        if len(set(names)) != len(names):
            raise ValueError(f"module names repeat: {names}")
        if STOP in names:
            raise ValueError(f"{STOP!r} is the built-in action that ends the episode")
        return self

    @classmethod
    def default(cls, small: str, large: str) -> ActionSpace:
        """Act on the executor's proposal, or reason with the small or the large model."""
        return cls(
            executor=small,
            modules=(
                ModuleSpec(name="act", chooser=small),
                ModuleSpec(name="reason_small", reasoner=small, chooser=small),
                ModuleSpec(name="reason_large", reasoner=large, chooser=large),
            ),
        )

    @property
    def names(self) -> tuple[str, ...]:
        return (*(m.name for m in self.modules), STOP)

    def module(self, name: str) -> ModuleSpec:
        for module in self.modules:
            if module.name == name:
                return module
        raise KeyError(name)

    def proposes(self, module: ModuleSpec) -> bool:
        """``module`` does exactly what the probe did: its command is the proposal."""
        return module.reasoner is None and module.chooser == self.executor
