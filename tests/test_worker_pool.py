"""Worker pools: failover between real workers of one model, and through the server."""

from __future__ import annotations

import contextlib

import httpx
import openai
import pytest

from relaygraph.errors import RequestRejectedError, WorkerConnectionError
from relaygraph.llm import GenerationParams, LocalLLM, OpenAICompatLLM
from relaygraph.llm.pool import WorkerPool
from relaygraph.serving.config import ServeConfig
from relaygraph.serving.server import BackgroundServer, app_from_config, free_port

pytestmark = pytest.mark.server
PARAMS = GenerationParams(max_tokens=4)


def worker(url: str) -> OpenAICompatLLM:
    return OpenAICompatLLM(url, "smollm2-135m", max_retries=0, timeout_s=30)


def test_failover_to_a_live_worker_and_back(smollm2: LocalLLM) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with BackgroundServer({"smollm2-135m": smollm2}) as live:
        pool = WorkerPool([worker(dead), worker(live.base_url)], cooldown_s=60)
        expected = smollm2.complete("The sky is", PARAMS).text
        for _ in range(3):  # rotation hits the dead worker first at least once
            assert pool.complete("The sky is", PARAMS).text == expected
        assert pool.healthy() == [False, True]
        assert "".join(c.text for c in pool.stream("The sky is", PARAMS)) == expected
        assert pool.score("The sky is", " blue").tokens
        pool.close()


def test_every_worker_down_raises_the_last_error() -> None:
    pool = WorkerPool([worker(f"http://127.0.0.1:{free_port()}/v1") for _ in range(2)])
    with contextlib.closing(pool), pytest.raises(WorkerConnectionError):
        pool.complete("x", PARAMS)


def test_request_errors_do_not_fail_over(smollm2: LocalLLM) -> None:
    with (
        BackgroundServer({"smollm2-135m": smollm2}) as a,
        BackgroundServer({"smollm2-135m": smollm2}) as b,
    ):
        pool = WorkerPool([worker(a.base_url), worker(b.base_url)])
        with contextlib.closing(pool):
            with pytest.raises(RequestRejectedError):
                pool.complete("x", GenerationParams(max_tokens=100_000))
            assert pool.healthy() == [True, True]


def test_a_worker_dies_between_requests_through_the_server(smollm2: LocalLLM) -> None:
    first = BackgroundServer({"smollm2-135m": smollm2}).start()
    with BackgroundServer({"smollm2-135m": smollm2}) as second:
        config = ServeConfig.model_validate(
            {
                "models": {
                    "pooled": {
                        "workers": [first.base_url, second.base_url],
                        "model": "smollm2-135m",
                    }
                }
            }
        )
        with BackgroundServer(app=app_from_config(config)) as front:
            client = openai.OpenAI(base_url=front.base_url, api_key="unused", max_retries=0)
            ask = {
                "model": "pooled",
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 3,
            }
            assert client.chat.completions.create(**ask).choices  # type: ignore[call-overload]
            first.stop()  # one worker goes away
            for _ in range(3):
                assert client.chat.completions.create(**ask).choices  # type: ignore[call-overload]
            second.stop()  # now all of them
            response = httpx.post(f"{front.base_url}/chat/completions", json=ask, timeout=30)
            assert response.status_code == 503
            assert response.json()["error"]["type"] == "server_error"


def test_a_worker_that_dies_mid_request_fails_over(smollm2: LocalLLM) -> None:
    """The first worker reads the request, then its connection drops without an answer,
    as when a worker process crashes mid-request."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def die_mid_request() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(65536)  # the request arrived ...
            conn.close()  # ... and the worker died before answering

    threading.Thread(target=die_mid_request, daemon=True).start()
    try:
        with BackgroundServer({"smollm2-135m": smollm2}) as live:
            pool = WorkerPool([worker(f"http://127.0.0.1:{port}/v1"), worker(live.base_url)])
            with contextlib.closing(pool):
                for _ in range(2):
                    assert pool.complete("The sky is", PARAMS).text
                assert pool.healthy() == [False, True]
            # A stream whose worker dies before the first chunk fails over too.
            streaming = WorkerPool([worker(f"http://127.0.0.1:{port}/v1"), worker(live.base_url)])
            with contextlib.closing(streaming):
                expected = smollm2.complete("The sky is", PARAMS).text
                for _ in range(2):
                    assert (
                        "".join(c.text for c in streaming.stream("The sky is", PARAMS)) == expected
                    )
                assert streaming.healthy() == [False, True]
    finally:
        listener.close()


def test_requests_go_to_the_least_loaded_worker_and_conversations_stick(
    smollm2: LocalLLM,
) -> None:
    with (
        BackgroundServer({"smollm2-135m": smollm2}) as a,
        BackgroundServer({"smollm2-135m": smollm2}) as b,
    ):
        pool = WorkerPool([worker(a.base_url), worker(b.base_url)], max_imbalance=0)
        with contextlib.closing(pool):
            holding = pool.stream("Tell me a long story.", GenerationParams(max_tokens=300))
            next(iter(holding))  # one worker has a request in flight
            busy = pool.outstanding().index(1)
            chat = [{"role": "user", "content": "Name a colour."}]
            pool.complete(chat, PARAMS)
            assert pool.outstanding()[busy] == 1  # the call went to the idle worker
            holding.close()  # type: ignore[attr-defined]
            assert pool.outstanding() == [0, 0]
            # With equal loads, every turn of the conversation returns to its worker
            # (rotation alone would alternate).
            served = []
            for turn in range(4):
                transcript = [*chat, {"role": "assistant", "content": "Red."}] * (turn + 1)
                with contextlib.closing(pool.stream(transcript, PARAMS)) as stream:  # type: ignore[type-var]
                    next(iter(stream))
                    served.append(pool.outstanding().index(1))
            assert len(set(served)) == 1
