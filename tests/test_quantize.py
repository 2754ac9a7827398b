"""A packaged model rewritten at 16 bits by llama.cpp's quantizer: a real GGUF that loads,
keeps the tokenizer and the chat template, and answers as the 4-bit file does; and the
speculative pair it makes with prompt lookup is lossless."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_speculative import assert_lossless, greedy_reference

from relaygraph.decoding import AdaptiveWindow, PromptLookupDrafter, SpeculativeLLM
from relaygraph.errors import ConfigError
from relaygraph.llm import LocalLLM
from relaygraph.llm.catalog import packaged_model
from relaygraph.llm.quantize import requantize
from relaygraph.llm.types import GenerationParams

PARAGRAPH = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built it."
)


def test_a_16_bit_copy_answers_as_the_packaged_model(tmp_path: Path, smollm2: LocalLLM) -> None:
    source = packaged_model("smollm2-135m").locate()
    out = requantize(source, tmp_path / "smollm2-f16.gguf", "f16")
    assert out.stat().st_size > 2 * source.stat().st_size  # 16 bits against ~4.5 per weight
    assert not list(tmp_path.glob(".*.partial"))
    wide = LocalLLM(out, name="smollm2-135m-f16")
    assert wide.tokenize("naïve café 東京") == smollm2.tokenize("naïve café 東京")
    ids = smollm2.tokenize(PARAGRAPH)
    same = wide.logits(ids[:1], ids[1:]).argmax(1) == smollm2.logits(ids[:1], ids[1:]).argmax(1)
    assert float(np.mean(same)) >= 0.9
    prompt = f"Repeat exactly: {PARAGRAPH}"
    params = GenerationParams(max_tokens=32)
    spec = SpeculativeLLM(PromptLookupDrafter(min_ngram=3), wide, AdaptiveWindow())
    got = spec.complete(prompt, params)
    assert_lossless(got.choices[0].token_ids, greedy_reference(wide, prompt, params))


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    source = packaged_model("smollm2-135m").locate()
    with pytest.raises(ConfigError, match="is not a file"):
        requantize(tmp_path / "missing.gguf", tmp_path / "out.gguf", "f16")
    (tmp_path / "taken.gguf").write_bytes(b"")
    with pytest.raises(ConfigError, match="exists"):
        requantize(source, tmp_path / "taken.gguf", "f16")
    with pytest.raises(ConfigError, match="precision must be one of"):
        requantize(source, tmp_path / "out.gguf", "q3")  # type: ignore[arg-type]
    not_a_model = tmp_path / "junk.gguf"
    not_a_model.write_bytes(b"GGUF but not really")
    with pytest.raises(ConfigError, match="could not rewrite"):
        requantize(not_a_model, tmp_path / "out.gguf", "f16")
    assert not (tmp_path / "out.gguf").exists()
