"""Traces → REASON/ACT examples: spans, token masks on the real tokenizers, filters, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from commands import eval_cli, relaygraph_cli

from relaygraph.agents import Agent
from relaygraph.distill import (
    NoStructureError,
    build_dataset,
    find_spans,
    load_dataset,
    save_dataset,
    token_masks,
)
from relaygraph.distill.evaluate import agent_actions, score_student
from relaygraph.errors import ConfigError
from relaygraph.eval.runner import evaluate
from relaygraph.eval.security import SecuritySuite, assistant, load_specs, synthesize
from relaygraph.eval.security.scripted import scripted_assistant
from relaygraph.graph import AgentGraph
from relaygraph.llm import LocalLLM
from relaygraph.llm.scripted import ScriptedLLM

TRICKY = [
    "Thought: look it up.\nAction: search[Paris]\n",
    "Thought: a\n\n**Action:** lookup[b]\n\nmore text",
    "Final Answer: Paris",
    "Thought: café 🙂 naïve\nAction: finish[Zürich]",
    "Thought:\nAction: act[go to desk 1]\nObservation: you arrive",
    'reasoning without a label\n- action : finish[{"a": [1, 2]}]',
]


def _text(reply: str, span: tuple[int, int]) -> str:
    return reply[span[0] : span[1]]


def test_spans_follow_what_the_parser_reads() -> None:
    spans = [find_spans(r) for r in TRICKY]
    acts = [_text(r, s.act) for r, s in zip(TRICKY, spans, strict=True)]
    assert acts == [
        "Action: search[Paris]",
        "**Action:** lookup[b]",
        "Final Answer: Paris",
        "Action: finish[Zürich]",
        "Action: act[go to desk 1]",
        '- action : finish[{"a": [1, 2]}]',
    ]
    reasons = [_text(r, s.reason) for r, s in zip(TRICKY, spans, strict=True)]
    assert reasons == [
        "Thought: look it up.",
        "Thought: a",
        "",
        "Thought: café 🙂 naïve",
        "Thought:",
        "reasoning without a label",
    ]
    with pytest.raises(NoStructureError, match="no REASON/ACT structure"):
        find_spans("Paris is the answer.")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m"])
def test_token_masks_on_the_real_tokenizers(model: str) -> None:
    llm = LocalLLM.load(model)
    for reply in TRICKY:
        ids = llm.tokenize(reply)
        spans = find_spans(reply)
        reason, act = token_masks(llm, reply, ids, spans)
        assert not any(r and a for r, a in zip(reason, act, strict=True))
        act_text = llm.detokenize([t for t, m in zip(ids, act, strict=True) if m])
        assert act_text.strip() == _text(reply, spans.act)
        reason_text = llm.detokenize([t for t, m in zip(ids, reason, strict=True) if m])
        assert reason_text.strip() == _text(reply, spans.reason)
    other = LocalLLM.load("gemma3-270m" if model == "smollm2-135m" else "smollm2-135m")
    reply = TRICKY[0]
    with pytest.raises(ConfigError, match=r"do not read back as the target|outside the vocab"):
        token_masks(llm, reply, other.tokenize(reply), find_spans(reply))


@pytest.mark.slow
def test_detokenizing_ids_outside_the_vocabulary_is_an_error_not_an_abort() -> None:
    smollm2 = LocalLLM.load("smollm2-135m")
    with pytest.raises(ConfigError, match="token id 200000 is outside the vocabulary"):
        smollm2.detokenize([1, 200000])
    with pytest.raises(ConfigError, match="token id -1 is outside the vocabulary"):
        smollm2.detokenize([-1])


@pytest.mark.slow
def test_the_line_break_that_ends_the_thought_is_reason_and_what_follows_act_is_neither() -> None:
    llm = LocalLLM.load("smollm2-135m")
    reply = "Thought: look it up.\nAction: search[Paris]\n\nObservation: made up"
    ids = llm.tokenize(reply)
    reason, act = token_masks(llm, reply, ids, find_spans(reply))
    pieces = [llm.detokenize([i]) for i in ids]
    labels = ["reason" if r else "act" if a else "-" for r, a in zip(reason, act, strict=True)]
    first_act = labels.index("act")
    assert pieces[first_act - 1] == "\n" and labels[first_act - 1] == "reason"
    assert "Observation" in "".join(p for p, lab in zip(pieces, labels, strict=True) if lab == "-")
    assert labels[-1] == "-"


def test_a_token_across_the_boundary_counts_as_act() -> None:
    """ScriptedLLM's whitespace tokenizer makes one token of '\\nAction:'."""
    words = ScriptedLLM([])
    reply = "Thought: x\nAction: search[y]"
    ids = words.tokenize(reply)
    pieces = [words.detokenize([i]) for i in ids]
    reason, act = token_masks(words, reply, ids, find_spans(reply))
    assert pieces == ["Thought:", " x", "\nAction:", " search[y]"]
    assert reason == [1, 1, 0, 0] and act == [0, 0, 1, 1]


def _security_run(tmp_path: Path) -> Path:
    """A real evaluation run directory: two tasks, one solved, one failed."""
    tasks = [t for t in synthesize(load_specs(), seed=0) if t.spec == "todo-overreach"][:2]

    def factory(model: object, sandbox: object) -> AgentGraph:
        task = next(t for t in tasks if t.goal == sandbox.goal)  # type: ignore[attr-defined]
        llm = scripted_assistant(task, obey_attack=task is tasks[1])
        return assistant(llm, sandbox)  # type: ignore[arg-type]

    suite = SecuritySuite(factory, ScriptedLLM([]))  # type: ignore[arg-type]
    evaluate(
        suite, tasks, tmp_path / "run", dataset="two", graph="s", model="s", show_progress=False
    )
    return tmp_path / "run"


@pytest.mark.slow
def test_build_from_a_run_directory_with_the_success_filter(tmp_path: Path) -> None:
    smollm2 = LocalLLM.load("smollm2-135m")
    run = _security_run(tmp_path)
    examples, stats = build_dataset([run], smollm2)
    assert stats.episodes == 2 and stats.successful_episodes == 1
    assert stats.examples == len(examples) == 6  # reference: 2 steps; obeying: 4
    first = examples[0]
    assert first.messages[0].role == "system" and first.target.startswith("Thought:")
    assert first.prompt_ids == smollm2.encode(first.messages)
    assert len(first.target_ids) == len(first.reason_mask) == len(first.act_mask)
    # the reply's tokens, then <|im_end|> as the last ACT token: students learn to stop
    assert first.target_ids[:-1] == smollm2.tokenize(first.target)
    assert smollm2.detokenize(first.target_ids[-1:]) == ""
    assert first.target_ids[-1] == smollm2.end_of_turn_id in smollm2.end_token_ids
    assert first.act_mask[-1] == 1 and first.reason_mask[-1] == 0
    assert stats.reason_tokens + stats.act_tokens <= stats.target_tokens

    kept, filtered = build_dataset([run], smollm2, only_successful=True)
    assert {e.success for e in kept} == {True} and filtered.skipped["unsuccessful episode"] == 4

    trace = next((run / "traces").glob("*.json"))
    with pytest.raises(ConfigError, match="does not record whether its episode succeeded"):
        build_dataset([trace], smollm2, only_successful=True)
    assert build_dataset([trace], smollm2)[1].successful_episodes is None

    save_dataset(examples, stats, tmp_path / "ds")
    loaded, loaded_stats = load_dataset(tmp_path / "ds")
    assert loaded == examples and loaded_stats == stats
    schema = json.loads((tmp_path / "ds/schema.json").read_text())
    assert {"reason_mask", "act_mask", "prompt_ids"} <= set(schema["properties"])
    lines = (tmp_path / "ds/examples.jsonl").read_text().splitlines()
    (tmp_path / "ds/examples.jsonl").write_text(lines[0] + '\n{"id": 1}\n')
    with pytest.raises(ConfigError, match=r"examples\.jsonl:2: "):
        load_dataset(tmp_path / "ds")


@pytest.mark.slow
def test_traces_without_structure_are_refused(tmp_path: Path) -> None:
    graph = AgentGraph("plain", model=ScriptedLLM(["Paris."]))
    graph.add_agent(Agent(name="solver", role="solver", answer_format="plain"))
    with graph.set_entry("solver").set_finish("solver").compile() as compiled:
        compiled.invoke("Capital of France?").trace.save(tmp_path / "plain.json")
    with pytest.raises(ConfigError, match="no step with a REASON/ACT structure"):
        build_dataset([tmp_path / "plain.json"], ScriptedLLM([]))
    with pytest.raises(ConfigError, match="is not an evaluation run directory"):
        build_dataset([tmp_path], ScriptedLLM([]))


@pytest.mark.slow
def test_cli_builds_a_dataset_from_a_real_model_run(tmp_path: Path) -> None:
    """Teacher traces from the real model (SmolLM2 playing one security task)."""
    tasks = tmp_path / "tasks"
    assert eval_cli("security", "synthesize", "--out", str(tasks)).returncode == 0
    run = eval_cli(
        "security", "run", "--tasks", str(tasks), "--limit", "1", "--out", str(tmp_path / "run")
    )
    assert run.returncode == 0, run.stderr
    built = relaygraph_cli(
        "distill", "build-dataset", str(tmp_path / "run"), "--out", str(tmp_path / "ds")
    )
    assert built.returncode == 0, built.stderr
    assert "REASON / ACT tokens" in built.stdout
    examples, stats = load_dataset(tmp_path / "ds")
    assert stats.examples == len(examples) >= 1
    assert all(e.tokenizer == "smollm2-135m" and e.max_tokens for e in examples)
    # Evaluation replies the way the runtime does (guided where a free reply does not
    # parse), so the teacher reproduces its own steps' actions.
    smollm2 = LocalLLM.load("smollm2-135m")
    own = score_student(smollm2, smollm2, examples, agent_actions(examples))
    assert own.act_match == 1.0


@pytest.mark.slow
def test_cli_refuses_a_remote_tokenizer(tmp_path: Path) -> None:
    """Masks and the end-of-turn token need the student's own (embedded) tokenizer."""
    built = relaygraph_cli(
        "distill",
        "build-dataset",
        str(tmp_path),
        "--out",
        str(tmp_path / "ds"),
        "--tokenizer",
        "openai:http://127.0.0.1:9/v1/smollm2-135m",
    )
    assert built.returncode == 2 and "is not an embedded" in built.stderr
    assert not (tmp_path / "ds").exists()
