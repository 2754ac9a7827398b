"""Files: atomic writes (a crash leaves the old file or the new one, never half of one),
and one way to read a text file, or a file into a pydantic model."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from relaygraph.errors import ConfigError, first_problem

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

M = TypeVar("M", bound=BaseModel)


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a synced temporary file in the same folder."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def append_line(path: str | Path, line: str) -> None:
    """Append one line (newline added) and sync it: a finished record survives a crash."""
    with Path(path).open("a", encoding="utf-8") as out:
        out.write(line + "\n")
        out.flush()
        os.fsync(out.fileno())


def complete_lines(path: str | Path, *, repair: bool = False) -> list[bytes]:
    """The lines of an append-only file that were written whole.

    A last line without its newline is a write that died mid-way: it is left out, and
    cut off the file when ``repair`` (so the next append starts on a fresh line).
    """
    target = Path(path)
    data = target.read_bytes()
    complete, _, torn = data.rpartition(b"\n")
    if torn and repair:
        with target.open("r+b") as handle:
            handle.truncate(len(complete) + 1 if complete else 0)
    return complete.splitlines()


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def read_text(
    source: str | Path | Traversable, *, what: str, parameter: str | None = "path"
) -> str:
    """A UTF-8 text file, reported like `read_model` reports its files when it is not one.

    Raises:
        ConfigError: The file cannot be read, or is not UTF-8 (the first bad byte and its
            offset named).
    """
    path = Path(source) if isinstance(source, str) else source
    fail = f"{what} {source}"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{fail}: cannot read it ({exc.strerror or exc})", parameter=parameter
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{fail}: not UTF-8 text (invalid byte 0x{data[exc.start]:02x} at offset {exc.start})",
            parameter=parameter,
        ) from None


def read_model(
    model: type[M], source: str | Path | Traversable, *, what: str, parameter: str | None = "path"
) -> M:
    """A JSON file (YAML for ``.yaml``/``.yml``) validated into ``model``.

    Every file relaygraph reads goes through here, so a bad one is always reported the
    same way: ``"{what} {source}: {problem}"``, the problem naming the field when one fails.

    Raises:
        ConfigError: The file cannot be read, is not UTF-8 text, does not parse, or does
            not validate.
    """
    path = Path(source) if isinstance(source, str) else source
    fail = f"{what} {source}"
    text = read_text(source, what=what, parameter=parameter)
    yaml_file = path.name.endswith((".yaml", ".yml"))
    try:
        data = _parse_yaml(text) if yaml_file else json.loads(text)
    except ValueError as exc:  # json.JSONDecodeError and yaml.YAMLError (wrapped) alike
        kind = "YAML" if yaml_file else "JSON"
        raise ConfigError(f"{fail}: not valid {kind} ({exc})", parameter=parameter) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        where, problem = first_problem(exc.errors())
        problem = problem.removeprefix("Value error, ")
        raise ConfigError(
            f"{fail}: {where + ': ' if where else ''}{problem}", parameter=parameter
        ) from None


def _parse_yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None
