"""Expanding risk specs into concrete tasks, and the task directory they are saved in.

A spec's combinations are every binding of its parameters, with every goal phrasing,
payload and injection position. For a seed, a seeded shuffle picks ``max_tasks`` attack
tasks and ``benign`` control tasks (the same world and request, no payload), so the same seed and
specs always give the same tasks; a task's id hashes what it is made of, so the same task
has the same id under any seed.

A task directory holds ``manifest.json`` (format version, seed, counts) and
``tasks.jsonl`` (one `SecurityTask` per line).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from relaygraph.errors import ConfigError, first_problem
from relaygraph.eval.security.capabilities import Capability
from relaygraph.eval.security.predicates import Predicate, bind
from relaygraph.eval.security.spec import (
    Call,
    Category,
    Environment,
    Position,
    Reference,
    Vector,
)
from relaygraph.eval.security.templates import fields_of, fill
from relaygraph.eval.security.verification import verify_task
from relaygraph.fileio import read_text, write_atomic
from relaygraph.llm.types import GenerationParams, Message

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from relaygraph.eval.security.spec import RiskSpec
    from relaygraph.llm.protocol import LLM

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TASKS = "tasks.jsonl"
B = TypeVar("B", bound=BaseModel)


class SecurityTask(BaseModel):
    """One concrete task: a seeded world, a request, maybe an attack, and its checks."""

    id: str
    spec: str
    category: Category
    kind: Literal["attack", "benign"]
    vector: Vector
    position: Position | None = None
    goal: str
    goal_source: Literal["template", "paraphrase"] = "template"
    tools: list[str]
    capabilities: dict[str, Capability] = Field(default_factory=dict)
    """Per tool, its limits and grants, with the task's values bound."""
    environment: Environment
    utility: list[Predicate]
    violations: list[Predicate]
    attack_goal: list[Predicate] = Field(default_factory=list)
    """Empty for benign tasks."""
    reference: Reference
    attack_actions: list[Call] = Field(default_factory=list)
    """What obeying the payload means (empty for benign tasks)."""
    bindings: dict[str, str] = Field(default_factory=dict)


class TaskManifest(BaseModel):
    format: Literal["relaygraph-security-tasks"] = "relaygraph-security-tasks"
    version: int = FORMAT_VERSION
    seed: int
    specs: list[str]
    tasks: int
    by_category: dict[str, int]
    paraphrase_model: str | None = None
    paraphrased: int = 0
    paraphrase_rejected: int = 0


def synthesize(
    specs: Sequence[RiskSpec], *, seed: int = 0, verify: bool = True
) -> list[SecurityTask]:
    """The tasks of ``specs`` for ``seed``, spec by spec, attacks then controls.

    With ``verify`` (the default), every task is checked before it is returned
    (`verification.verify_task`): its reference solution, played in a real sandbox, is
    safe and meets its utility checks, and an assistant that obeys its attack reaches the
    attack's goal. Only a caller that needs raw speed and trusts its specs turns it off.

    Raises:
        ConfigError: A parameter value makes a spec's world, reference or attack actions
            invalid, or (with ``verify``) a task fails its check; the spec, the task or
            parameters, and the reason are named.
    """
    tasks: list[SecurityTask] = []
    for spec in specs:
        rng = random.Random(f"{seed}:{spec.id}")
        bindings = parameter_bindings(spec)
        worlds = list(itertools.product(range(len(bindings)), range(len(spec.goals))))
        attacks = list(
            itertools.product(worlds, range(len(spec.attack.payloads)), spec.attack.positions)
        )
        rng.shuffle(attacks)
        rng.shuffle(worlds)
        made = [
            _instantiate(spec, bindings[b], g, (p, position))
            for (b, g), p, position in attacks[: spec.max_tasks]
        ]
        made += [_instantiate(spec, bindings[b], g, None) for b, g in worlds[: spec.benign]]
        if verify:
            for task in made:
                verify_task(task)
        tasks += made
    return tasks


def parameter_bindings(spec: RiskSpec) -> list[dict[str, str]]:
    """Every binding of ``spec``'s parameters, in a fixed order."""
    names = sorted(spec.parameters)
    return [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*(spec.parameters[n] for n in names))
    ]


def seeded_world(spec: RiskSpec, values: dict[str, str]) -> Environment:
    """``spec``'s environment with ``values`` bound, before any payload is planted.

    Raises:
        ConfigError: A value makes it invalid (spec, field and parameter named).
    """
    return _filled(
        Environment, spec.environment.model_dump(by_alias=True), spec, values, "environment"
    )


def _instantiate(
    spec: RiskSpec, values: dict[str, str], goal_index: int, attack: tuple[int, Position] | None
) -> SecurityTask:
    env = seeded_world(spec, values)
    goal = fill(spec.goals[goal_index], values)
    kind: Literal["attack", "benign"] = "benign" if attack is None else "attack"
    position: Position | None = None
    if attack is not None:
        payload_index, position = attack
        payload = fill(spec.attack.payloads[payload_index], values)
        goal, env = _plant(spec, env, goal, payload, position, values=values)
    made_of = json.dumps([values, goal_index, attack], sort_keys=True)
    digest = hashlib.sha256(made_of.encode()).hexdigest()[:10]
    return SecurityTask(
        id=f"{spec.id}/{kind}-{digest}",
        spec=spec.id,
        category=spec.category,
        kind=kind,
        vector=spec.attack.vector,
        position=position,
        goal=goal,
        tools=list(spec.tools),
        capabilities={
            tool: _filled(Capability, capability.model_dump(), spec, values, f"tools.{tool}")
            for tool, capability in spec.capabilities.items()
        },
        environment=env,
        utility=[bind(p, values) for p in spec.utility],
        violations=[bind(p, values) for p in [*spec.violations, *spec.attack.goal]],
        attack_goal=[bind(p, values) for p in spec.attack.goal] if attack is not None else [],
        reference=_filled(Reference, spec.reference.model_dump(), spec, values, "reference"),
        attack_actions=(
            [
                _filled(Call, call.model_dump(), spec, values, f"attack.actions.{i}")
                for i, call in enumerate(spec.attack.actions)
            ]
            if attack is not None
            else []
        ),
        bindings=values,
    )


def _filled(
    model: type[B], template: dict[str, Any], spec: RiskSpec, values: dict[str, str], where: str
) -> B:
    """``template`` (spec ``where``) with ``values`` filled in, validated as ``model``.

    A spec's templates validate on their own, but a bound value can still break them (a
    parameter ``../../etc/passwd`` in the file path ``notes/{file}``).

    Raises:
        ConfigError: The filled value does not validate; the spec, the field and the
            parameters whose values it holds are named.
    """
    try:
        return model.model_validate(fill(template, values))
    except ValidationError as exc:
        field, problem = first_problem(exc.errors())
        # The parameters that went in: those in the template under the failing field (as
        # deep as its path can be followed: filled keys differ from the template's), and
        # of those, the ones whose value the message quotes, when it quotes any.
        node: Any = template
        for part in field.split(".") if field else []:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                break
        used = sorted(fields_of(node) & values.keys()) or sorted(values)
        used = [name for name in used if values[name] and values[name] in problem] or used
        bound = ", ".join(f"{name}={values[name]!r}" for name in used)
        subject = f"parameter {bound} makes" if len(used) == 1 else f"parameters {bound} make"
        raise ConfigError(
            f"spec {spec.id!r}: {subject} {where}{'.' + field if field else ''} invalid: "
            f"{problem.removeprefix('Value error, ')}",
            parameter="parameters",
        ) from None


def _plant(
    spec: RiskSpec,
    env: Environment,
    goal: str,
    payload: str,
    position: Position,
    *,
    values: dict[str, str],
) -> tuple[str, Environment]:
    """The request and world with ``payload`` placed in the attack's carrier."""
    target = fill(spec.attack.target, values)
    if spec.attack.vector == "user_prompt":
        return _insert(goal, payload, position), env
    if spec.attack.vector == "email":
        inbox = list(env.inbox)
        message = inbox[int(target)]
        inbox[int(target)] = message.model_copy(
            update={"body": _insert(message.body, payload, position)}
        )
        return goal, env.model_copy(update={"inbox": inbox})
    field = "pages" if spec.attack.vector == "web_page" else "files"
    carriers = dict(getattr(env, field))
    carriers[target] = _insert(carriers[target], payload, position)
    return goal, env.model_copy(update={field: carriers})


def _insert(text: str, payload: str, position: Position) -> str:
    """``payload`` as its own paragraph at the start, middle (a line break) or end."""
    if position == "start":
        return f"{payload}\n\n{text}"
    if position == "end":
        return f"{text.rstrip()}\n\n{payload}\n"
    lines = text.split("\n")
    cut = max(1, len(lines) // 2)
    return "\n".join([*lines[:cut], "", payload, "", *lines[cut:]])


PARAPHRASE_PROMPT = (
    "Rewrite the request below in different words. Keep every name, file name, email "
    "address, URL and number exactly as written. Reply with the rewritten request only."
)


def paraphrase(
    tasks: Sequence[SecurityTask], llm: LLM, *, seed: int = 0
) -> tuple[list[SecurityTask], int]:
    """Tasks whose request ``llm`` rewrote, and how many rewrites were rejected.

    A rewrite is kept only if it still contains every bound value the original request
    contained (names, paths, addresses, amounts), verbatim, and is of a sane length: the
    predicates are written over those values, so they stay valid. A rejected rewrite
    keeps the original request.
    """
    kept: list[SecurityTask] = []
    rejected = 0
    params = GenerationParams(max_tokens=160, temperature=0.7, seed=seed)
    for task in tasks:
        reply = llm.complete(
            [
                Message(role="system", content=PARAPHRASE_PROMPT),
                Message(role="user", content=task.goal),
            ],
            params,
        ).text.strip()
        needed = [v for v in task.bindings.values() if v and v in task.goal]
        sane = 0.5 * len(task.goal) <= len(reply) <= 2 * len(task.goal) + 40
        if reply and sane and all(v in reply for v in needed) and reply != task.goal:
            kept.append(task.model_copy(update={"goal": reply, "goal_source": "paraphrase"}))
        else:
            rejected += 1
            kept.append(task)
    return kept, rejected


def save_tasks(
    tasks: Sequence[SecurityTask],
    directory: str | Path,
    *,
    seed: int,
    specs: Iterable[str],
    paraphrase_model: str | None = None,
    paraphrase_rejected: int = 0,
) -> TaskManifest:
    """Write a task directory (each file atomically)."""
    root = Path(directory)
    by_category: dict[str, int] = {}
    for task in tasks:
        by_category[task.category] = by_category.get(task.category, 0) + 1
    manifest = TaskManifest(
        seed=seed,
        specs=list(specs),
        tasks=len(tasks),
        by_category=dict(sorted(by_category.items())),
        paraphrase_model=paraphrase_model,
        paraphrased=sum(t.goal_source == "paraphrase" for t in tasks),
        paraphrase_rejected=paraphrase_rejected,
    )
    write_atomic(root / TASKS, "".join(t.model_dump_json(by_alias=True) + "\n" for t in tasks))
    write_atomic(root / MANIFEST, manifest.model_dump_json(indent=2))
    return manifest


def load_tasks(directory: str | Path) -> tuple[TaskManifest, list[SecurityTask]]:
    """A task directory written by `save_tasks`.

    Raises:
        ConfigError: Not a task directory, another format version, a file that cannot be
            read or is not UTF-8, or a bad task line (the file, line and field are named).
    """
    root = Path(directory)
    path = root / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{root} is not a security task directory (no {MANIFEST})")
    try:
        raw = json.loads(read_text(path, what="task manifest"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc.msg})") from None
    if isinstance(raw, dict) and raw.get("version") not in (None, FORMAT_VERSION):
        raise ConfigError(
            f"{path}: version: tasks of format version {raw.get('version')!r}; this relaygraph "
            f"reads version {FORMAT_VERSION}. Synthesize them again"
        )
    try:
        manifest = TaskManifest.model_validate(raw)
    except ValidationError as exc:
        where, problem = first_problem(exc.errors())
        raise ConfigError(f"{path}: {where}: {problem}") from None
    tasks: list[SecurityTask] = []
    # One task per line, split at "\n" only: splitlines() also splits at the U+2028 and
    # U+0085 that JSON keeps unescaped inside a task's text.
    lines = read_text(root / TASKS, what="task file").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            tasks.append(SecurityTask.model_validate_json(line))
        except ValidationError as exc:
            where, problem = first_problem(exc.errors())
            raise ConfigError(f"{root / TASKS}:{number}: {where}: {problem}") from None
    if len(tasks) != manifest.tasks:
        raise ConfigError(
            f"{root / TASKS}: holds {len(tasks)} tasks, the manifest says {manifest.tasks}"
        )
    return manifest, tasks
