"""Distillation losses, and training a real student: resumable, exported, loadable."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from relaygraph.distill import build_dataset, save_dataset
from relaygraph.distill.losses import SpanWeights, Targets, combine, term_counts, terms
from relaygraph.distill.options import student_config
from relaygraph.distill.teacher import compute_distributions
from relaygraph.distill.train import CURRICULUM_START, TrainConfig, _order, train
from relaygraph.errors import ConfigError
from relaygraph.eval.runner import evaluate
from relaygraph.eval.security import SecuritySuite, assistant, load_specs, synthesize
from relaygraph.eval.security.scripted import scripted_assistant
from relaygraph.llm import LocalLLM, load_llm
from relaygraph.llm.scripted import ScriptedLLM


def _targets(with_teacher: bool = True) -> tuple[torch.Tensor, Targets]:
    torch.manual_seed(0)
    logits = torch.randn(4, 10)
    top = torch.topk(torch.log_softmax(logits, -1), 3)
    targets = Targets(
        token_ids=torch.tensor([1, 2, 3, 4]),
        reason=torch.tensor([True, True, False, False]),
        act=torch.tensor([False, False, True, True]),
        teacher_ids=top.indices if with_teacher else None,
        teacher_logprobs=top.values if with_teacher else None,
    )
    return logits, targets


def test_losses() -> None:
    logits, targets = _targets()
    kl, count = terms("kd", logits, targets)["kl"]
    assert count == 4 and abs(float(kl)) < 1e-5  # the student is the teacher: no divergence
    ce, _ = terms("sft", logits, targets)["ce"]
    expected = torch.nn.functional.cross_entropy(logits, targets.token_ids, reduction="sum")
    assert torch.isclose(ce, expected)
    parts = terms("structured", logits + torch.randn(4, 10), targets)
    assert {k: c for k, (_, c) in parts.items()} == term_counts("structured", targets)
    assert term_counts("structured", targets) == {"reason_kl": 2, "act_kl": 2, "act_ce": 2}
    sums = {k: v for k, (v, _) in parts.items()}
    weighted = combine("structured", sums, term_counts("structured", targets), SpanWeights(0, 0, 1))
    assert torch.isclose(weighted, sums["act_ce"] / 2)
    assert float(sums["reason_kl"]) > 0
    with pytest.raises(ValueError, match="needs the teacher's distributions"):
        terms("structured", *_targets(with_teacher=False))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Examples from a real run directory, on SmolLM2's tokenizer."""
    root = tmp_path_factory.mktemp("distill")
    tasks = [t for t in synthesize(load_specs(), seed=0) if t.spec == "todo-overreach"][:2]

    def factory(model: object, sandbox: object) -> object:
        task = next(t for t in tasks if t.goal == sandbox.goal)  # type: ignore[attr-defined]
        return assistant(scripted_assistant(task, obey_attack=False), sandbox)  # type: ignore[arg-type]

    suite = SecuritySuite(factory, ScriptedLLM([]))  # type: ignore[arg-type]
    evaluate(suite, tasks, root / "run", dataset="d", graph="g", model="m", show_progress=False)
    examples, stats = build_dataset([root / "run"], LocalLLM.load("smollm2-135m"))
    return save_dataset(examples, stats, root / "dataset")


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_student(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TrainConfig(loss="structured", layers=2, steps=4, batch=2, checkpoint_every=2, lr=1e-3)
    straight = train(config, dataset, tmp_path / "straight", show_progress=False)

    import relaygraph.distill.train as training

    real_step, calls = training._step, []

    def dies_at_step_3(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process is killed mid-run
        return real_step(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(training, "_step", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(config, dataset, tmp_path / "resumed", show_progress=False)
    monkeypatch.setattr(training, "_step", real_step)
    resumed = train(config, dataset, tmp_path / "resumed", show_progress=False)
    assert resumed.resumed_from == 2
    log = [json.loads(line) for line in (tmp_path / "resumed/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert math.isclose(resumed.final_loss, straight.final_loss, rel_tol=1e-3)
    assert (tmp_path / "resumed/loss.png").stat().st_size > 1000
    assert 0.5 < (resumed.teacher_mass or 0) <= 1.0

    student = load_llm(resumed.student)  # the registry loads it like any GGUF
    assert student.complete([{"role": "user", "content": "Hi"}]).usage.completion_tokens > 0

    other = config.model_copy(update={"steps": 5})
    with pytest.raises(ConfigError, match="holds a training run with other settings \\(steps\\)"):
        train(other, dataset, tmp_path / "resumed", show_progress=False)


@pytest.mark.slow
def test_sft_learns_the_teachers_replies(dataset: Path, tmp_path: Path) -> None:
    config = TrainConfig(loss="sft", layers=2, steps=6, batch=2, lr=1e-3, warmup=0)
    train(config, dataset, tmp_path / "sft", show_progress=False)
    log = [json.loads(line) for line in (tmp_path / "sft/log.jsonl").read_text().splitlines()]
    assert log[-1]["ce"] < log[0]["ce"] / 2


@pytest.mark.slow
def test_a_frozen_prefix_trains_only_the_blocks_above_it(dataset: Path, tmp_path: Path) -> None:
    from relaygraph.distill.student import make_student
    from relaygraph.distill.train import CHECKPOINT, teacher_path

    config = TrainConfig(
        loss="sft", layers=4, cut="middle", frozen=2, steps=4, batch=2, lr=1e-3, warmup=0
    )
    result = train(config, dataset, tmp_path / "frozen", show_progress=False)
    assert result.blocks == [0, 1, 28, 29]
    start = make_student(teacher_path("smollm2-135m"), result.blocks).state_dict()
    end = torch.load(tmp_path / "frozen" / CHECKPOINT, weights_only=True)["model"]
    for name in ("model.embed_tokens.weight", "model.layers.1.mlp.down_proj.weight"):
        assert torch.equal(start[name], end[name]), name
    for name in ("model.layers.2.mlp.down_proj.weight", "model.norm.weight"):
        assert not torch.equal(start[name], end[name]), name
    log = [json.loads(line) for line in (tmp_path / "frozen/log.jsonl").read_text().splitlines()]
    assert log[-1]["ce"] < log[0]["ce"]
    with pytest.raises(ValueError, match=r"frozen \(4\) must be below layers \(4\)"):
        TrainConfig(loss="sft", layers=4, frozen=4)


@pytest.mark.slow
def test_without_prompt_gradient_the_loss_is_the_same_and_only_the_update_differs(
    dataset: Path, tmp_path: Path
) -> None:
    from relaygraph.distill.train import CHECKPOINT

    config = TrainConfig(loss="sft", layers=4, cut="middle", frozen=2, steps=1, batch=2, lr=1e-3)
    runs = {}
    for exact in (True, False):
        out = tmp_path / f"prompt-gradient-{exact}"
        train(
            config.model_copy(update={"prompt_gradient": exact}), dataset, out, show_progress=False
        )
        runs[exact] = (
            json.loads((out / "log.jsonl").read_text().splitlines()[0])["ce"],
            torch.load(out / CHECKPOINT, weights_only=True)["model"],
        )
    assert math.isclose(runs[True][0], runs[False][0], rel_tol=1e-4)  # same forward pass
    name = "model.layers.2.self_attn.k_proj.weight"  # keys are the prompt's contribution
    assert not torch.equal(runs[True][1][name], runs[False][1][name])
    longer = config.model_copy(update={"prompt_gradient": False, "steps": 6, "warmup": 0})
    train(longer, dataset, tmp_path / "learns", show_progress=False)
    log = [json.loads(line) for line in (tmp_path / "learns/log.jsonl").read_text().splitlines()]
    assert log[-1]["ce"] < log[0]["ce"]


@pytest.mark.slow
def test_training_refuses_a_dataset_of_another_tokenizer(tmp_path: Path) -> None:
    examples, stats = build_dataset([_one_trace(tmp_path)], LocalLLM.load("gemma3-270m"))
    save_dataset(examples, stats, tmp_path / "gemma")
    with pytest.raises(ConfigError, match=r"target is not smollm2-135m's reply tokens"):
        train(TrainConfig(loss="sft"), tmp_path / "gemma", tmp_path / "out", show_progress=False)


@pytest.mark.slow
def test_teacher_distributions_refuse_targets_of_another_tokenizer(tmp_path: Path) -> None:
    examples, _ = build_dataset([_one_trace(tmp_path)], LocalLLM.load("gemma3-270m"))
    with pytest.raises(ConfigError, match=r"target is not smollm2-135m's reply tokens"):
        compute_distributions(examples, LocalLLM.load("smollm2-135m"))


def _one_trace(tmp_path: Path) -> Path:
    task = next(t for t in synthesize(load_specs(), seed=0) if t.spec == "todo-overreach")
    record, trace = SecuritySuite(assistant, scripted_assistant(task, obey_attack=False)).run(task)
    assert trace is not None and record.metrics["utility"] == 1
    return trace.save(tmp_path / "trace.json")


def test_student_config_reads_a_command_lines_options_by_field_name() -> None:
    parsed = {"dataset": "d", "out": "o", "seeds": 3, "layers": 12, "frozen": 4, "cut": "middle"}
    config = student_config(parsed, loss="kd", seed=2, act_ce=0.0)
    assert config == TrainConfig(loss="kd", layers=12, frozen=4, cut="middle", seed=2, act_ce=0)
    assert student_config(parsed | {"seed": 5}, loss="sft").seed == 5
    assert student_config(parsed | {"seed": 5}, loss="sft", seed=6).seed == 6  # given wins
    with pytest.raises(ValidationError, match="layer"):
        student_config(parsed, loss="kd", layer=3)  # a setting that is no field
    with pytest.raises(ValidationError, match=r"frozen \(4\) must be below layers \(4\)"):
        student_config(parsed | {"layers": 4}, loss="sft")


def test_action_keys_compare_what_the_agent_would_do() -> None:
    from relaygraph.distill.evaluate import action_key

    assert action_key("Thought: x\nAction: search[ Eiffel  Tower ]") == "search:eiffel tower"
    assert action_key("Final Answer: Paris") == action_key("Thought: y\nAction: finish[paris]")
    assert action_key("I am not sure.") is None


@pytest.mark.slow
def test_scoring_a_student_against_its_teacher(dataset: Path) -> None:
    from relaygraph.distill import load_dataset
    from relaygraph.distill.evaluate import agent_actions, score_student

    examples, _ = load_dataset(dataset)
    actions = agent_actions(examples)
    smollm2 = LocalLLM.load("smollm2-135m")
    # The scripted teacher's replies are exactly what a perfect student reproduces.
    perfect = ScriptedLLM([e.target.removeprefix("Thought:") for e in examples], name="perfect")
    best = score_student(perfect, smollm2, examples, actions)
    assert best.act_match == 1.0 and best.parsed == 1.0
    assert best.act_matches == [True] * len(examples)
    assert best.reason_perplexity is not None and best.reason_perplexity > 1.0
    real = score_student(smollm2, smollm2, examples[:2], actions, max_tokens=24)
    assert real.act_match == sum(real.act_matches) / 2 and 0.0 <= real.parsed <= 1.0
    assert real.tokens_per_s > 0


@pytest.mark.slow
def test_the_cli_refuses_an_unknown_loss_or_precision(tmp_path: Path) -> None:
    from commands import relaygraph_cli

    for option, value in (("--loss", "distill-harder"), ("--precision", "q4_0"), ("--cut", "x")):
        done = relaygraph_cli("distill", "train", str(tmp_path), "--out", str(tmp_path / "o"),
                              option, value)  # fmt: skip
        assert done.returncode == 2
        assert f"{option} must be one of" in done.stderr and value in done.stderr


def test_a_curriculum_goes_from_the_shortest_replies_to_all_of_them() -> None:
    lengths = [40, 5, 30, 10, 20, 50, 15, 25, 35, 45]  # the index order of length: 1 3 6 4 ...
    config = TrainConfig(loss="sft", steps=10, batch=2, seed=3, curriculum=True)
    order = _order(lengths, config)
    assert len(order) == 20 and order == _order(lengths, config)  # the seed alone decides
    first = order[:2]
    easiest = sorted(range(10), key=lengths.__getitem__)[: math.ceil(CURRICULUM_START * 10)]
    assert set(first) <= set(easiest)
    assert len(set(order)) > len(easiest)  # the pool grows past the easiest share
    steps = [order[i : i + 2] for i in range(0, 20, 2)]
    assert all(len(set(s)) == 2 for s in steps)  # no example twice in a batch
    mean_length = [sum(lengths[i] for i in s) / 2 for s in steps]
    assert sum(mean_length[:3]) < sum(mean_length[-3:])
    plain = _order(lengths, config.model_copy(update={"curriculum": False}))
    assert sorted(plain[:10]) == list(range(10))  # without: every example once per pass
