"""Keys, body size, concurrency, timeouts, CORS and metrics on a real server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from relaygraph.agents import Agent
from relaygraph.graph import AgentGraph
from relaygraph.llm import LocalLLM
from relaygraph.llm.scripted import ScriptedLLM
from relaygraph.serving.config import SecurityConfig
from relaygraph.serving.server import BackgroundServer

pytestmark = pytest.mark.server

KEY = "sk-test-123"
CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def secured(smollm2: LocalLLM) -> Iterator[BackgroundServer]:
    security = SecurityConfig(
        api_keys=[KEY], max_body_bytes=2_000, max_concurrency_per_key=1, request_timeout_s=3.0
    )
    with BackgroundServer({"smollm2-135m": smollm2}, security=security) as server:
        yield server


def test_key_required(secured: BackgroundServer) -> None:
    anonymous = openai.OpenAI(base_url=secured.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        anonymous.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert info.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    ok = openai.OpenAI(base_url=secured.base_url, api_key=KEY, max_retries=0)
    assert ok.chat.completions.create(**CHAT).choices  # type: ignore[call-overload]
    root = secured.base_url.removesuffix("/v1")
    assert httpx.get(f"{root}/health").status_code == 200  # open for load balancers


def test_body_size_limit(secured: BackgroundServer) -> None:
    big = CHAT | {"messages": [{"role": "user", "content": "x" * 5_000}]}
    headers = {"Authorization": f"Bearer {KEY}"}
    response = httpx.post(f"{secured.base_url}/chat/completions", json=big, headers=headers)
    assert response.status_code == 413 and "over the limit" in response.json()["error"]["message"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while reading
        yield b'{"model": "smollm2-135m", "messages": [{"role": "user", "content": "'
        yield b"y" * 5_000
        yield b'"}]}'

    response = httpx.post(
        f"{secured.base_url}/chat/completions", content=chunked(), headers=headers
    )
    assert response.status_code == 413


def test_concurrency_limit_per_key(secured: BackgroundServer) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    slow = CHAT | {"max_tokens": 200, "stream": True}
    started = threading.Event()

    def hold() -> None:
        with httpx.stream(
            "POST", f"{secured.base_url}/chat/completions", json=slow, headers=headers, timeout=60
        ) as r:
            for _ in r.iter_lines():
                started.set()

    holder = threading.Thread(target=hold)
    holder.start()
    assert started.wait(30)
    response = httpx.post(f"{secured.base_url}/chat/completions", json=CHAT, headers=headers)
    holder.join()
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "concurrency_limit"


def test_request_timeout(smollm2: LocalLLM) -> None:
    def slow_lookup(key: str) -> str:
        """Takes longer than the server allows."""
        time.sleep(3)
        return key

    graph = AgentGraph(
        "slow", model=ScriptedLLM(lambda prompt: "Thought: wait\nAction: slow_lookup[k]")
    )
    graph.add_agent(Agent(name="a", tools=[slow_lookup])).set_entry("a").set_finish("a")
    security = SecurityConfig(request_timeout_s=0.5)
    with BackgroundServer({"slow": graph.compile()}, security=security) as server:
        began = time.perf_counter()
        body = {"model": "slow", "messages": [{"role": "user", "content": "go"}]}
        response = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=30)
        assert response.status_code == 503 and response.json()["error"]["code"] == "timeout"
        assert time.perf_counter() - began < 2.5


def test_cors_is_off_by_default_and_on_when_configured(smollm2: LocalLLM) -> None:
    origin = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    with BackgroundServer({"smollm2-135m": smollm2}) as plain:
        response = httpx.options(f"{plain.base_url}/chat/completions", headers=origin)
        assert "access-control-allow-origin" not in response.headers
    security = SecurityConfig(cors_origins=["https://example.org"], api_keys=[KEY])
    with BackgroundServer({"smollm2-135m": smollm2}, security=security) as open_:
        response = httpx.options(f"{open_.base_url}/chat/completions", headers=origin)
        assert response.headers["access-control-allow-origin"] == "https://example.org"


def test_metrics(secured: BackgroundServer) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    httpx.post(f"{secured.base_url}/chat/completions", json=CHAT, headers=headers)
    httpx.post(f"{secured.base_url}/chat/completions", json=CHAT)  # no key: a 401
    text = httpx.get(f"{secured.base_url.removesuffix('/v1')}/metrics").text
    assert 'relaygraph_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert 'relaygraph_tokens_total{kind="completion",model="smollm2-135m"}' in text
    assert "relaygraph_request_seconds_bucket" in text
    assert 'relaygraph_errors_total{status="401"}' in text
