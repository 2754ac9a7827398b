"""Loading a graph factory named ``path/to/file.py:factory`` or ``package.module:factory``."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from relaygraph.errors import ConfigError
from relaygraph.graph.builder import AgentGraph


def load_factory(spec: str) -> Any:
    """The callable a ``module:factory`` spec names.

    Raises:
        ConfigError: Malformed spec, missing file or module, or no such attribute.
    """
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise ConfigError(
            f"graph {spec!r} must be <file.py or module>:<factory>, e.g. "
            "examples/research_team.py:build",
            parameter="graph",
        )
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"graph file {path} does not exist", parameter="graph")
        # Registered under a private name before it runs, as importlib's recipe does:
        # pydantic and dataclasses resolve the file's annotations through sys.modules.
        name = f"_relaygraph_graph_{path.stem}_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        assert module_spec is not None and module_spec.loader is not None  # a .py file
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConfigError(f"cannot import {target!r}: {exc}", parameter="graph") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"{target} has no callable {attr!r}", parameter="graph")
    return factory


def load_graph(spec: str, *, model: str | None = None) -> AgentGraph:
    """Build the `AgentGraph` a factory spec names, passing ``model`` when it takes one.

    Raises:
        ConfigError: The spec cannot be loaded, or the factory returns no `AgentGraph`.
    """
    factory = load_factory(spec)
    parameters = inspect.signature(factory).parameters
    required = [
        name
        for name, p in parameters.items()
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if set(required) - {"model"} or ("model" in required and model is None):
        raise ConfigError(
            f"{spec} needs arguments {required}; a graph factory takes none, or only model=",
            parameter="graph",
        )
    if model is not None and "model" not in parameters:
        raise ConfigError(f"{spec} takes no model argument; drop --model", parameter="model")
    try:
        graph = factory(model=model) if model is not None else factory()
    except ConfigError:
        raise
    except Exception as exc:  # the user's factory failed: say where, not a traceback
        raise ConfigError(
            f"{spec}() raised {type(exc).__name__}: {exc}", parameter="graph"
        ) from None
    if not isinstance(graph, AgentGraph):
        raise ConfigError(
            f"{spec} returned {type(graph).__name__}, not an AgentGraph", parameter="graph"
        )
    return graph
