"""The losses students are trained with, on one example's target positions.

- ``sft``: cross-entropy on the teacher's text (every target token). It is also the
  sequence-level KD baseline when the teacher's distribution is not available.
- ``kd``: token-level KD, KL(teacher ‖ student) at every target token, with the teacher's
  top-k as its support (renormalised).
- ``structured``: span-specific terms, KL on REASON tokens, KL and cross-entropy on ACT
  tokens, each weighted (Structured Agent Distillation).

Each term is a sum over its tokens and a token count, so a training step can average
over all tokens of its examples, however they are split across forward passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn.functional import cross_entropy

LossKind = Literal["sft", "kd", "structured"]
LOSSES: tuple[LossKind, ...] = ("sft", "kd", "structured")


@dataclass(frozen=True, slots=True)
class SpanWeights:
    """Weights of the structured loss's terms."""

    reason_kl: float = 1.0
    act_kl: float = 1.0
    act_ce: float = 1.0


@dataclass(frozen=True, slots=True)
class Targets:
    """One example's target, as tensors over its target positions."""

    token_ids: torch.Tensor
    """``[T]`` long."""
    reason: torch.Tensor
    """``[T]`` bool."""
    act: torch.Tensor
    """``[T]`` bool."""
    teacher_ids: torch.Tensor | None = None
    """``[T, k]`` long: the teacher's top-k tokens."""
    teacher_logprobs: torch.Tensor | None = None
    """``[T, k]`` float."""


def terms(
    kind: LossKind, logits: torch.Tensor, targets: Targets
) -> dict[str, tuple[torch.Tensor, int]]:
    """(sum over tokens, token count) of each term of loss ``kind`` for one example.

    Raises:
        ValueError: A KD loss without the teacher's distributions.
    """
    everything = torch.ones_like(targets.reason)
    if kind == "sft":
        return {"ce": _ce(logits, targets.token_ids, everything)}
    if targets.teacher_ids is None or targets.teacher_logprobs is None:
        raise ValueError(f"the {kind} loss needs the teacher's distributions")
    if kind == "kd":
        return {"kl": _kl(logits, targets, everything)}
    return {
        "reason_kl": _kl(logits, targets, targets.reason),
        "act_kl": _kl(logits, targets, targets.act),
        "act_ce": _ce(logits, targets.token_ids, targets.act),
    }


def term_counts(kind: LossKind, targets: Targets) -> dict[str, int]:
    """Tokens each term of loss ``kind`` averages over, for one example."""
    everything = len(targets.token_ids)
    if kind == "sft":
        return {"ce": everything}
    if kind == "kd":
        return {"kl": everything}
    reason, act = int(targets.reason.sum()), int(targets.act.sum())
    return {"reason_kl": reason, "act_kl": act, "act_ce": act}


def combine(
    kind: LossKind, sums: dict[str, torch.Tensor], counts: dict[str, int], weights: SpanWeights
) -> torch.Tensor:
    """The step's loss: each term's mean over its tokens, weighted (structured) or alone."""
    means = {name: sums[name] / max(counts[name], 1) for name in sums}
    if kind == "structured":
        return (
            weights.reason_kl * means["reason_kl"]
            + weights.act_kl * means["act_kl"]
            + weights.act_ce * means["act_ce"]
        )
    return next(iter(means.values()))


def _ce(
    logits: torch.Tensor, token_ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, int]:
    losses = cross_entropy(logits, token_ids, reduction="none")
    return (losses * mask).sum(), int(mask.sum())


def _kl(logits: torch.Tensor, targets: Targets, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """KL(teacher ‖ student) on the teacher's top-k, both renormalised to that support."""
    assert targets.teacher_ids is not None and targets.teacher_logprobs is not None
    student = torch.log_softmax(logits, dim=-1).gather(1, targets.teacher_ids)
    student = student - torch.logsumexp(student, dim=-1, keepdim=True)
    teacher = targets.teacher_logprobs - torch.logsumexp(
        targets.teacher_logprobs, dim=-1, keepdim=True
    )
    per_token = (teacher.exp() * (teacher - student)).sum(dim=-1)
    return (per_token * mask).sum(), int(mask.sum())
