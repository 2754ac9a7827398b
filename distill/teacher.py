"""The teacher's next-token distributions over each example's target, cached to disk.

Token-level and structured KD need the teacher's distribution at every target token.
Running the teacher once per dataset, not once per epoch, keeps training cheap: the top
``k`` log-probabilities (of the full softmax) at each target position are stored with
their token ids, plus the probability mass they cover (reported, so a too-small ``k`` is
visible). The KL terms treat the top ``k`` as the teacher's support.

The cache lives next to the dataset (``teacher-<model>-top<k>.npz``) and records which
examples it covers; a cache for other examples, or a teacher with another tokenizer, is
refused rather than silently used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.progress import track

from relaygraph.distill.dataset import check_reply_tokens
from relaygraph.errors import ConfigError
from relaygraph.fileio import write_atomic
from relaygraph.llm.sampling import log_softmax

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.distill.dataset import DistillExample
    from relaygraph.llm.local import LocalLLM

DEFAULT_TOP_K = 64


@dataclass(frozen=True, slots=True)
class TeacherDistributions:
    """Top-k teacher log-probabilities per target token, for a list of examples."""

    teacher: str
    fingerprint: str
    token_ids: np.ndarray
    """``[tokens, k]`` int32, all examples' target tokens one after another."""
    logprobs: np.ndarray
    """``[tokens, k]`` float32 log-probabilities under the full softmax."""
    offsets: np.ndarray
    """``[examples + 1]``: example i's rows are ``offsets[i]:offsets[i+1]``."""

    def rows(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The (ids, logprobs) rows of example ``index``."""
        a, b = int(self.offsets[index]), int(self.offsets[index + 1])
        return self.token_ids[a:b], self.logprobs[a:b]

    @property
    def covered_mass(self) -> float:
        """Mean probability mass the top k hold."""
        return float(np.exp(self.logprobs.astype(np.float64)).sum(axis=1).mean())


def fingerprint(examples: Sequence[DistillExample]) -> str:
    """Identifies the examples (ids and target tokens) a cache was built for."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(f"{e.id}:{','.join(map(str, e.target_ids))}\n".encode())
    return digest.hexdigest()[:16]


def cache_path(dataset: str | Path, teacher: str, k: int = DEFAULT_TOP_K) -> Path:
    return Path(dataset) / f"teacher-{teacher}-top{k}.npz"


def compute_distributions(
    examples: Sequence[DistillExample], teacher: LocalLLM, *, k: int = DEFAULT_TOP_K
) -> TeacherDistributions:
    """Run ``teacher`` on each example's prompt and target, one evaluation each.

    Raises:
        ConfigError: The teacher's tokenizer is not the one the examples were made with.
    """
    check_reply_tokens(examples, teacher)
    ids_rows, logprob_rows, offsets = [], [], [0]
    for example in track(examples, description=f"teacher {teacher.name}"):
        logprobs = log_softmax(teacher.logits(example.prompt_ids, example.target_ids)[:-1])
        top = np.argpartition(-logprobs, k - 1, axis=1)[:, :k]
        ids_rows.append(top.astype(np.int32))
        logprob_rows.append(np.take_along_axis(logprobs, top, axis=1).astype(np.float32))
        offsets.append(offsets[-1] + len(example.target_ids))
    return TeacherDistributions(
        teacher=teacher.name,
        fingerprint=fingerprint(examples),
        token_ids=np.concatenate(ids_rows),
        logprobs=np.concatenate(logprob_rows),
        offsets=np.array(offsets, dtype=np.int64),
    )


def save_distributions(dist: TeacherDistributions, path: str | Path) -> Path:
    """Write atomically as ``.npz``."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp.npz")
    np.savez(
        tmp,
        token_ids=dist.token_ids,
        logprobs=dist.logprobs,
        offsets=dist.offsets,
        meta=np.array(json.dumps({"teacher": dist.teacher, "fingerprint": dist.fingerprint})),
    )
    tmp.replace(target)
    return target


def load_distributions(
    path: str | Path, examples: Sequence[DistillExample]
) -> TeacherDistributions:
    """A cache written by `save_distributions`, checked against ``examples``.

    Raises:
        ConfigError: Missing, unreadable, or built for other examples.
    """
    try:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            dist = TeacherDistributions(
                teacher=meta["teacher"],
                fingerprint=meta["fingerprint"],
                token_ids=data["token_ids"],
                logprobs=data["logprobs"],
                offsets=data["offsets"],
            )
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"{path} is not a teacher cache ({exc})") from None
    if dist.fingerprint != fingerprint(examples):
        raise ConfigError(f"{path} was built for other examples; delete it to rebuild")
    return dist


def teacher_distributions(
    dataset: str | Path,
    examples: Sequence[DistillExample],
    teacher: LocalLLM,
    *,
    k: int = DEFAULT_TOP_K,
) -> TeacherDistributions:
    """The dataset's cache for ``teacher``, computed and saved the first time."""
    path = cache_path(dataset, teacher.name, k)
    if path.exists():
        return load_distributions(path, examples)
    dist = compute_distributions(examples, teacher, k=k)
    save_distributions(dist, path)
    write_atomic(path.with_suffix(".json"), json.dumps({"covered_mass": dist.covered_mass}))
    return dist
