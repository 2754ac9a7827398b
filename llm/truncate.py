"""Layer-truncated copies of a GGUF model: a cheap draft that shares the target's tokenizer.

A self-draft keeps the target's embeddings, output head and tokenizer and only some of
its transformer blocks, renumbered, so token ids match exactly and speculative decoding
can pair the two. Tensors are copied byte for byte (quantised blocks stay quantised).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from relaygraph.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")


def truncate_layers(source: str | Path, out: str | Path, keep: Sequence[int]) -> Path:
    """Write a copy of ``source`` with only the blocks ``keep`` (in that order), renumbered.

    Raises:
        ConfigError: No blocks, a block the model lacks, a repeated block, or ``out`` exists.
    """
    import gguf

    target = Path(out)
    if target.exists():
        raise ConfigError(f"{target} exists; choose another path", parameter="out")
    reader = gguf.GGUFReader(str(source))
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    count_key = gguf.Keys.LLM.BLOCK_COUNT.format(arch=arch)
    blocks = int(reader.fields[count_key].contents())
    if not keep or len(set(keep)) != len(keep) or not all(0 <= b < blocks for b in keep):
        raise ConfigError(
            f"keep must name distinct blocks of 0..{blocks - 1}, got {list(keep)}",
            parameter="keep",
        )
    renumber = {old: new for new, old in enumerate(keep)}
    partial = target.with_name(target.name + ".partial")
    writer = gguf.GGUFWriter(str(partial), arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by the writer itself
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = len(keep) if field.name == count_key else field.contents()
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    tensors = []
    for tensor in reader.tensors:
        match = _BLOCK.match(tensor.name)
        if match is None:
            tensors.append((tensor.name, tensor))
        elif int(match.group(1)) in renumber:
            tensors.append((f"blk.{renumber[int(match.group(1))]}.{match.group(2)}", tensor))
    for name, tensor in tensors:
        writer.add_tensor_info(
            name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, tensor in tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    partial.replace(target)  # never a half-written model under the final name
    return target
