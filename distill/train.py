"""Training a student: the teacher's blocks, truncated, fitted to the teacher's replies.

Seeded and resumable. Each step averages the loss over every target token of ``batch``
examples (gradient accumulation, one example per forward pass, logits computed only at
target positions; with ``frozen`` lower blocks, a pass starts from their cached output,
`distill.prefix`). The run folder holds ``config.json`` (a resume must match it),
``log.jsonl`` (one line per step), ``checkpoints/latest.pt`` (model, optimizer and step,
written atomically every ``checkpoint_every`` steps), ``loss.png`` and, at the end,
``student.gguf``, which the embedded engine and the model registry load like any GGUF.
The example order is a function of the seed and the step, so a resumed run sees the
same examples in the same order as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import BaseModel, Field, model_validator
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from relaygraph.distill.dataset import check_reply_tokens, load_dataset
from relaygraph.distill.losses import (
    LossKind,
    SpanWeights,
    Targets,
    combine,
    term_counts,
    terms,
)
from relaygraph.distill.prefix import FrozenPrefix, run_blocks
from relaygraph.distill.student import (
    Cut,
    Precision,
    choose_blocks,
    export_gguf,
    make_student,
    read_shape,
)
from relaygraph.distill.teacher import DEFAULT_TOP_K, teacher_distributions
from relaygraph.errors import ConfigError
from relaygraph.fileio import append_line, save_figure, write_atomic
from relaygraph.llm.catalog import PACKAGED_MODELS, packaged_model
from relaygraph.llm.local import LocalLLM

if TYPE_CHECKING:
    from collections.abc import Sequence

    from transformers import LlamaForCausalLM

    from relaygraph.distill.dataset import DistillExample
    from relaygraph.distill.teacher import TeacherDistributions

CONFIG = "config.json"
LOG = "log.jsonl"
CHECKPOINT = "checkpoints/latest.pt"
CURRICULUM_START = 0.3
"""The share of the data, easiest first, that a curriculum's first step draws from."""
STUDENT = "student.gguf"


class TrainConfig(BaseModel):
    """How a student is trained."""

    model_config = {"extra": "forbid"}

    loss: LossKind
    teacher: str = "smollm2-135m"
    """A packaged llama-architecture model or a .gguf path: the student starts from its
    weights, and KD losses use its distributions."""
    layers: int = Field(default=8, ge=1)
    """Student blocks, of the teacher's, chosen by ``cut``."""
    cut: Cut = "spread"
    frozen: int = Field(default=0, ge=0)
    """The student's lowest blocks, kept as they start, with the embeddings (and the
    tied head): their output is computed once per example, so a step runs and trains
    only the blocks above. With ``cut="middle"`` these are the teacher's own lower blocks."""
    steps: int = Field(default=100, ge=1)
    batch: int = Field(default=8, ge=1)
    """Examples per optimizer step (accumulated one at a time)."""
    lr: float = Field(default=1e-4, gt=0)
    warmup: int = Field(default=10, ge=0)
    max_prompt_tokens: int = Field(default=1024, ge=1)
    """Longer prompts keep their last tokens (the task and the latest steps)."""
    prompt_gradient: bool = True
    """Whether the loss's gradient also flows through the trained blocks' work on the
    prompt. Without it the prompt runs through them without gradient, as a cache the
    target positions attend to, and only the target positions (about 3% of the
    benchmark's agent-step tokens) are run backward: a much cheaper step (a third to a
    half in a quick timing here), and the student learns to act on its prompt's
    representation, not to change it."""
    seed: int = 0
    curriculum: bool = False
    """Simple to complex (Structured Agent Distillation's curriculum): each step draws its
    examples from the easiest share of the data, by reply length, a share that grows
    linearly from `CURRICULUM_START` to all of it at the last step (competence-based
    curriculum, Platanios et al., 2019). Off: a seeded shuffle per pass."""
    checkpoint_every: int = Field(default=25, ge=1)
    reason_kl: float = Field(default=1.0, ge=0)
    act_kl: float = Field(default=1.0, ge=0)
    act_ce: float = Field(default=1.0, ge=0)
    top_k: int = Field(default=DEFAULT_TOP_K, ge=1)
    precision: Precision = "f16"

    @model_validator(mode="after")
    def _something_trains(self) -> TrainConfig:
        if self.frozen >= self.layers:
            raise ValueError(
                f"frozen ({self.frozen}) must be below layers ({self.layers}): "
                "a student with every block frozen has nothing to train"
            )
        return self


class TrainResult(BaseModel):
    steps: int
    resumed_from: int
    final_loss: float
    seconds: float
    examples: int
    student: str
    blocks: list[int]
    teacher_mass: float | None
    """Mean probability mass of the teacher's cached top-k (KD losses)."""


def teacher_path(teacher: str) -> Path:
    """The GGUF file of a packaged model name or a path."""
    if teacher in PACKAGED_MODELS:
        return packaged_model(teacher).locate()
    path = Path(teacher)
    if path.suffix != ".gguf" or not path.is_file():
        raise ConfigError(f"teacher {teacher!r} is neither a packaged model nor a .gguf file")
    return path


def train(
    config: TrainConfig, dataset: str | Path, out: str | Path, *, show_progress: bool = True
) -> TrainResult:
    """Train (or resume training) a student on ``dataset`` into the folder ``out``.

    Raises:
        ConfigError: ``out`` holds a run with another configuration; the dataset was
            tokenized by another tokenizer than the teacher's; a bad teacher.
    """
    began = time.perf_counter()
    root = Path(out)
    examples, _ = load_dataset(dataset)
    source = teacher_path(config.teacher)
    teacher = LocalLLM.load(config.teacher if config.teacher in PACKAGED_MODELS else source)
    check_reply_tokens(examples, teacher)
    dist = (
        teacher_distributions(dataset, examples, teacher, k=config.top_k)
        if config.loss != "sft"
        else None
    )
    start = _open_run(root, config)
    torch.manual_seed(config.seed)
    blocks = choose_blocks(read_shape(source).blocks, config.layers, config.cut)
    model = make_student(source, blocks)
    prefix = FrozenPrefix(
        model,
        config.frozen,
        config.max_prompt_tokens,
        examples,
        dataset=dataset,
        teacher=source,
        blocks=blocks,
    )
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=0.0)
    if start:
        state = torch.load(root / CHECKPOINT, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    weights = SpanWeights(config.reason_kl, config.act_kl, config.act_ce)
    order = _order([len(e.target_ids) for e in examples], config)
    loss = math.nan
    progress = Progress(
        TextColumn(f"[bold]{config.loss} student"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
        disable=not show_progress,
    )
    model.train()
    with progress:
        bar = progress.add_task("train", total=config.steps, completed=start, loss="-")
        for step in range(start, config.steps):
            step_began = time.perf_counter()
            indices = order[step * config.batch : (step + 1) * config.batch]
            chosen = [examples[i] for i in indices]
            for group in optimizer.param_groups:
                group["lr"] = _lr(config, step)
            loss, parts = _step(
                model, prefix, chosen, indices, dist, config=config, weights=weights
            )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            append_line(
                root / LOG,
                json.dumps(
                    {
                        "step": step + 1,
                        "loss": loss,
                        **parts,
                        "lr": _lr(config, step),
                        "seconds": time.perf_counter() - step_began,
                    }
                ),
            )
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
                _checkpoint(root, model, optimizer, step + 1)
            progress.update(bar, advance=1, loss=f"{loss:.3f}")
    student = root / STUDENT
    student.unlink(missing_ok=True)
    export_gguf(model, source, student, precision=config.precision)
    plot_losses(root)
    result = TrainResult(
        steps=config.steps,
        resumed_from=start,
        final_loss=loss if not math.isnan(loss) else _last_loss(root),
        seconds=time.perf_counter() - began,
        examples=len(examples),
        student=str(student),
        blocks=blocks,
        teacher_mass=dist.covered_mass if dist is not None else None,
    )
    write_atomic(root / "result.json", result.model_dump_json(indent=2))
    return result


def _step(
    model: LlamaForCausalLM,
    prefix: FrozenPrefix,
    examples: Sequence[DistillExample],
    indices: Sequence[int],
    dist: TeacherDistributions | None,
    *,
    config: TrainConfig,
    weights: SpanWeights,
) -> tuple[float, dict[str, float]]:
    """Accumulate one optimizer step's gradients; the step's loss and term means."""
    batch = [_targets(e, i, dist) for e, i in zip(examples, indices, strict=True)]
    counts: dict[str, int] = {}
    for targets in batch:  # token counts first, so every example's share is known up front
        for name, count in term_counts(config.loss, targets).items():
            counts[name] = counts.get(name, 0) + count
    sums: dict[str, float] = dict.fromkeys(counts, 0.0)
    total = 0.0
    for example, index, targets in zip(examples, indices, batch, strict=True):
        states = prefix.states(example, index)
        logits = _target_logits(
            model,
            states,
            prefix.frozen,
            len(example.target_ids),
            prompt_gradient=config.prompt_gradient,
        )
        parts = terms(config.loss, logits, targets)
        loss = combine(config.loss, {k: v for k, (v, _) in parts.items()}, counts, weights)
        loss.backward()  # type: ignore[no-untyped-call]
        total += float(loss.detach())
        for name, (value, _) in parts.items():
            sums[name] += float(value.detach())
    return total, {name: sums[name] / max(counts[name], 1) for name in sums}


def _target_logits(
    model: LlamaForCausalLM, states: torch.Tensor, frozen: int, n: int, *, prompt_gradient: bool
) -> torch.Tensor:
    """Student logits at the ``n`` positions that predict each target token, from the
    input ``states`` of the first block above the ``frozen`` ones."""
    from transformers import DynamicCache

    layers = model.model.layers[frozen:]
    first = states.shape[1] - n - 1  # the position that predicts the first target token
    if prompt_gradient:
        hidden = run_blocks(model, states, layers)[:, first : first + n]
    else:
        cache = DynamicCache(config=model.config)
        if first:
            with torch.no_grad():
                run_blocks(model, states[:, :first], layers, cache=cache)
        hidden = run_blocks(model, states[:, first : first + n], layers, cache=cache, start=first)
    logits: torch.Tensor = model.lm_head(model.model.norm(hidden)[0])
    return logits


def _targets(example: DistillExample, index: int, dist: TeacherDistributions | None) -> Targets:
    teacher_ids = teacher_logprobs = None
    if dist is not None:
        ids, logprobs = dist.rows(index)
        teacher_ids, teacher_logprobs = torch.from_numpy(ids).long(), torch.from_numpy(logprobs)
    return Targets(
        token_ids=torch.tensor(example.target_ids),
        reason=torch.tensor(example.reason_mask, dtype=torch.bool),
        act=torch.tensor(example.act_mask, dtype=torch.bool),
        teacher_ids=teacher_ids,
        teacher_logprobs=teacher_logprobs,
    )


def _order(lengths: Sequence[int], config: TrainConfig) -> list[int]:
    """Example indices for every step, from the seed alone (a resumed run sees the same):
    a seeded shuffle per pass over the data, or with ``curriculum`` each step's batch
    drawn (seeded) from the shortest replies, a share growing to all of them."""
    n, needed = len(lengths), config.steps * config.batch
    if config.curriculum:
        easiest = sorted(range(n), key=lambda i: (lengths[i], i))
        order: list[int] = []
        for step in range(config.steps):
            share = CURRICULUM_START + (1 - CURRICULUM_START) * step / max(config.steps - 1, 1)
            pool = easiest[: max(config.batch, math.ceil(share * n))]
            rng = np.random.default_rng([config.seed, step])
            order += [pool[i] for i in rng.permutation(len(pool))[: config.batch]]
        return order
    order = []
    epoch = 0
    while len(order) < needed:
        order += np.random.default_rng([config.seed, epoch]).permutation(n).tolist()
        epoch += 1
    return order


def _lr(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(config.steps - config.warmup, 1)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _open_run(root: Path, config: TrainConfig) -> int:
    """The step to start from: 0 for a new run, the checkpoint's step to resume."""
    saved = root / CONFIG
    if not saved.exists():
        root.mkdir(parents=True, exist_ok=True)
        write_atomic(saved, config.model_dump_json(indent=2))
        (root / LOG).unlink(missing_ok=True)
        return 0
    old = TrainConfig.model_validate_json(saved.read_bytes())
    if old != config:
        changed = [k for k in TrainConfig.model_fields if getattr(old, k) != getattr(config, k)]
        raise ConfigError(
            f"{root} holds a training run with other settings ({', '.join(changed)}); "
            "use the same settings to resume, or another --out"
        )
    if not (root / CHECKPOINT).exists():
        (root / LOG).unlink(missing_ok=True)
        return 0
    step = int(torch.load(root / CHECKPOINT, weights_only=True)["step"])
    # Steps logged after the checkpoint are redone: drop their lines.
    lines = (root / LOG).read_text().splitlines() if (root / LOG).exists() else []
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    write_atomic(root / LOG, "".join(line + "\n" for line in kept))
    return step


def _checkpoint(
    root: Path, model: LlamaForCausalLM, optimizer: torch.optim.Optimizer, step: int
) -> None:
    path = root / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, tmp
    )
    tmp.replace(path)


def _last_loss(root: Path) -> float:
    lines = (root / LOG).read_text().splitlines()
    return float(json.loads(lines[-1])["loss"]) if lines else math.nan


def plot_losses(root: Path) -> Path:
    """``loss.png``: the step loss and each term, from ``log.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (root / LOG).read_text().splitlines()]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["loss"] for r in rows], label="loss", color="black")
    for name in sorted(set(rows[0]) - {"step", "loss", "lr", "seconds"}):
        ax.plot(steps, [r[name] for r in rows], label=name, alpha=0.7)
    ax.set_xlabel("step")
    ax.set_ylabel("nats per token")
    ax.legend(fontsize=8)
    ax.set_title(root.name)
    save_figure(fig, root / "loss.png")
    return root / "loss.png"
