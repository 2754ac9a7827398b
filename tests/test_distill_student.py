"""Students: the teacher's weights in torch, truncated, and written back to GGUF exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from relaygraph.distill.student import (
    choose_blocks,
    evenly_spaced,
    export_gguf,
    make_student,
    read_shape,
)
from relaygraph.errors import ConfigError
from relaygraph.llm import LocalLLM
from relaygraph.llm.catalog import packaged_model

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]
ANSWER = " The capital of France is Paris."


def _torch_logits(model: torch.nn.Module, ids: list[int], continuation: list[int]) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.tensor([ids + continuation])).logits[0].numpy()
    return logits[len(ids) - 1 :]  # as LocalLLM.logits: each position, and after the last


@pytest.mark.slow
def test_the_full_copy_computes_the_teachers_function(smollm2: LocalLLM) -> None:
    path = packaged_model("smollm2-135m").locate()
    model = make_student(path, list(range(read_shape(path).blocks)))
    ids, answer = smollm2.encode(PROMPT), smollm2.tokenize(ANSWER)
    ours, theirs = _torch_logits(model, ids, answer), smollm2.logits(ids, answer)
    # llama.cpp runs the Q4 weights with 8-bit activations; torch the dequantised weights.
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.998
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() >= 0.75


@pytest.fixture(scope="module")
def student() -> torch.nn.Module:
    """Four of the teacher's 30 blocks, perturbed as training would (built once: ~20 s)."""
    path = packaged_model("smollm2-135m").locate()
    keep = evenly_spaced(read_shape(path).blocks, 4)
    assert keep == [0, 10, 19, 29]
    model = make_student(path, keep)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(1.5)
    return model


@pytest.mark.slow
@pytest.mark.parametrize(("precision", "tolerance"), [("f32", 0.1), ("f16", 0.25)])
def test_a_truncated_student_round_trips_through_gguf(
    tmp_path: Path, smollm2: LocalLLM, student: torch.nn.Module, precision: str, tolerance: float
) -> None:
    path = packaged_model("smollm2-135m").locate()
    out = export_gguf(student, path, tmp_path / "student.gguf", precision=precision)  # type: ignore[arg-type]
    engine = LocalLLM.load(out)
    assert engine.tokenize(ANSWER) == smollm2.tokenize(ANSWER)
    ids, answer = smollm2.encode(PROMPT), smollm2.tokenize(ANSWER)
    ours, theirs = _torch_logits(student, ids, answer), engine.logits(ids, answer)
    assert np.abs(ours - theirs).max() < tolerance
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()
    assert engine.complete(PROMPT).text  # it generates


@pytest.mark.slow
def test_a_q8_0_student_is_what_llama_cpp_quantizes(
    tmp_path: Path, student: torch.nn.Module
) -> None:
    import ctypes

    import llama_cpp

    path = packaged_model("smollm2-135m").locate()
    f16 = export_gguf(student, path, tmp_path / "f16.gguf", precision="f16")
    ours = export_gguf(student, path, tmp_path / "q8.gguf", precision="q8_0")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    theirs = tmp_path / "llama-q8.gguf"
    assert llama_cpp.llama_model_quantize(bytes(f16), bytes(theirs), ctypes.byref(params)) == 0
    assert ours.stat().st_size < 0.6 * f16.stat().st_size
    smollm2 = LocalLLM.load("smollm2-135m")
    ids, answer = smollm2.encode(PROMPT), smollm2.tokenize(ANSWER)
    # the same 8-bit blocks: llama.cpp computes the same logits from both files
    mine, reference = (
        LocalLLM.load(ours).logits(ids, answer),
        LocalLLM.load(theirs).logits(ids, answer),
    )
    assert np.abs(mine - reference).max() < 1e-3


def test_a_middle_cut_keeps_the_lower_and_upper_blocks_as_they_are() -> None:
    assert choose_blocks(30, 24, "middle") == [*range(12), *range(18, 30)]
    assert choose_blocks(30, 2, "middle") == [0, 29]
    assert choose_blocks(30, 30, "middle") == list(range(30))
    assert choose_blocks(30, 4, "spread") == evenly_spaced(30, 4)


@pytest.mark.slow
def test_running_the_blocks_in_two_parts_is_the_models_own_forward_pass(
    student: torch.nn.Module,
) -> None:
    from relaygraph.distill.prefix import run_blocks

    ids = torch.tensor([list(range(100, 140))])
    with torch.no_grad():
        whole = student.model(input_ids=ids).last_hidden_state
        below = run_blocks(student, student.model.embed_tokens(ids), student.model.layers[:2])
        above = student.model.norm(run_blocks(student, below, student.model.layers[2:]))
    assert torch.allclose(whole, above, atol=1e-5)


@pytest.mark.slow
def test_blocks_continuing_a_cached_prompt_compute_the_same_states(
    student: torch.nn.Module,
) -> None:
    from transformers import DynamicCache

    from relaygraph.distill.prefix import run_blocks

    hidden = student.model.embed_tokens(torch.tensor([list(range(100, 140))]))
    layers = student.model.layers[1:]
    cache = DynamicCache(config=student.config)
    with torch.no_grad():
        whole = run_blocks(student, hidden, layers)
        head = run_blocks(student, hidden[:, :31], layers, cache=cache)
        tail = run_blocks(student, hidden[:, 31:], layers, cache=cache, start=31)
    # the states reach ~600; the two summation orders differ in the 7th digit
    assert torch.allclose(whole, torch.cat([head, tail], dim=1), rtol=1e-5, atol=1e-3)


@pytest.mark.slow
def test_students_refuse_bad_input(tmp_path: Path) -> None:
    smol = packaged_model("smollm2-135m").locate()
    with pytest.raises(ConfigError, match="students are built from llama-architecture"):
        read_shape(packaged_model("gemma3-270m").locate())
    for keep in ([], [0, 0], [30]):
        with pytest.raises(ConfigError, match=r"keep must name distinct blocks of 0\.\.29"):
            make_student(smol, keep)
    for cut in ("spread", "middle"):
        with pytest.raises(ConfigError, match=r"a student keeps 1\.\.30 blocks"):
            choose_blocks(30, 31, cut)  # type: ignore[arg-type]
    (tmp_path / "taken.gguf").write_bytes(b"")
    with pytest.raises(ConfigError, match="exists"):
        export_gguf(None, smol, tmp_path / "taken.gguf")  # type: ignore[arg-type]
