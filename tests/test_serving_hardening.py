"""Findings of a red-team probe of the server, each replayed against a real server.

Bounded metrics labels, a 500 that leaves its keep-alive connection usable, 400s (not
500s) for valid JSON the model cannot take, the concurrency limit counted before a slow
body arrives, and strict credentials and booleans.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from relaygraph.llm.scripted import ScriptedLLM
from relaygraph.serving.config import SecurityConfig
from relaygraph.serving.server import BackgroundServer

if TYPE_CHECKING:
    from relaygraph.llm.types import Prompt

pytestmark = pytest.mark.server

KEY = "sk-hardening"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = {"model": "scripted", "messages": [{"role": "user", "content": "Hi"}]}
BROKEN = {"model": "scripted", "messages": [{"role": "user", "content": "boom"}]}


def reply(prompt: Prompt) -> str:
    """'ok', or, when the prompt says boom, a plain RuntimeError: a bug in a model."""
    if "boom" in str(prompt):
        raise RuntimeError("the model broke")
    return "ok"


@pytest.fixture(scope="module")
def keyed() -> Iterator[BackgroundServer]:
    """A server with a key and at most two requests in flight per key."""
    security = SecurityConfig(api_keys=[KEY], max_concurrency_per_key=2)
    with BackgroundServer({"scripted": ScriptedLLM(reply)}, security=security) as server:
        yield server


@pytest.fixture(scope="module")
def open_() -> Iterator[BackgroundServer]:
    """A server without keys."""
    with BackgroundServer({"scripted": ScriptedLLM(reply)}) as server:
        yield server


def root(server: BackgroundServer) -> str:
    return server.base_url.removesuffix("/v1")


def test_made_up_paths_do_not_grow_metrics(keyed: BackgroundServer) -> None:
    with httpx.Client(base_url=root(keyed)) as client:

        def probe(count: int) -> None:
            for number in range(count):
                path = f"/{secrets.token_hex(16)}/{number}"
                client.request("POST" if number % 3 else "GET", path, headers=AUTH)
                client.get(path)  # no key: a 401, labelled all the same
                client.get(f"/v1/traces/{secrets.token_hex(8)}", headers=AUTH)

        probe(2)  # every label set these requests make exists from here on
        client.get("/metrics")  # and the one /metrics adds
        before = client.get("/metrics").text
        probe(250)
        after = client.get("/metrics").text
    assert abs(len(after) - len(before)) < 500  # counters' digits, not new series
    assert 'route="other",status="401"' in after and 'route="other",status="404"' in after
    assert 'route="/v1/traces/{trace_id}",status="404"' in after
    assert {line.split("{")[0] for line in after.splitlines()} == {
        line.split("{")[0] for line in before.splitlines()
    }


def test_a_500_leaves_the_connection_usable(keyed: BackgroundServer) -> None:
    statuses, local_ports = [], set()
    with httpx.Client(base_url=keyed.base_url, headers=AUTH) as client:
        for number in range(20):
            response = client.post("/chat/completions", json=BROKEN if number % 2 else CHAT)
            statuses.append(response.status_code)
            stream = response.extensions["network_stream"]
            local_ports.add(stream.get_extra_info("client_addr")[1])
            if response.status_code == 500:
                assert response.json()["error"] == {
                    "message": "internal server error",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
    assert statuses == [200, 500] * 10
    assert len(local_ports) == 1  # one keep-alive connection answered all twenty


CHAT_WITH = '{"model": "scripted", "messages": [{"role": "user", "content": %s}]%s}'
"""A chat request's JSON text around a content and more fields: json.dumps would refuse a
lone surrogate, so the tests write its escape, ``\\ud800``, into the text themselves."""
SURROGATE = '"a\\ud800"'
TOOL = (
    ', "tools": [{"type": "function", "function": {"name": "f", "parameters": '
    f'{{"type": "object", "properties": {{"q": {{"description": {SURROGATE}}}}}}}}}}}]'
)
TOKENIZE = '{"model": "scripted", "prompt": %s}'


@pytest.mark.parametrize(
    ("path", "body", "param", "says"),
    [
        ("/v1/chat/completions", CHAT_WITH % ('"Hi"', ', "seed": -1'), "seed", "equal to 0"),
        ("/v1/chat/completions", CHAT_WITH % (SURROGATE, ""), "messages.0.content", "character 1"),
        (
            "/v1/chat/completions",
            CHAT_WITH % (f'[{{"type": "text", "text": {SURROGATE}}}]', ""),
            "messages.0.content",
            "of content.0.text",
        ),
        (
            "/v1/chat/completions",
            CHAT_WITH % (SURROGATE, ', "stream": true'),
            "messages.0.content",
            "surrogate",
        ),
        (
            "/v1/chat/completions",
            CHAT_WITH % ('"Hi"', f', "stop": ["x", {SURROGATE}]'),
            "stop",
            "of stop.1",
        ),
        (
            "/v1/chat/completions",
            CHAT_WITH % ('"Hi"', TOOL),
            "tools.0.function.parameters",
            "of parameters.properties.q.description",
        ),
        ("/tokenize", TOKENIZE % SURROGATE, "prompt", "surrogate"),
        ("/tokenize", CHAT_WITH % (SURROGATE, ""), "messages.0.content", "surrogate"),
        ("/v1/completions", TOKENIZE % SURROGATE, "prompt", "surrogate"),
        ("/v1/completions", TOKENIZE % f'["x", {SURROGATE}]', "prompt", "of prompt.1"),
    ],
    ids=[
        "negative-seed",
        "chat-content",
        "content-part",
        "streamed",
        "stop",
        "tool-schema",
        "tokenize-prompt",
        "tokenize-messages",
        "completion-prompt",
        "completion-prompts",
    ],
)
def test_valid_json_the_model_cannot_take_is_a_400(
    open_: BackgroundServer, path: str, body: str, param: str, says: str
) -> None:
    response = httpx.post(
        root(open_) + path, content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"{param}: ") and says in error["message"]


def test_a_surrogate_pair_is_text(open_: BackgroundServer) -> None:
    body = CHAT_WITH % ('"\\ud83d\\ude00"', "")  # one emoji, escaped as JSON allows
    response = httpx.post(
        f"{open_.base_url}/chat/completions",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200


def _status(sock: socket.socket, *, within_s: float) -> int | None:
    """The status of the response waiting on ``sock``, or None if none comes in time."""
    sock.settimeout(within_s)
    head = b""
    try:
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            head += chunk
    except TimeoutError:
        return None
    return int(head.split(b" ", 2)[1])


def test_slow_bodies_count_against_the_concurrency_limit(keyed: BackgroundServer) -> None:
    body = json.dumps(CHAT).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {keyed.host}\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    half = len(body) // 2
    socks = [socket.create_connection((keyed.host, keyed.port)) for _ in range(6)]
    try:
        for sock in socks:
            sock.sendall(head + body[:half])  # and the rest later: a slow client
        answered: dict[socket.socket, int] = {}
        deadline = time.monotonic() + 10
        while len(answered) < 4 and time.monotonic() < deadline:
            for sock in socks:
                if sock not in answered and (status := _status(sock, within_s=0.05)):
                    answered[sock] = status
        assert sorted(answered.values()) == [429] * 4  # the limit is 2
        waiting = [sock for sock in socks if sock not in answered]
        assert [_status(sock, within_s=0.3) for sock in waiting] == [None, None]
        for sock in waiting:
            sock.sendall(body[half:])
        assert [_status(sock, within_s=10) for sock in waiting] == [200, 200]
    finally:
        for sock in socks:
            sock.close()


def test_a_client_leaving_mid_body_frees_its_slot(keyed: BackgroundServer) -> None:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {keyed.host}\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Length: 1000\r\n\r\n{{"
    ).encode()
    for _ in range(2):  # fill the limit with bodies that never arrive, then leave
        with socket.create_connection((keyed.host, keyed.port)) as sock:
            sock.sendall(head)
            time.sleep(0.1)
    deadline = time.monotonic() + 10
    while True:
        response = httpx.post(f"{keyed.base_url}/chat/completions", json=CHAT, headers=AUTH)
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "status", "says"),
    [
        ([("Authorization", KEY)], 401, "Bearer <key>"),
        ([("Authorization", "Basic c2staGFyZGVuaW5nOg==")], 401, "Bearer <key>"),
        ([], 401, "missing API key"),
        ([("Authorization", "Bearer sk-wrong")], 401, "invalid API key"),
        ([("Authorization", f"Bearer {KEY}")] * 2, 400, "send exactly one"),
        ([("Authorization", "Bearer sk-wrong"), ("Authorization", f"Bearer {KEY}")], 400, "one"),
        ([("Authorization", f"bearer {KEY}")], 200, ""),  # the scheme is case-insensitive
    ],
    ids=["bare-key", "basic", "none", "wrong-key", "twice", "wrong-then-right", "bearer"],
)
def test_credentials_are_one_bearer_header(
    keyed: BackgroundServer, headers: list[tuple[str, str]], status: int, says: str
) -> None:
    response = httpx.post(f"{keyed.base_url}/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == status
    if status != 200:
        error = response.json()["error"]
        assert says in error["message"] and error["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("path", "body", "param", "says"),
    [
        ("/v1/chat/completions", CHAT | {"stream": "yes"}, "stream", "valid boolean"),
        ("/v1/chat/completions", CHAT | {"logprobs": 1}, "logprobs", "valid boolean"),
        (
            "/v1/completions",
            {"model": "scripted", "prompt": "a", "echo": "true"},
            "echo",
            "valid boolean",
        ),
        (
            "/tokenize",
            {"model": "scripted", "prompt": "a", "add_special_tokens": 0},
            "add_special_tokens",
            "valid boolean",
        ),
        (
            "/tokenize",
            {"model": "scripted", "prompt": "a", "messages": CHAT["messages"]},
            None,
            "exactly one of prompt or messages is required; got both",
        ),
        (
            "/tokenize",
            {"model": "scripted"},
            None,
            "exactly one of prompt or messages is required; got neither",
        ),
    ],
    ids=["stream-yes", "logprobs-1", "echo-string", "special-tokens-0", "both", "neither"],
)
def test_request_fields_are_strict(
    open_: BackgroundServer, path: str, body: dict[str, Any], param: str | None, says: str
) -> None:
    response = httpx.post(root(open_) + path, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"]
