"""Prometheus metrics of one server: requests, tokens, latency, errors, streaming latency,
and the embedded engines' queue, batch occupancy and prefix-cache hits.

Each app owns its registry (no process-wide state), exposed at ``GET /metrics``. Every
label takes values from a bounded set (route templates, served names, status codes), so
no request can grow the exposition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from prometheus_client.metrics_core import Metric

    from relaygraph.llm.jobs import SchedulerLoad
    from relaygraph.llm.types import Usage

CONTENT_TYPE = CONTENT_TYPE_LATEST
_STREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@runtime_checkable
class ReportsLoad(Protocol):
    """An embedded model whose engine reports its load (`LocalLLM`)."""

    def engine_load(self) -> SchedulerLoad: ...


class ServerMetrics:
    """The counters and histograms the server updates, and the engines' state read at
    each scrape.

    Args:
        engines: Served name to each embedded model whose engine load is exported.
    """

    def __init__(self, engines: Mapping[str, ReportsLoad] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "relaygraph_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "relaygraph_tokens",
            "Tokens processed by model and kind (prompt, completion, cached).",
            ["model", "kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "relaygraph_request_seconds",
            "Request latency by route.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "relaygraph_time_to_first_token_seconds",
            "Seconds from a streamed request's arrival to its first token, by model.",
            ["model"],
            buckets=_STREAM_BUCKETS,
            registry=self.registry,
        )
        self.inter_token = Histogram(
            "relaygraph_inter_token_seconds",
            "Seconds between a stream's successive chunks, by model.",
            ["model"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.routed = Counter(
            "relaygraph_routed_answers",
            "Answers of served cascades by the model whose answer stood.",
            ["model", "answered_by"],
            registry=self.registry,
        )
        self.errors = Counter(
            "relaygraph_errors",
            "Error responses by HTTP status.",
            ["status"],
            registry=self.registry,
        )
        if engines:
            self.registry.register(_EngineCollector(engines))

    def count_tokens(self, model: str, usage: Usage) -> None:
        self.tokens.labels(model, "prompt").inc(usage.prompt_tokens)
        self.tokens.labels(model, "completion").inc(usage.completion_tokens)
        if usage.cached_tokens:
            self.tokens.labels(model, "cached").inc(usage.cached_tokens)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCollector(Collector):
    """The embedded engines' load, read when Prometheus scrapes."""

    def __init__(self, engines: Mapping[str, ReportsLoad]) -> None:
        self._engines = dict(engines)

    def collect(self) -> Iterator[Metric]:
        waiting = GaugeMetricFamily(
            "relaygraph_engine_queue_depth", "Requests waiting for a slot.", labels=["model"]
        )
        running = GaugeMetricFamily(
            "relaygraph_engine_batch_occupancy",
            "Fraction of the engine's slots held by running requests.",
            labels=["model"],
        )
        hit_rate = GaugeMetricFamily(
            "relaygraph_engine_cache_hit_ratio",
            "Prompt tokens read from the prefix cache, over all prompt tokens admitted.",
            labels=["model"],
        )
        prompt = CounterMetricFamily(
            "relaygraph_engine_prompt_tokens", "Prompt tokens admitted.", labels=["model"]
        )
        cached = CounterMetricFamily(
            "relaygraph_engine_cached_tokens",
            "Prompt tokens read from the prefix cache.",
            labels=["model"],
        )
        passes = CounterMetricFamily(
            "relaygraph_engine_passes", "Batched forward passes.", labels=["model"]
        )
        for name, engine in self._engines.items():
            load = engine.engine_load()
            waiting.add_metric([name], load.waiting)
            running.add_metric([name], load.running / load.slots)
            hit_rate.add_metric([name], load.cached_tokens / max(load.prompt_tokens, 1))
            prompt.add_metric([name], load.prompt_tokens)
            cached.add_metric([name], load.cached_tokens)
            passes.add_metric([name], load.passes)
        yield from (waiting, running, hit_rate, prompt, cached, passes)
