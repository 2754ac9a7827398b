"""The package's surface: one exception root, and the public API importable from the top."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import relaygraph
from relaygraph.errors import RelayGraphError


def test_every_exception_is_under_relaygraph_error() -> None:
    outside = []
    for module_info in pkgutil.walk_packages(relaygraph.__path__, "relaygraph."):
        if module_info.name.startswith(("relaygraph.tests", "relaygraph.benchmarks")):
            continue
        module = importlib.import_module(module_info.name)
        for name, obj in vars(module).items():
            defined_here = getattr(obj, "__module__", None) == module.__name__
            is_exception = inspect.isclass(obj) and issubclass(obj, BaseException)
            if defined_here and is_exception and not issubclass(obj, RelayGraphError):
                outside.append(f"{module.__name__}.{name}")
    assert outside == []


def test_the_public_api_imports_from_the_top() -> None:
    from relaygraph import Agent, AgentGraph, load_llm

    assert Agent.__module__ == "relaygraph.agents.agent"
    assert AgentGraph.__module__ == "relaygraph.graph.builder"
    assert callable(load_llm)
    for name in relaygraph.__all__:
        assert getattr(relaygraph, name) is not None, name
    assert set(dir(relaygraph)) == set(relaygraph.__all__)


def test_every_export_is_listed() -> None:
    assert set(relaygraph.__all__) == {*relaygraph._EXPORTS, "__version__"}


def test_every_package_ships_in_the_wheel() -> None:
    """pyproject lists the packages one by one (the root is the package); a new folder
    left out would be missing from every wheel, though editable installs hide it."""
    import tomllib
    from pathlib import Path

    root = Path(relaygraph.__file__).parent
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        "relaygraph" + "".join(f".{part}" for part in init.parent.relative_to(root).parts)
        for init in root.rglob("__init__.py")
        if not {".venv", "build", "tests", "docs", "site"} & set(init.relative_to(root).parts)
    }
    assert found == listed
