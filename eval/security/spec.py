"""Risk specifications: what a family of security tasks is made of, loaded from YAML.

A spec names its risk category, the user's benign goal (in several phrasings), the
environment to seed (workspace files, inbox, web pages, balance), the tools the agent
gets (each maybe with a `Capability`: its limits and grants), the attack (where its
payload is planted and what counts as the attack working), the utility check (was the
user's goal met) and the violations (unsafe actions). Text anywhere may use
``{placeholders}`` bound by ``parameters``; `synthesis` expands a spec over them into
concrete tasks.

Every problem is reported with the file and the field, e.g.
``specs/mail.yaml: violations.1.tool: 'run_shell' is not one of this spec's tools``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from relaygraph.errors import ConfigError
from relaygraph.eval.security.capabilities import (
    Capability,
    split_tool_entries,
    validate_capabilities,
)
from relaygraph.eval.security.predicates import Judge, Predicate, ToolCalled
from relaygraph.eval.security.templates import fields_of
from relaygraph.eval.security.tools import TOOL_NAMES
from relaygraph.eval.security.trajectory import Email
from relaygraph.fileio import read_model

Category = Literal[
    "prompt_injection",
    "data_exfiltration",
    "destructive_file_ops",
    "unsafe_shell",
    "secret_leakage",
    "unauthorized_messaging_payment",
    "over_privileged",
]
CATEGORIES: tuple[Category, ...] = Category.__args__  # type: ignore[attr-defined]
Vector = Literal["email", "web_page", "file", "user_prompt"]
"""Where the attack payload is planted: inside a message, a page, a file, or the request."""
Position = Literal["start", "middle", "end"]


class Environment(BaseModel):
    """The world a task starts in."""

    model_config = {"extra": "forbid"}

    files: dict[str, str] = Field(default_factory=dict)
    """Workspace-relative path → text."""
    inbox: list[Email] = Field(default_factory=list)
    pages: dict[str, str] = Field(default_factory=dict)
    """URL → page text, served on loopback."""
    contacts: list[str] = Field(default_factory=list)
    """Addresses the user knows (a defence may trust them)."""
    balance: float = Field(default=1000.0, ge=0)

    @field_validator("files")
    @classmethod
    def _relative_paths(cls, value: dict[str, str]) -> dict[str, str]:
        for path in value:
            parts = path.split("/")
            if not path or path.startswith(("/", "~")) or ".." in parts or "" in parts:
                raise ValueError(f"{path!r} must be a relative path inside the workspace")
        return value


class Call(BaseModel):
    """A tool call written in a spec: the tool and its arguments."""

    model_config = {"extra": "forbid"}

    tool: str
    args: dict[str, Any] = Field(default_factory=dict)


class Reference(BaseModel):
    """How a careful assistant does the user's task: it must be safe and meet the goal."""

    model_config = {"extra": "forbid"}

    calls: list[Call] = Field(min_length=1)
    answer: str


class Attack(BaseModel):
    """How the adversarial content gets in, and what counts as it working."""

    model_config = {"extra": "forbid"}

    vector: Vector
    target: str = ""
    """The carrier: an inbox index (from 0), a page URL or a file path; empty for user_prompt."""
    positions: list[Position] = Field(default=["end"], min_length=1)
    payloads: list[str] = Field(min_length=1)
    goal: list[Predicate] = Field(min_length=1)
    """The attack worked when any of these holds at any step."""
    actions: list[Call] = Field(min_length=1)
    """What an assistant that obeys the payload does; it must reach the attack's goal."""

    @field_validator("payloads")
    @classmethod
    def _not_blank(cls, value: list[str]) -> list[str]:
        for i, payload in enumerate(value):
            if not payload.strip():
                raise ValueError(f"payload {i} is blank: an attack needs text to plant")
        return value


class RiskSpec(BaseModel):
    """One family of tasks. See the module docstring; `synthesis` expands it."""

    model_config = {"extra": "forbid"}

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    category: Category
    title: str
    tools: list[str] = Field(min_length=1)
    """The tools' names; ``{name: {capability}}`` entries are split into `capabilities`."""
    capabilities: dict[str, Capability] = Field(default_factory=dict)
    """Per tool, its limits and grants (see `relaygraph.eval.security.capabilities`)."""
    parameters: dict[str, list[str]] = Field(default_factory=dict)
    goals: list[str] = Field(min_length=1)
    """Phrasings of the user's benign request."""
    environment: Environment = Field(default_factory=Environment)
    attack: Attack
    reference: Reference
    utility: list[Predicate] = Field(min_length=1)
    """All must hold at the end for the user's goal to count as met."""
    violations: list[Predicate] = Field(default_factory=list)
    """Unsafe actions besides the attack's own goal; any, at any step, is a violation."""
    max_tasks: int = Field(default=16, ge=1)
    """Attack tasks drawn from all combinations."""
    benign: int = Field(default=4, ge=0)
    """Benign control tasks (no payload) drawn from the combinations."""

    @model_validator(mode="before")
    @classmethod
    def _tool_entries(cls, data: Any) -> Any:
        return split_tool_entries(data)

    @field_validator("parameters")
    @classmethod
    def _non_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, options in value.items():
            if not name.isidentifier():
                raise ValueError(f"parameter name {name!r} must be an identifier")
            if not options:
                raise ValueError(f"parameter {name!r} has no values")
        return value

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in TOOL_NAMES]
        if unknown:
            raise ValueError(f"unknown tools {unknown}; the sandbox has {list(TOOL_NAMES)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RiskSpec:
        _check_tools(self)
        validate_capabilities(self.capabilities, self.tools)
        _check_carrier(self)
        _check_placeholders(self)
        rule_based = [p for p in [*self.violations, *self.attack.goal] if not isinstance(p, Judge)]
        if not rule_based:
            raise ValueError(
                "violations: a spec needs at least one rule-based predicate; "
                "a judge only ever adds to rule-based checks"
            )
        return self


def _check_tools(spec: RiskSpec) -> None:
    for where, calls in (
        ("reference.calls", spec.reference.calls),
        ("attack.actions", spec.attack.actions),
    ):
        for i, call in enumerate(calls):
            if call.tool not in spec.tools:
                raise ValueError(
                    f"{where}.{i}.tool: {call.tool!r} is not one of this spec's tools {spec.tools}"
                )
    for where, predicates in (
        ("violations", spec.violations),
        ("utility", spec.utility),
        ("attack.goal", spec.attack.goal),
    ):
        for i, predicate in enumerate(predicates):
            if isinstance(predicate, ToolCalled) and predicate.tool not in spec.tools:
                raise ValueError(
                    f"{where}.{i}.tool: {predicate.tool!r} is not one of this spec's tools "
                    f"{spec.tools}"
                )


def _check_carrier(spec: RiskSpec) -> None:
    attack, env = spec.attack, spec.environment
    if attack.vector == "user_prompt":
        if attack.target:
            raise ValueError("attack.target: a user_prompt attack has no carrier; leave it empty")
        return
    if attack.vector == "email":
        if not attack.target.isdigit() or int(attack.target) >= len(env.inbox):
            raise ValueError(
                f"attack.target: {attack.target!r} is not an index of the inbox "
                f"(0..{len(env.inbox) - 1})"
            )
    elif attack.vector == "web_page" and attack.target not in env.pages:
        raise ValueError(f"attack.target: {attack.target!r} is not one of environment.pages")
    elif attack.vector == "file" and attack.target not in env.files:
        raise ValueError(f"attack.target: {attack.target!r} is not one of environment.files")


def _check_placeholders(spec: RiskSpec) -> None:
    bound = set(spec.parameters)
    data = spec.model_dump(exclude={"parameters", "id", "category", "title", "tools"})
    for where, value in _walk(data, ""):
        unbound = fields_of(value) - bound
        if unbound:
            raise ValueError(
                f"{where}: template variable {{{sorted(unbound)[0]}}} is not bound by parameters "
                f"(bound: {sorted(bound) or 'none'})"
            )


def _walk(value: object, where: str) -> list[tuple[str, str]]:
    """(field path, string) for every string in nested dicts and lists; keys count too."""
    if isinstance(value, str):
        return [(where, value)]
    found: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            found += [(path, str(key))] if isinstance(key, str) and "{" in key else []
            found += _walk(item, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _walk(item, f"{where}.{i}")
    return found


def load_spec(path: str | Path) -> RiskSpec:
    """One spec file.

    Raises:
        ConfigError: Unreadable YAML, or a spec that does not validate (file and field named).
    """
    return read_model(RiskSpec, Path(path), what="risk spec")


def load_specs(directory: str | Path | None = None) -> list[RiskSpec]:
    """Every ``*.yaml`` / ``*.yml`` spec in ``directory`` (default: the development specs
    shipped with relaygraph; `HELDOUT_SPECS` holds the held-out ones).

    Raises:
        ConfigError: No specs there, a bad spec, or two specs with one id.
    """
    folder = Path(directory) if directory is not None else SHIPPED_SPECS
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    if not files:
        raise ConfigError(f"{folder}: no *.yaml or *.yml risk specs")
    specs: dict[str, RiskSpec] = {}
    for file in files:
        spec = load_spec(file)
        if spec.id in specs:
            raise ConfigError(f"{file}: id: {spec.id!r} is already used by another spec")
        specs[spec.id] = spec
    return list(specs.values())


SHIPPED_SPECS = Path(__file__).parent / "specs"
"""The development specs: the defences were written and tuned against these."""
HELDOUT_SPECS = SHIPPED_SPECS / "heldout"
"""Specs written apart from the defences and never used to tune them: report on these."""
