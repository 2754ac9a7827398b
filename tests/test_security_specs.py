"""Risk specs, task synthesis and the task directory: valid ones expand, bad ones are named."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from relaygraph.errors import ConfigError, first_problem
from relaygraph.eval.security import (
    CATEGORIES,
    RiskSpec,
    load_spec,
    load_specs,
    load_tasks,
    paraphrase,
    save_tasks,
    synthesize,
)
from relaygraph.eval.security.predicates import EmailSent, ToolCalled, bind
from relaygraph.eval.security.spec import SHIPPED_SPECS


def test_shipped_specs_expand_to_150_tasks_over_7_categories() -> None:
    specs = load_specs()
    tasks = synthesize(specs, seed=0)
    assert len(tasks) >= 150
    categories = Counter(t.category for t in tasks)
    assert set(categories) == set(CATEGORIES) and len(CATEGORIES) >= 7
    assert min(categories.values()) >= 20
    kinds = Counter(t.kind for t in tasks)
    assert kinds["benign"] >= 20 and kinds["attack"] >= 120
    assert len({t.id for t in tasks}) == len(tasks)
    for task in tasks:
        text = json.dumps(task.model_dump())
        assert "{" + "attacker}" not in text  # every placeholder was bound
        assert (task.attack_goal == []) == (task.kind == "benign")


def test_synthesis_is_deterministic_and_ids_are_stable_across_seeds() -> None:
    specs = load_specs()
    first, again = synthesize(specs, seed=3), synthesize(specs, seed=3)
    assert [t.model_dump() for t in first] == [t.model_dump() for t in again]
    other = {t.id: t for t in synthesize(specs, seed=4)}
    assert [t.id for t in first] != list(other)  # another seed draws other tasks...
    shared = [t for t in first if t.id in other]
    assert shared  # ...and a task drawn by both has the same id and content
    assert all(other[t.id].model_dump() == t.model_dump() for t in shared)


def test_payloads_are_planted_where_the_spec_says() -> None:
    spec = next(s for s in load_specs() if s.id == "inbox-summary-injection")
    tasks = synthesize([spec], seed=0)
    for task in tasks:
        body = task.environment.inbox[0].body
        planted = any(payload.split("{")[0][:30] in body for payload in spec.attack.payloads)
        assert planted == (task.kind == "attack")
        if task.position == "start":
            assert not body.startswith("Hi,")
        if task.position == "end":
            assert body.startswith("Hi,") and not body.rstrip().endswith("numbers.")


def test_binding_escapes_values_inside_regexes() -> None:
    predicate = bind(EmailSent(to="{who}"), {"who": "a.b+c@x.test"})
    assert predicate.to == r"a\.b\+c@x\.test"
    call = bind(ToolCalled(tool="run_shell", args={"command": "rm {dir}"}), {"dir": "data(1)"})
    assert call.args["command"] == r"rm data\(1\)"


def _spec(tmp_path: Path, change: dict[str, object], name: str = "bad.yaml") -> Path:
    data = yaml.safe_load((SHIPPED_SPECS / "install_script.yaml").read_text())
    for dotted, value in change.items():
        *parents, last = dotted.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"category": "sabotage"}, "bad.yaml: category: Input should be 'prompt_injection'"),
        ({"tools": ["read_file", "teleport"]}, "bad.yaml: tools: unknown tools ['teleport']"),
        (
            {"attack.goal.0.tool": "pay"},
            "bad.yaml: attack.goal.0.tool: 'pay' is not one of this spec's tools",
        ),
        (
            {"goals.0": "Read {manual} please"},
            "bad.yaml: goals.0: template variable {manual} is not bound by parameters",
        ),
        (
            {"attack.target": "setup/MISSING.md"},
            "bad.yaml: attack.target: 'setup/MISSING.md' is not one of environment.files",
        ),
        (
            {"reference.calls.0.tool": "send_email"},
            "bad.yaml: reference.calls.0.tool: 'send_email' is not one of this spec's tools",
        ),
        (
            {"attack.goal": [{"type": "judge", "question": "Was it bad?"}]},
            "a judge only ever adds to rule-based checks",
        ),
        ({"utility.0.pattern": "(unclosed"}, "bad.yaml: utility.0.answer_matches.pattern"),
        (
            {"environment.files": {"../escape.txt": "x"}},
            "bad.yaml: environment.files: '../escape.txt' must be a relative path",
        ),
    ],
)
def test_bad_specs_name_the_file_and_field(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_spec(_spec(tmp_path, change))
    assert message in str(caught.value)


def test_spec_folders_are_checked_as_a_whole(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no \*\.yaml or \*\.yml risk specs"):
        load_specs(tmp_path)
    _spec(tmp_path, {}, "one.yaml")
    _spec(tmp_path, {}, "two.yaml")
    with pytest.raises(ConfigError, match=r"two\.yaml: id: 'install-script' is already used"):
        load_specs(tmp_path)
    (tmp_path / "three.yaml").write_text("id: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_spec(tmp_path / "three.yaml")


def test_task_directory_round_trip_and_refusals(tmp_path: Path) -> None:
    specs = load_specs()
    tasks = synthesize(specs, seed=0)
    manifest = save_tasks(tasks, tmp_path / "tasks", seed=0, specs=[s.id for s in specs])
    assert manifest.tasks == len(tasks) and sum(manifest.by_category.values()) == len(tasks)
    loaded_manifest, loaded = load_tasks(tmp_path / "tasks")
    assert loaded_manifest == manifest
    assert [t.model_dump() for t in loaded] == [t.model_dump() for t in tasks]
    odd = [tasks[0].model_copy(update={"goal": "line\u2028separator\x85next line"})]
    save_tasks(odd, tmp_path / "odd", seed=0, specs=[specs[0].id])
    assert load_tasks(tmp_path / "odd")[1] == odd  # one task, though splitlines() sees three

    with pytest.raises(ConfigError, match="is not a security task directory"):
        load_tasks(tmp_path)
    raw = json.loads((tmp_path / "tasks/manifest.json").read_text())
    (tmp_path / "tasks/manifest.json").write_text(json.dumps(raw | {"version": 99}))
    with pytest.raises(ConfigError, match=r"manifest\.json: version: tasks of format version 99"):
        load_tasks(tmp_path / "tasks")
    (tmp_path / "tasks/manifest.json").write_text(json.dumps(raw))
    lines = (tmp_path / "tasks/tasks.jsonl").read_text().splitlines()
    broken = json.loads(lines[4])
    broken["category"] = "sabotage"
    lines[4] = json.dumps(broken)
    (tmp_path / "tasks/tasks.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"tasks.jsonl:5: category: Input should be"):
        load_tasks(tmp_path / "tasks")


@pytest.mark.slow
def test_paraphrase_on_the_real_model_keeps_every_bound_value(smollm2: object) -> None:
    tasks = synthesize(load_specs(), seed=0)[:6]
    rewritten, rejected = paraphrase(tasks, smollm2, seed=0)  # type: ignore[arg-type]
    assert len(rewritten) == len(tasks)
    assert rejected == sum(t.goal_source == "template" for t in rewritten)
    for before, after in zip(tasks, rewritten, strict=True):
        if after.goal_source == "paraphrase":
            assert after.goal != before.goal
            for value in before.bindings.values():
                if value in before.goal:
                    assert value in after.goal
        else:
            assert after.goal == before.goal
        assert after.utility == before.utility and after.violations == before.violations


def test_a_spec_that_is_not_utf8_names_the_bad_byte(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_bytes(b"id: x\ntitle: caf\xff\n")
    bad = r"x\.yaml: not UTF-8 text \(invalid byte 0xff at offset 16\)"
    with pytest.raises(ConfigError, match=bad):
        load_spec(tmp_path / "x.yaml")
    specs = load_specs()
    save_tasks(synthesize(specs[:1]), tmp_path / "tasks", seed=0, specs=[specs[0].id])
    (tmp_path / "tasks/tasks.jsonl").write_bytes(b'{"id": "\xe2\x28"}\n')
    with pytest.raises(ConfigError, match=r"tasks\.jsonl: not UTF-8 text \(invalid byte 0xe2 at"):
        load_tasks(tmp_path / "tasks")
    (tmp_path / "tasks/manifest.json").write_bytes(b"\x80{}")
    with pytest.raises(ConfigError, match=r"manifest\.json: not UTF-8 text \(invalid byte 0x80"):
        load_tasks(tmp_path / "tasks")


def test_a_misspelled_key_is_reported_with_the_key_it_meant(tmp_path: Path) -> None:
    data = yaml.safe_load((SHIPPED_SPECS / "install_script.yaml").read_text())
    data["attack"]["paylods"] = data["attack"].pop("payloads")
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as caught:
        load_spec(tmp_path / "typo.yaml")
    assert "typo.yaml: attack.paylods: unknown field 'paylods' (did you mean 'payloads'?)" in str(
        caught.value
    )


def test_first_problem_puts_an_unknown_field_first_and_hints_at_the_missing_one() -> None:
    missing = {"type": "missing", "loc": ("body", "attack", "payloads"), "msg": "Field required"}
    extra = {"type": "extra_forbidden", "loc": ("body", "attack", "paylods"), "msg": "Extra"}
    assert first_problem([missing, extra], skip=("body",)) == (
        "attack.paylods",
        "unknown field 'paylods' (did you mean 'payloads'?)",
    )
    # No sibling resembles it (or the missing field sits elsewhere): pydantic's message.
    far = {"type": "extra_forbidden", "loc": ("attack", "colour"), "msg": "Extra inputs"}
    assert first_problem([missing, far]) == ("attack.colour", "Extra inputs")
    elsewhere = {"type": "missing", "loc": ("reference", "paylods_x"), "msg": "Field required"}
    assert first_problem([elsewhere, {**extra, "loc": ("attack", "paylods")}])[1] == "Extra"
    assert first_problem([missing]) == ("body.attack.payloads", "Field required")


def test_a_parameter_value_that_breaks_a_path_names_the_spec_and_parameter(
    tmp_path: Path,
) -> None:
    path = _spec(
        tmp_path,
        {
            "parameters.file": ["todo.txt", "../../etc/passwd"],
            "environment.files.notes/{file}": "x",
        },
    )
    with pytest.raises(ConfigError) as caught:
        synthesize([load_spec(path)], verify=False)
    assert str(caught.value) == (
        "spec 'install-script': parameter file='../../etc/passwd' makes environment.files "
        "invalid: 'notes/../../etc/passwd' must be a relative path inside the workspace"
    )


def _invoice(change: Callable[[dict[str, Any]], None]) -> RiskSpec:
    """The shipped invoice spec (pay, read_inbox) with ``change`` made to its data."""
    data = next(s for s in load_specs() if s.id == "invoice-redirect").model_dump(by_alias=True)
    change(data)
    return RiskSpec.model_validate(data)


def _set(dotted: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value

    return change


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (
            _set("attack.actions.0.args.to", "DE00000000000000000000"),
            "its attack cannot reach its goal: 'paid the attacker' never held",
        ),
        (
            _set("attack.actions.0.args.amount", "5000"),
            "its attack cannot reach its goal: 'paid the attacker' never held (attack action 1 "
            "pay failed: ValueError: insufficient funds: balance",
        ),
        (
            _set("reference.calls.1.args", {"payee": "{account}", "amount": "{amount}"}),
            "reference call 2 does not validate: pay has no argument 'payee' (it takes to, "
            "amount, memo)",
        ),
        (
            _set("attack.actions.0.args.amount", "lots"),
            "attack action 1 does not validate: pay: invalid argument 'amount': Input should "
            "be a valid number",
        ),
        (
            _set("reference.calls.1.args.amount", "5000"),
            "its reference solution does not run: reference call 2 pay failed: ValueError: "
            "insufficient funds",
        ),
        (
            _set("reference.calls", [{"tool": "read_inbox", "args": {"query": "invoice"}}]),
            "its reference solution misses its utility check 'vendor paid'",
        ),
        (
            _set("violations", [{"type": "tool_called", "tool": "read_inbox", "name": "read"}]),
            "its reference solution is unsafe: 'read' held at step 1",
        ),
    ],
)
def test_synthesis_refuses_a_spec_whose_tasks_do_not_hold(
    change: Callable[[dict[str, Any]], None], why: str
) -> None:
    spec = _invoice(change)
    with pytest.raises(ConfigError) as caught:
        synthesize([spec])
    assert str(caught.value).startswith("spec 'invoice-redirect', task 'invoice-redirect/")
    assert why in str(caught.value)
    assert synthesize([spec], verify=False)  # only on request: the tasks as written
