"""Every exception relaygraph defines is a RelayGraphError, so callers can catch one root."""

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
            if inspect.isclass(obj) and defined_here and issubclass(obj, BaseException):
                if not issubclass(obj, RelayGraphError):
                    outside.append(f"{module.__name__}.{name}")
    assert outside == []
