"""relaygraph's OpenAI-compatible server, exercised with the official `openai` client."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from relaygraph.llm import GenerationParams, LocalLLM
from relaygraph.serving.server import BackgroundServer

pytestmark = [pytest.mark.server, pytest.mark.slow]

MESSAGES = [{"role": "user", "content": "Name a fruit."}]


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def test_models_are_listed(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert ids == {"smollm2-135m", "gemma3-270m"}


def test_chat_matches_the_engine(client: openai.OpenAI, smollm2: LocalLLM) -> None:
    response = client.chat.completions.create(
        model="smollm2-135m",
        messages=MESSAGES,
        max_tokens=12,
        temperature=0,  # type: ignore[arg-type]
    )
    expected = smollm2.complete(MESSAGES, GenerationParams(max_tokens=12))
    assert response.choices[0].message.content == expected.text
    assert response.usage is not None
    assert response.usage.prompt_tokens == expected.usage.prompt_tokens
    assert response.usage.completion_tokens == expected.usage.completion_tokens


def test_chat_logprobs(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="smollm2-135m",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=4,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    content = response.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 4
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)


def test_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smollm2-135m",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reply = client.chat.completions.create(
        model="smollm2-135m",
        messages=MESSAGES,
        max_tokens=10,
        temperature=0,  # type: ignore[arg-type]
    )
    assert text == reply.choices[0].message.content
    assert chunks[-1].usage is not None and reply.usage is not None
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == reply.choices[0].finish_reason and set(finish[:-1]) == {None}


def test_completions_with_echo_and_logprobs(client: openai.OpenAI) -> None:
    response = client.completions.create(
        model="gemma3-270m",
        prompt="The capital of France is",
        max_tokens=3,
        temperature=0,
        logprobs=2,
        echo=True,
    )
    choice = response.choices[0]
    assert choice.text.startswith("The capital of France is")
    logprobs = choice.logprobs
    assert logprobs is not None and logprobs.token_logprobs is not None
    assert logprobs.token_logprobs[0] is None  # the first prompt token is not scored
    assert all(v is not None and v <= 0 for v in logprobs.token_logprobs[1:])
    assert "".join(logprobs.tokens or []) == choice.text


def test_token_prompt_and_prompt_logprobs(server: BackgroundServer, smollm2: LocalLLM) -> None:
    ids = smollm2.tokenize("The capital of France is Paris")
    body = {
        "model": "smollm2-135m",
        "prompt": ids,
        "max_tokens": 1,
        "temperature": 0,
        "prompt_logprobs": 2,
        "return_token_ids": True,
    }
    data = httpx.post(f"{server.base_url}/completions", json=body, timeout=60).json()
    positions = data["choices"][0]["prompt_logprobs"]
    assert positions[0] is None and len(positions) == len(ids)
    expected = smollm2.score(ids[:1], ids[1:], top_logprobs=2)
    for token, entry, scored in zip(ids[1:], positions[1:], expected.tokens, strict=True):
        assert entry[str(token)]["logprob"] == pytest.approx(scored.logprob, abs=1e-6)
        assert entry[str(token)]["rank"] == scored.rank
    assert data["choices"][0]["prompt_token_ids"] == ids


def test_tokenize_and_detokenize_routes(server: BackgroundServer, smollm2: LocalLLM) -> None:
    root = server.base_url.removesuffix("/v1")
    data = httpx.post(
        f"{root}/tokenize", json={"model": "smollm2-135m", "messages": MESSAGES}
    ).json()
    assert data["tokens"] == smollm2.encode(MESSAGES) and data["count"] == len(data["tokens"])
    text = httpx.post(
        f"{root}/detokenize", json={"model": "smollm2-135m", "tokens": data["tokens"]}
    ).json()
    assert "Name a fruit." in text["prompt"]


@pytest.mark.parametrize(
    ("kwargs", "status", "param"),
    [
        ({"model": "no-such-model"}, 404, "model"),
        ({"messages": []}, 400, "messages"),
        ({"max_tokens": -1}, 400, "max_tokens"),
        ({"max_tokens": 10**6}, 400, "max_tokens"),
        ({"temperature": 3.5}, 400, "temperature"),
        ({"top_logprobs": 50, "logprobs": True}, 400, "top_logprobs"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
        ({"messages": [{"role": "user", "content": "x " * 5000}]}, 400, "messages"),
        ({"n": 2, "stream": True}, 400, "n"),
    ],
)
def test_bad_requests_get_openai_errors(
    client: openai.OpenAI, kwargs: dict[str, object], status: int, param: str
) -> None:
    request = {"model": "smollm2-135m", "messages": MESSAGES, "max_tokens": 4} | kwargs
    with pytest.raises(openai.APIStatusError) as info:
        result = client.chat.completions.create(**request)  # type: ignore[call-overload]
        if kwargs.get("stream"):
            list(result)
    assert info.value.status_code == status
    error = info.value.body
    assert isinstance(error, dict) and error["param"] == param
    assert error["message"] and error["type"]


@pytest.mark.parametrize("body", [b"{not json", b"[]", b"null", json.dumps({"model": 5}).encode()])
def test_malformed_bodies_are_400(server: BackgroundServer, body: bytes) -> None:
    response = httpx.post(
        f"{server.base_url}/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_unknown_route_is_an_openai_404(server: BackgroundServer) -> None:
    response = httpx.get(f"{server.base_url}/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_client_disconnect_mid_stream_frees_the_model(server: BackgroundServer) -> None:
    body = {"model": "smollm2-135m", "messages": MESSAGES, "max_tokens": 400, "stream": True}
    with httpx.stream(
        "POST", f"{server.base_url}/chat/completions", json=body, timeout=60
    ) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
    # Generation of the abandoned stream was cancelled: the next request does not wait
    # for 400 tokens (several seconds) to finish first.
    quick = {"model": "smollm2-135m", "messages": MESSAGES, "max_tokens": 2}
    response = httpx.post(f"{server.base_url}/chat/completions", json=quick, timeout=3)
    assert response.status_code == 200


def test_health(server: BackgroundServer) -> None:
    assert httpx.get(server.base_url.removesuffix("/v1") + "/health").json() == {"status": "ok"}
