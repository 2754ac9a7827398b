"""Students: a layer-truncated copy of a llama-architecture teacher, trained in torch and
written back to GGUF for the embedded engine.

The teacher's GGUF tensors are dequantised (gguf) into transformers' `LlamaForCausalLM`
layout; a student keeps the embeddings, the final norm, the (tied) output head and the
blocks ``keep``, renumbered, so it shares the teacher's tokenizer exactly and starts from
its weights. `export_gguf` writes the student with the teacher's metadata and tokenizer,
``block_count`` set to the kept blocks, tensors in float32 or float16: the result loads in
llama.cpp like any packaged model (``load_llm("path/student.gguf")``), as an agent model or
as a speculative-decoding draft.

GGUF stores the query and key projections permuted for llama.cpp's rotary layout; the
conversion undoes that on the way in and redoes it on the way out (the same permutation
as llama.cpp's converter).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from relaygraph.errors import ConfigError
from relaygraph.llm.quantize import GgufPrecision

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch
    from transformers import LlamaForCausalLM

_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")
_TO_HF = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
}
Cut = Literal["spread", "middle"]
"""Which of the teacher's blocks a student keeps (`choose_blocks`)."""
Precision = GgufPrecision
"""How matrices are stored (the precisions `requantize` writes too): q8_0 (8-bit blocks
of 32) is about half the size of f16, the same bits llama.cpp's own quantizer writes;
norms stay f32."""


@dataclass(frozen=True, slots=True)
class TeacherShape:
    """What a llama-architecture GGUF says about its network."""

    blocks: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    rope_theta: float
    rms_eps: float
    context: int
    tied: bool


def read_shape(gguf_path: str | Path) -> TeacherShape:
    """The teacher's dimensions.

    Raises:
        ConfigError: Not a llama-architecture GGUF (the only one students are built from).
    """
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    if arch != "llama":
        raise ConfigError(
            f"{gguf_path} is a {arch!r} model; students are built from llama-architecture "
            "teachers (SmolLM2 is one)",
            parameter="teacher",
        )

    def field(key: str) -> float:
        return float(reader.fields[key.format(arch=arch)].contents())

    names = {t.name for t in reader.tensors}
    return TeacherShape(
        blocks=int(field(gguf.Keys.LLM.BLOCK_COUNT)),
        hidden=int(field(gguf.Keys.LLM.EMBEDDING_LENGTH)),
        intermediate=int(field(gguf.Keys.LLM.FEED_FORWARD_LENGTH)),
        heads=int(field(gguf.Keys.Attention.HEAD_COUNT)),
        kv_heads=int(field(gguf.Keys.Attention.HEAD_COUNT_KV)),
        vocab=int(field(gguf.Keys.LLM.VOCAB_SIZE)),
        rope_theta=field(gguf.Keys.Rope.FREQ_BASE),
        rms_eps=field(gguf.Keys.Attention.LAYERNORM_RMS_EPS),
        context=int(field(gguf.Keys.LLM.CONTEXT_LENGTH)),
        tied="output.weight" not in names,
    )


def make_student(gguf_path: str | Path, keep: Sequence[int]) -> LlamaForCausalLM:
    """A torch model of the teacher's blocks ``keep`` (in that order), from its weights.

    Raises:
        ConfigError: Not a llama GGUF, or ``keep`` names no, repeated or missing blocks.
    """
    import gguf
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.initialization import no_init_weights

    shape = read_shape(gguf_path)
    _check_keep(keep, shape.blocks)
    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=len(keep),
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.context,
        rms_norm_eps=shape.rms_eps,
        rope_parameters={"rope_type": "default", "rope_theta": shape.rope_theta},
        tie_word_embeddings=shape.tied,
        attention_bias=False,
        mlp_bias=False,
    )
    renumber = {old: new for new, old in enumerate(keep)}
    state: dict[str, torch.Tensor] = {}
    for tensor in gguf.GGUFReader(str(gguf_path)).tensors:
        name = _hf_name(tensor.name, renumber)
        if name is None:
            continue
        weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if name.endswith("q_proj.weight"):
            weights = _unpermute(weights, shape.heads)
        elif name.endswith("k_proj.weight"):
            weights = _unpermute(weights, shape.kv_heads)
        state[name] = torch.from_numpy(np.ascontiguousarray(weights))
    with no_init_weights():  # every weight is about to be loaded; random init is wasted time
        model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    expected_missing = {"lm_head.weight"} if shape.tied else set()
    if set(missing) - expected_missing or unexpected:
        raise ConfigError(
            f"{gguf_path}: tensors do not fit a llama model ({missing}, {unexpected})"
        )
    if shape.tied:
        model.tie_weights()
    return model


def export_gguf(
    model: LlamaForCausalLM,
    teacher_gguf: str | Path,
    out: str | Path,
    *,
    precision: Precision = "f16",
) -> Path:
    """Write ``model`` as a GGUF with the teacher's metadata and tokenizer.

    Raises:
        ConfigError: ``out`` exists, or the teacher is not a llama GGUF.
    """
    import gguf

    target = Path(out)
    if target.exists():
        raise ConfigError(f"{target} exists; choose another path", parameter="out")
    shape = read_shape(teacher_gguf)
    reader = gguf.GGUFReader(str(teacher_gguf))
    arch = "llama"
    count_key = gguf.Keys.LLM.BLOCK_COUNT.format(arch=arch)
    blocks = model.config.num_hidden_layers
    partial = target.with_name(target.name + ".partial")
    writer = gguf.GGUFWriter(str(partial), arch=arch, endianess=reader.endianess)
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[precision]
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == count_key:
            value = blocks
        elif field.name == gguf.Keys.General.FILE_TYPE:
            value = int(file_type)
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    q8 = gguf.GGMLQuantizationType.Q8_0
    for name, array in _gguf_tensors(model, shape, blocks):
        if array.ndim == 1 or precision == "f32":
            writer.add_tensor(name, array.astype(np.float32))
        elif precision == "f16" or array.shape[-1] % gguf.GGML_QUANT_SIZES[q8][0]:
            writer.add_tensor(name, array.astype(np.float16))
        else:
            # through f16 first, as llama.cpp quantizes an f16 file: the same blocks
            rounded = array.astype(np.float16).astype(np.float32)
            writer.add_tensor(name, gguf.quants.quantize(rounded, q8), raw_dtype=q8)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(target)
    return target


def choose_blocks(blocks: int, count: int, cut: Cut = "spread") -> list[int]:
    """The teacher's blocks a ``count``-block student keeps.

    ``spread``: evenly spaced, first and last kept. ``middle``: one contiguous run
    dropped from the middle, the lower and upper blocks kept as they are. On SmolLM2 a
    run cut from the middle costs the teacher's replies far less than one cut from the
    top (unlike the larger models of Gromov et al., 2024, where deep blocks matter
    least), and it leaves the student's lower half exactly the teacher's, so it can be
    frozen and its output cached (`TrainConfig.frozen`).
    """
    if cut == "spread":
        return evenly_spaced(blocks, count)
    if not 1 <= count <= blocks:
        raise ConfigError(f"a student keeps 1..{blocks} blocks, not {count}", parameter="layers")
    start = count // 2
    return [*range(start), *range(blocks - (count - start), blocks)]


def evenly_spaced(blocks: int, count: int) -> list[int]:
    """``count`` of ``blocks`` blocks, first and last included, evenly spread."""
    if not 1 <= count <= blocks:
        raise ConfigError(f"a student keeps 1..{blocks} blocks, not {count}", parameter="layers")
    if count == 1:
        return [0]
    return sorted({round(i * (blocks - 1) / (count - 1)) for i in range(count)})


def _gguf_tensors(
    model: LlamaForCausalLM, shape: TeacherShape, blocks: int
) -> list[tuple[str, np.ndarray]]:
    state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    out = [(gguf_name, state[hf]) for gguf_name, hf in _GLOBAL_TO_HF.items()]
    if not shape.tied:
        out.append(("output.weight", state["lm_head.weight"]))
    for block in range(blocks):
        for gguf_part, hf_part in _TO_HF.items():
            weights = state[f"model.layers.{block}.{hf_part}"]
            if hf_part.startswith("self_attn.q_proj"):
                weights = _permute(weights, shape.heads)
            elif hf_part.startswith("self_attn.k_proj"):
                weights = _permute(weights, shape.kv_heads)
            out.append((f"blk.{block}.{gguf_part}", weights))
    return out


def _hf_name(name: str, renumber: dict[int, int]) -> str | None:
    if name in _GLOBAL_TO_HF:
        return _GLOBAL_TO_HF[name]
    if name == "output.weight":
        return "lm_head.weight"
    match = _BLOCK.match(name)
    if match is None or int(match.group(1)) not in renumber:
        return None
    return f"model.layers.{renumber[int(match.group(1))]}.{_TO_HF[match.group(2)]}"


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """HF layout → llama.cpp's (the converter's permutation)."""
    half = weights.shape[0] // heads // 2
    return weights.reshape(heads, 2, half, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _unpermute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's layout → HF's (inverse of `_permute`)."""
    half = weights.shape[0] // heads // 2
    return weights.reshape(heads, half, 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _check_keep(keep: Sequence[int], blocks: int) -> None:
    if not keep or len(set(keep)) != len(keep) or not all(0 <= b < blocks for b in keep):
        raise ConfigError(
            f"keep must name distinct blocks of 0..{blocks - 1}, got {list(keep)}",
            parameter="keep",
        )
