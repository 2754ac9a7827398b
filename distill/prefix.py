"""The output of a student's frozen lower blocks for each example, cached next to the
dataset.

A student whose lowest blocks (and embeddings) stay as they start computes the same
hidden states below its trained blocks at every step. Computing them once per dataset
and reading them back (memory-mapped) means a step runs only the trained blocks: with
18 of 24 blocks frozen, a step costs about a quarter of a full one, and students trained
with different losses from the same blocks share one cache.

The cache (``prefix-<key>.npy`` with its ``.json``) is keyed by the teacher file, the
frozen blocks, the prompt truncation and the examples, so it is never read for another
student or dataset; the ``.json`` is written last, so a half-written cache is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from rich.progress import track

from relaygraph.distill.teacher import fingerprint
from relaygraph.fileio import write_atomic

if TYPE_CHECKING:
    from collections.abc import Sequence

    from torch import nn
    from transformers import DynamicCache, LlamaForCausalLM

    from relaygraph.distill.dataset import DistillExample


def input_ids(example: DistillExample, max_prompt: int) -> torch.Tensor:
    """``[1, prompt + target]``: the prompt's last ``max_prompt`` tokens, then the target."""
    return torch.tensor([[*example.prompt_ids[-max_prompt:], *example.target_ids]])


def run_blocks(
    model: LlamaForCausalLM,
    hidden: torch.Tensor,
    layers: Sequence[nn.Module],
    *,
    cache: DynamicCache | None = None,
    start: int = 0,
) -> torch.Tensor:
    """``hidden`` through ``layers`` of ``model``, as its own forward pass runs them (one
    unpadded sequence). With a ``cache`` holding positions ``0..start-1``, ``hidden`` is
    the sequence's continuation from ``start``: it attends to them and to itself,
    causally, and is added to the cache."""
    from transformers.masking_utils import create_causal_mask

    positions = torch.arange(start, start + hidden.shape[1]).unsqueeze(0)
    if cache is None:
        mask = create_causal_mask(
            config=model.config,
            inputs_embeds=hidden,
            attention_mask=None,
            cache=None,
            position_ids=positions,
        )
    else:  # [1, 1, new, cached + new]: True where a position may attend
        mask = (torch.arange(start + hidden.shape[1]) <= positions[0].unsqueeze(1))[None, None]
    rotary = model.model.rotary_emb(hidden, position_ids=positions)
    for layer in layers:
        hidden = layer(
            hidden,
            attention_mask=mask,
            position_embeddings=rotary,
            position_ids=positions,
            cache=cache,
            use_cache=cache is not None,
        )
    return hidden


class FrozenPrefix:
    """Each example's input to the student's first trained block.

    With nothing frozen that is the (trained) embeddings, computed at every call. With
    ``frozen`` blocks, it is their output: the blocks and the embeddings (with the tied
    head) stop requiring gradients, and the states come from the dataset's cache, built
    the first time.
    """

    def __init__(
        self,
        model: LlamaForCausalLM,
        frozen: int,
        max_prompt: int,
        examples: Sequence[DistillExample],
        *,
        dataset: str | Path,
        teacher: str | Path,
        blocks: Sequence[int],
    ) -> None:
        self.model, self.frozen, self.max_prompt = model, frozen, max_prompt
        self._states: np.ndarray | None = None
        self._offsets: list[int] = []
        if not frozen:
            return
        for part in (model.model.embed_tokens, *model.model.layers[:frozen]):
            part.requires_grad_(False)
        file = Path(teacher)
        identity = [file.name, file.stat().st_size, list(blocks[:frozen]), max_prompt]
        identity.append(fingerprint(examples))
        key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]
        path = Path(dataset) / f"prefix-{key}.npy"
        meta = path.with_suffix(".json")
        if not meta.exists():
            self._build(examples, path)
            write_atomic(meta, json.dumps({"offsets": self._offsets, "blocks": blocks[:frozen]}))
        self._offsets = json.loads(meta.read_text())["offsets"]
        self._states = np.load(path, mmap_mode="r")

    def states(self, example: DistillExample, index: int) -> torch.Tensor:
        """``[1, prompt + target, hidden]`` for ``example``, the dataset's ``index``-th."""
        if self._states is None:
            embedded: torch.Tensor = self.model.model.embed_tokens(
                input_ids(example, self.max_prompt)
            )
            return embedded
        rows = self._states[self._offsets[index] : self._offsets[index + 1]]
        return torch.from_numpy(np.array(rows)).unsqueeze(0)

    def _build(self, examples: Sequence[DistillExample], path: Path) -> None:
        rows, self._offsets = [], [0]
        layers = self.model.model.layers[: self.frozen]
        with torch.no_grad():
            for example in track(examples, description=f"{self.frozen} frozen blocks"):
                hidden = self.model.model.embed_tokens(input_ids(example, self.max_prompt))
                rows.append(run_blocks(self.model, hidden, layers)[0].numpy())
                self._offsets.append(self._offsets[-1] + len(rows[-1]))
        tmp = path.with_name(f".{path.name}.tmp.npy")
        np.save(tmp, np.concatenate(rows))
        tmp.replace(path)
