"""HotPotQA: the loader for the official layout and the official metrics."""

from relaygraph.eval.hotpotqa.data import HotpotDataset, HotpotExample, Paragraph, load_hotpotqa
from relaygraph.eval.hotpotqa.metrics import (
    Score,
    answer_score,
    joint_score,
    mean,
    normalize_answer,
    support_score,
)

__all__ = [
    "HotpotDataset",
    "HotpotExample",
    "Paragraph",
    "Score",
    "answer_score",
    "joint_score",
    "load_hotpotqa",
    "mean",
    "normalize_answer",
    "support_score",
]
