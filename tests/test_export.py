"""`relaygraph export`: the packaged GGUF as a Hugging Face folder (what a vLLM worker
loads) computes what the embedded engine computes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relaygraph.errors import ConfigError
from relaygraph.llm.export import export_hf_folder
from relaygraph.llm.registry import load_llm

pytestmark = pytest.mark.slow


def test_the_exported_folder_is_the_same_model(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = export_hf_folder("smollm2-135m", tmp_path / "smollm2")
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config
    assert (folder / "chat_template.jinja").exists()

    text = "The Seine flows through Paris, the capital of France."
    embedded = load_llm("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == embedded.tokenize(text)

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    prompt = "The capital of France is"
    with torch.inference_mode():
        logits = model(torch.tensor([embedded.encode(prompt)])).logits[0, -1]
    top = embedded.score(prompt, " Paris", top_logprobs=1).tokens[0].top[0]
    assert int(logits.argmax()) == top.token_id

    with pytest.raises(ConfigError, match="already exists"):
        export_hf_folder("smollm2-135m", folder)
