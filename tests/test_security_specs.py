"""Risk specs, task synthesis and the task directory: valid ones expand, bad ones are named."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from relaygraph.errors import ConfigError
from relaygraph.eval.security import (
    CATEGORIES,
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
    with pytest.raises(ConfigError, match=r"no \*\.yaml risk specs"):
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
