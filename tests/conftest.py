"""Shared fixtures: the real packaged models, loaded once, and a real server on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from relaygraph.llm import LocalLLM, OpenAICompatLLM
from relaygraph.serving.server import BackgroundServer


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
