"""A running relaygraph server's traces, read over its API (``GET /v1/traces`` and
``GET /v1/traces/{id}``) for the viewer's live page."""

from __future__ import annotations

import re
from typing import Any

import httpx

from relaygraph.errors import ConfigError
from relaygraph.graph.trace import Trace
from relaygraph.ui.catalog import NotFoundError

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


class LiveServer:
    """The traces a server keeps, newest first.

    Args:
        url: The server's base URL (``http://127.0.0.1:8000``; a trailing ``/v1`` is fine).
        api_key: Sent as ``Authorization: Bearer`` when the server has keys.
    """

    def __init__(self, url: str, *, api_key: str | None = None, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/").removesuffix("/v1")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def recent(self) -> list[dict[str, Any]]:
        """The server's recent traces, newest first (id, graph, task, answer, steps...).

        Raises:
            ConfigError: The server cannot be reached or answered with an error.
        """
        data = self._get("/v1/traces")
        rows = data.get("data", []) if isinstance(data, dict) else []
        return [row for row in rows if isinstance(row, dict)]

    def trace(self, trace_id: str) -> Trace:
        """One of the server's traces.

        Raises:
            NotFoundError: Not a trace id, or the server has no such trace.
            ConfigError: The server cannot be reached or answered with an error.
        """
        if not TRACE_ID.match(trace_id):
            raise NotFoundError(f"{trace_id!r} is not a trace id")
        return Trace.model_validate(self._get(f"/v1/traces/{trace_id}"))

    def close(self) -> None:
        self._client.close()

    def _get(self, path: str) -> Any:
        try:
            response = self._client.get(path)
        except httpx.HTTPError as exc:
            raise ConfigError(f"cannot reach {self.url}: {exc}") from None
        if response.status_code == 404:
            raise NotFoundError(f"{self.url}{path} not found")
        if response.status_code != 200:
            raise ConfigError(f"{self.url}{path} answered {response.status_code}")
        return response.json()
