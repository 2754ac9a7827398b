"""Property-based fuzzing of request bodies: never a 5xx, always a well-formed error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaygraph.llm.scripted import ScriptedLLM
from relaygraph.serving.server import BackgroundServer

pytestmark = pytest.mark.server

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
anything = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "system", "assistant", "tool", "x"]),
            "content": st.one_of(st.text(max_size=40), anything),
        }
    ),
    max_size=3,
)
fields = {
    "model": st.one_of(st.just("scripted"), st.just("nope"), anything),
    "messages": st.one_of(messages, anything),
    "prompt": st.one_of(st.text(max_size=40), st.lists(st.integers(-5, 60), max_size=5), anything),
    "max_tokens": st.one_of(st.integers(-5, 20), anything),
    "temperature": st.one_of(st.floats(-1, 3), anything),
    "top_p": st.one_of(st.floats(-1, 2), anything),
    "n": st.one_of(st.integers(-1, 3), anything),
    "stop": st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=3), anything),
    "logprobs": anything,
    "top_logprobs": st.one_of(st.integers(-1, 25), anything),
    "stream": st.booleans(),
    "echo": anything,
    "seed": anything,
}
bodies = st.fixed_dictionaries({}, optional=fields)


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer({"scripted": ScriptedLLM(lambda prompt: "a b c d e f")}) as running:
        yield running


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies, route=st.sampled_from(["/chat/completions", "/completions"]))
def test_no_body_crashes_the_server(
    server: BackgroundServer, body: dict[str, Any], route: str
) -> None:
    check(httpx.post(f"{server.base_url}{route}", json=body, timeout=30))


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=200))
def test_no_bytes_crash_the_server(server: BackgroundServer, raw: bytes) -> None:
    headers = {"content-type": "application/json"}
    check(
        httpx.post(f"{server.base_url}/chat/completions", content=raw, headers=headers, timeout=30)
    )
