"""A GGUF model rewritten at another precision, by llama.cpp's own quantizer.

The packaged models ship 4-bit. Expanding one to 16 bits changes what a decode step
costs, not what the model says: the 4-bit values are exact in 16 bits up to rounding, so
the copy's greedy answers are the packaged model's (tested). Where that matters: on a
CPU, llama.cpp's 4-bit kernels are compute-bound at any batch, so verifying k tokens
costs about k decode steps; a 16-bit step is bound by reading the weights, and one pass
over k tokens costs far less than k steps, which is what speculative decoding spends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import llama_cpp

from relaygraph.errors import ConfigError
from relaygraph.llm.llamacpp import init_backend

GgufPrecision = Literal["f32", "f16", "q8_0"]

_FILE_TYPES: dict[GgufPrecision, int] = {
    "f32": llama_cpp.LLAMA_FTYPE_ALL_F32,
    "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
    "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
}


def requantize(source: str | Path, out: str | Path, precision: GgufPrecision) -> Path:
    """Write ``source`` at ``precision`` to ``out`` (via a temporary file, renamed into
    place, so an interrupted run leaves no half model under the final name).

    Raises:
        ConfigError: ``source`` missing, ``out`` exists, an unknown precision, or llama.cpp
            refused the file.
    """
    origin, target = Path(source), Path(out)
    if not origin.is_file():
        raise ConfigError(f"{origin} is not a file", parameter="source")
    if target.exists():
        raise ConfigError(f"{target} exists; choose another path", parameter="out")
    if precision not in _FILE_TYPES:
        raise ConfigError(
            f"precision must be one of {', '.join(_FILE_TYPES)}, not {precision!r}",
            parameter="precision",
        )
    target.parent.mkdir(parents=True, exist_ok=True)  # llama.cpp only says "status 1"
    init_backend()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _FILE_TYPES[precision]
    params.allow_requantize = True  # the source is itself quantized
    partial = target.with_name(f".{target.name}.partial")
    status = llama_cpp.llama_model_quantize(str(origin).encode(), str(partial).encode(), params)
    if status != 0:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"llama.cpp could not rewrite {origin} at {precision} (status {status})")
    partial.replace(target)
    return target
