"""Prometheus metrics of one server: requests, tokens, latency, errors.

Each app owns its registry (no process-wide state), exposed at ``GET /metrics``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    """The counters and histograms the server updates."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "relaygraph_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "relaygraph_tokens",
            "Tokens processed by model and kind (prompt, completion).",
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

    def count_tokens(self, model: str, prompt: int, completion: int) -> None:
        self.tokens.labels(model, "prompt").inc(prompt)
        self.tokens.labels(model, "completion").inc(completion)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
