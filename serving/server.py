"""Running the app: building what a config serves, in the foreground or on a thread."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING

import uvicorn

from relaygraph.errors import ConfigError, RelayGraphError
from relaygraph.graph.loader import load_graph
from relaygraph.graph.postgres import SharedRecords
from relaygraph.llm.openai_compat import OpenAICompatLLM
from relaygraph.llm.pool import WorkerPool
from relaygraph.llm.registry import EngineOptions, load_llm
from relaygraph.memory import open_memory
from relaygraph.routing.calibration import Calibration
from relaygraph.routing.models import Cascade, Rung
from relaygraph.routing.uncertainty import ESTIMATORS
from relaygraph.serving.app import create_app
from relaygraph.serving.config import (
    CascadeEntry,
    GraphEntry,
    LLMEntry,
    SecurityConfig,
    ServeConfig,
)
from relaygraph.serving.traces import TraceStore

logger = logging.getLogger("relaygraph.serving")
LOOPBACK = ("127.0.0.1", "localhost", "::1")

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType

    from fastapi import FastAPI

    from relaygraph.llm.protocol import LLM
    from relaygraph.routing.uncertainty import UncertaintyEstimator
    from relaygraph.serving.routes import Served


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def build_models(config: ServeConfig) -> dict[str, Served]:
    """Load every model, worker pool, graph and cascade a config names (each model once).

    Raises:
        ConfigError: An unknown model or estimator, an unloadable graph factory, a
            calibration for another model.
    """
    served: dict[str, Served] = {}
    loaded: dict[str, LLM] = {}

    def llm(spec: str, engine: EngineOptions | None = None) -> LLM:
        if spec not in loaded:
            loaded[spec] = load_llm(spec, engine=engine)
        return loaded[spec]

    for name, entry in config.models.items():
        if isinstance(entry, LLMEntry):
            served[name] = llm(entry.llm, entry.engine())
        elif isinstance(entry, CascadeEntry):
            served[name] = build_cascade(entry, llm)
        elif isinstance(entry, GraphEntry):
            graph = load_graph(entry.graph, model=entry.model)
            memory = None if entry.memory is None else open_memory(entry.memory)
            if memory is not None:
                graph.memory = memory
            served[name] = compiled = graph.compile(checkpointer=config.database)
            if memory is not None:
                compiled.close_with(memory)  # the app closes its graphs at shutdown
        else:
            key = os.environ.get(entry.api_key_env) if entry.api_key_env else None
            workers = [
                OpenAICompatLLM(
                    url, entry.model, api_key=key, timeout_s=entry.timeout_s, max_retries=0
                )
                for url in entry.workers
            ]
            served[name] = WorkerPool(
                workers,
                name=entry.model,
                cooldown_s=entry.cooldown_s,
                max_imbalance=entry.max_imbalance,
            )
    return served


def build_cascade(entry: CascadeEntry, llm: Callable[[str], LLM]) -> Cascade:
    """The cascade a config entry describes, its models loaded with ``llm``.

    Raises:
        ConfigError: An unknown estimator, or a calibration for another model or estimator.
    """

    def estimator(name: str) -> UncertaintyEstimator:
        if name not in ESTIMATORS:
            raise ConfigError(
                f"unknown estimator {name!r}; known: {', '.join(sorted(ESTIMATORS))}",
                parameter="estimator",
            )
        return ESTIMATORS[name]()

    rungs = []
    for rung in entry.cascade:
        model = llm(rung.llm)
        if rung.estimator is None:
            rungs.append(Rung(model))
            continue
        fallback = None
        if rung.fallback_estimator is not None and rung.fallback_threshold is not None:
            fallback = (estimator(rung.fallback_estimator), rung.fallback_threshold)
        if rung.calibration is None:
            assert rung.threshold is not None  # RungEntry holds one of the two
            rungs.append(Rung(model, estimator(rung.estimator), rung.threshold, fallback=fallback))
            continue
        rungs.append(
            Rung.calibrated(
                model,
                estimator(rung.estimator),
                Calibration.load(rung.calibration, model=model.name),
                escalation_rate=rung.escalation_rate,
                target_accuracy=rung.target_accuracy,
                fallback=fallback,
            )
        )
    return Cascade(rungs)


def app_from_config(config: ServeConfig) -> FastAPI:
    """The app serving everything in ``config``."""
    shared = SharedRecords(config.database) if config.database else None
    traces = TraceStore(capacity=config.max_traces, directory=config.trace_dir, shared=shared)
    return create_app(build_models(config), security=config.security, traces=traces)


def safe_host(host: str, security: SecurityConfig) -> str:
    """The host to bind: without API keys, never beyond this machine."""
    if host not in LOOPBACK and not security.keys():
        logger.warning(
            "no API keys configured: binding 127.0.0.1 instead of %s; set security.api_keys_env "
            "(or api_keys / api_keys_file) to serve other machines",
            host,
        )
        return "127.0.0.1"
    return host


class BackgroundServer:
    """The OpenAI-compatible server on a thread of this process, for tests and benchmarks.

    Example:
        >>> with BackgroundServer({"smollm2-135m": llm}) as server:   # doctest: +SKIP
        ...     OpenAICompatLLM(server.base_url, "smollm2-135m").complete("Hi")
    """

    def __init__(
        self,
        models: Mapping[str, Served] | None = None,
        *,
        app: FastAPI | None = None,
        security: SecurityConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if (models is None) == (app is None):
            raise RelayGraphError("give BackgroundServer either models or an app")
        self.host = host
        self.port = port or free_port(host)
        served = app or create_app(models or {}, security=security)
        config = uvicorn.Config(
            served, host=host, port=self.port, log_level="warning", lifespan="on"
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
