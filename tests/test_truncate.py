"""Layer-truncated self-drafts: a real GGUF copy of SmolLM2 with fewer blocks, which loads,
shares the tokenizer and pairs with the full model for speculative decoding."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_speculative import assert_lossless, greedy_reference

from relaygraph.decoding import FixedWindow, SpeculativeLLM
from relaygraph.errors import ConfigError
from relaygraph.llm import LocalLLM
from relaygraph.llm.catalog import packaged_model
from relaygraph.llm.truncate import truncate_layers
from relaygraph.llm.types import GenerationParams


def test_a_truncated_copy_loads_shares_the_tokenizer_and_drafts_losslessly(
    tmp_path: Path, smollm2: LocalLLM
) -> None:
    source = packaged_model("smollm2-135m").locate()
    out = truncate_layers(source, tmp_path / "draft.gguf", keep=list(range(20)))
    assert out.stat().st_size < source.stat().st_size
    draft = LocalLLM(out, name="smollm2-135m-20l")
    assert draft.tokenize("naïve café 東京") == smollm2.tokenize("naïve café 東京")
    prompt, params = "The three primary colours are", GenerationParams(max_tokens=24)
    spec = SpeculativeLLM(draft, smollm2, FixedWindow(3))
    got = spec.complete(prompt, params)
    assert_lossless(got.choices[0].token_ids, greedy_reference(smollm2, prompt, params))
    assert got.decoding is not None and got.decoding["draft"] == "smollm2-135m-20l"


def test_bad_truncations_are_refused(tmp_path: Path) -> None:
    source = packaged_model("smollm2-135m").locate()
    for keep in ([], [0, 0], [30]):
        with pytest.raises(ConfigError, match=r"distinct blocks of 0\.\.29"):
            truncate_layers(source, tmp_path / "x.gguf", keep=keep)
    (tmp_path / "taken.gguf").write_bytes(b"")
    with pytest.raises(ConfigError, match="exists"):
        truncate_layers(source, tmp_path / "taken.gguf", keep=[0])
