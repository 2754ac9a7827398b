"""`OpenAICompatLLM` against real HTTP servers on 127.0.0.1 that fail on purpose.

The worker here is a real `http.server` whose responses are scripted (5xx, 429, 4xx,
stalls): the failure modes of a vLLM worker that cannot be provoked on demand.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from relaygraph.errors import (
    LLMError,
    RateLimitedError,
    RequestRejectedError,
    WorkerConnectionError,
    WorkerServerError,
    WorkerTimeoutError,
)
from relaygraph.llm import GenerationParams, OpenAICompatLLM
from relaygraph.serving.server import free_port

OK_BODY = {
    "id": "cmpl-1",
    "object": "text_completion",
    "model": "m",
    "choices": [{"index": 0, "text": " Paris", "finish_reason": "stop", "token_ids": [7042]}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}


class ScriptedWorker:
    """Answers each POST with the next scripted (status, body, headers, delay)."""

    def __init__(self, script: list[tuple[int, dict[str, object], dict[str, str], float]]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, object]] = []
        worker = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["content-length"])
                worker.requests.append(json.loads(self.rfile.read(length)))
                status, body, headers, delay = (
                    worker.script.pop(0) if worker.script else (200, OK_BODY, {}, 0.0)
                )
                time.sleep(delay)
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture
def worker(request: pytest.FixtureRequest) -> Iterator[ScriptedWorker]:
    scripted = ScriptedWorker(request.param)
    scripted.thread.start()
    yield scripted
    scripted.httpd.shutdown()
    scripted.httpd.server_close()


def error(
    status: int, message: str = "boom"
) -> tuple[int, dict[str, object], dict[str, str], float]:
    return (
        status,
        {"error": {"message": message, "type": "x", "param": "max_tokens", "code": None}},
        {},
        0.0,
    )


@pytest.mark.parametrize("worker", [[error(503), error(500)]], indirect=True)
def test_server_errors_are_retried(worker: ScriptedWorker) -> None:
    llm = OpenAICompatLLM(worker.url, "m", max_retries=2, backoff_s=0.01)
    completion = llm.complete("The capital of France is")
    assert completion.text == " Paris" and completion.choice.token_ids == [7042]
    assert len(worker.requests) == 3


@pytest.mark.parametrize("worker", [[error(503), error(503), error(503)]], indirect=True)
def test_retries_are_bounded(worker: ScriptedWorker) -> None:
    llm = OpenAICompatLLM(worker.url, "m", max_retries=2, backoff_s=0.01)
    with pytest.raises(WorkerServerError) as info:
        llm.complete("x")
    assert info.value.status == 503 and "boom" in str(info.value)
    assert len(worker.requests) == 3


@pytest.mark.parametrize(
    "worker",
    [[(429, {"error": {"message": "slow down"}}, {"retry-after": "0.05"}, 0.0)]],
    indirect=True,
)
def test_rate_limit_honours_retry_after(worker: ScriptedWorker) -> None:
    llm = OpenAICompatLLM(worker.url, "m", max_retries=1, backoff_s=10.0)
    began = time.perf_counter()
    assert llm.complete("x").text == " Paris"
    assert time.perf_counter() - began < 5  # waited Retry-After, not the 10 s backoff


@pytest.mark.parametrize(
    "worker",
    [[(429, {"error": {"message": "slow down"}}, {"retry-after": "0"}, 0.0)]],
    indirect=True,
)
def test_rate_limit_without_retries_raises(worker: ScriptedWorker) -> None:
    llm = OpenAICompatLLM(worker.url, "m", max_retries=0)
    with pytest.raises(RateLimitedError) as info:
        llm.complete("x")
    assert info.value.retry_after == 0.0


@pytest.mark.parametrize("worker", [[error(400, "max_tokens is too large")]], indirect=True)
def test_client_errors_are_not_retried(worker: ScriptedWorker) -> None:
    llm = OpenAICompatLLM(worker.url, "m", max_retries=3, backoff_s=0.01)
    with pytest.raises(RequestRejectedError) as info:
        llm.complete("x", GenerationParams(max_tokens=5))
    assert info.value.status == 400 and info.value.param == "max_tokens"
    assert "max_tokens is too large" in str(info.value)
    assert len(worker.requests) == 1


@pytest.mark.parametrize("worker", [[(200, OK_BODY, {}, 2.0)]], indirect=True)
def test_timeout(worker: ScriptedWorker) -> None:
    llm = OpenAICompatLLM(worker.url, "m", max_retries=0, timeout_s=0.3)
    with pytest.raises(WorkerTimeoutError):
        llm.complete("x")


def test_connection_refused() -> None:
    llm = OpenAICompatLLM(f"http://127.0.0.1:{free_port()}/v1", "m", max_retries=1, backoff_s=0.01)
    with pytest.raises(WorkerConnectionError, match="failed to reach the worker"):
        llm.complete("x")


CHAT_BODY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}


@pytest.mark.parametrize("worker", [[(200, CHAT_BODY, {}, 0.0)]], indirect=True)
def test_request_body_follows_the_openai_api(worker: ScriptedWorker) -> None:
    llm = OpenAICompatLLM(worker.url, "m")
    completion = llm.complete(
        [{"role": "user", "content": "hi"}], GenerationParams(max_tokens=7, stop=("\n",), seed=3)
    )
    assert completion.text == "Hi" and completion.usage.prompt_tokens == 5
    body = worker.requests[0]
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["max_tokens"] == 7 and body["stop"] == ["\n"] and body["seed"] == 3


@pytest.mark.parametrize("worker", [[(200, {"unexpected": True}, {}, 0.0)]], indirect=True)
def test_malformed_worker_response_is_a_clear_error(worker: ScriptedWorker) -> None:
    llm = OpenAICompatLLM(worker.url, "m")
    with pytest.raises(LLMError, match="malformed completion"):
        llm.complete("x")
