"""Shared fixtures: the real packaged models, loaded once, and a real server on 127.0.0.1.

Test tiers follow from what a test uses, not from what its file remembers to say: a test
that uses a model or server fixture, directly or through another fixture, is marked
``slow`` (and ``server``); a test that loads a model, starts a server or runs the
command line some other way without being marked fails, so ``make test-fast`` stays fast.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import commands

from relaygraph.llm import LocalLLM, OpenAICompatLLM
from relaygraph.llm.llamacpp import LlamaRuntime
from relaygraph.serving.server import BackgroundServer

MODEL_FIXTURES = frozenset({"smollm2", "gemma3"})
SERVER_FIXTURES = frozenset({"server", "remote_smollm2"})
POSTGRES_FIXTURES = frozenset({"postgres_server", "postgres_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & SERVER_FIXTURES:
            item.add_marker(pytest.mark.server)
        if used & POSTGRES_FIXTURES:
            item.add_marker(pytest.mark.postgres)
        if used & (MODEL_FIXTURES | SERVER_FIXTURES | POSTGRES_FIXTURES):
            item.add_marker(pytest.mark.slow)


_running: list[pytest.Item] = []  # the test whose setup, call or teardown is running


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.pop()


def _require(marker: str, what: str) -> None:
    item = _running[-1] if _running else None
    if item is not None and item.get_closest_marker(marker) is None:
        pytest.fail(
            f"{item.nodeid} {what} but is not marked {marker!r}: use the conftest fixtures "
            f"or mark it @pytest.mark.{marker}",
            pytrace=False,
        )


def _needs_marker(marker: str, what: str, run: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _require(marker, what)
        return run(*args, **kwargs)

    return guarded


@pytest.fixture(autouse=True, scope="session")
def _heavy_work_is_marked() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            LlamaRuntime,
            "__init__",
            _needs_marker("slow", "loads a model", LlamaRuntime.__init__),
        )
        patch.setattr(
            BackgroundServer,
            "start",
            _needs_marker("server", "starts a server", BackgroundServer.start),
        )
        patch.setattr(commands, "before_run", lambda what: _require("slow", what))
        yield


@pytest.fixture(scope="session")
def smollm2() -> LocalLLM:
    return LocalLLM.load("smollm2-135m")


@pytest.fixture(scope="session")
def gemma3() -> LocalLLM:
    return LocalLLM.load("gemma3-270m")


@pytest.fixture(scope="session")
def server(smollm2: LocalLLM, gemma3: LocalLLM) -> Iterator[BackgroundServer]:
    """relaygraph's own OpenAI-compatible server, serving the embedded models."""
    with BackgroundServer({"smollm2-135m": smollm2, "gemma3-270m": gemma3}) as running:
        yield running


@pytest.fixture(scope="session")
def remote_smollm2(server: BackgroundServer) -> Iterator[OpenAICompatLLM]:
    client = OpenAICompatLLM(server.base_url, "smollm2-135m", max_retries=0)
    yield client
    client.close()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real PostgreSQL 16 with pgvector (the pgserver wheel), in a temporary folder and
    reached over its Unix socket; stopped at the end of the session."""
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("postgres"), cleanup_mode="stop")
    yield server
    server.cleanup()


@pytest.fixture
def postgres_url(postgres_server: Any) -> str:
    """A fresh, empty database on the session's PostgreSQL, as a ``postgresql://`` URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    postgres_server.psql(f"CREATE DATABASE {name};")
    url: str = postgres_server.get_uri(name)
    return url
