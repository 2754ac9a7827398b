"""Structured REASON/ACT distillation: traces → span-masked examples → students."""

from relaygraph.distill.dataset import (
    DatasetStats,
    DistillExample,
    build_dataset,
    load_dataset,
    save_dataset,
)
from relaygraph.distill.spans import NoStructureError, ReasonActSpans, find_spans, token_masks

__all__ = [
    "DatasetStats",
    "DistillExample",
    "NoStructureError",
    "ReasonActSpans",
    "build_dataset",
    "find_spans",
    "load_dataset",
    "save_dataset",
    "token_masks",
]
