"""Running the app: in the foreground (``relaygraph serve``) or on a background thread."""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING

import uvicorn

from relaygraph.errors import RelayGraphError
from relaygraph.serving.app import create_app

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

    from relaygraph.llm.protocol import LLM


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class BackgroundServer:
    """The OpenAI-compatible server on a thread of this process, for tests and benchmarks.

    Example:
        >>> with BackgroundServer({"smollm2-135m": llm}) as server:   # doctest: +SKIP
        ...     OpenAICompatLLM(server.base_url, "smollm2-135m").complete("Hi")
    """

    def __init__(
        self, models: Mapping[str, LLM], *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(
            create_app(models), host=host, port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, name="relaygraph-server", daemon=True
        )

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ending in ``/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout_s: float = 30.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RelayGraphError(f"server on {self.host}:{self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
