"""The HTTP side of talking to an OpenAI-compatible worker: connections, retries, errors.

`WorkerHTTP` sends JSON requests and reads server-sent-event streams. Retries: 429, 5xx,
timeouts and connection errors are retried ``max_retries`` times with exponential backoff
(honouring ``Retry-After``); other 4xx raise `RequestRejectedError` at once. A stream is
retried only before its first event, so no text is ever replayed. httpx's failures become
relaygraph's `TransportError` kinds, each naming the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

import httpx

from relaygraph.errors import (
    LLMError,
    RateLimitedError,
    RequestRejectedError,
    TransportError,
    WorkerConnectionError,
    WorkerServerError,
    WorkerTimeoutError,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping


class WorkerHTTP:
    """Connections to one worker for one model's requests (sync, and async per event loop)."""

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None,
        timeout_s: float,
        max_retries: int,
        backoff_s: float,
    ) -> None:
        self.model = model
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self._client = httpx.Client(headers=self._headers, timeout=self._timeout)
        # An AsyncClient belongs to the event loop it first ran in: one per loop.
        self._aclient: httpx.AsyncClient | None = None
        self._aclient_loop: asyncio.AbstractEventLoop | None = None

    def close(self) -> None:
        """Close the synchronous connections."""
        self._client.close()

    async def aclose(self) -> None:
        """Close the asynchronous connections of the running event loop."""
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = self._aclient_loop = None

    def _async_client(self) -> httpx.AsyncClient:
        """The async client of the running event loop (a new loop gets a new client)."""
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aclient_loop is not loop:
            self._aclient = httpx.AsyncClient(headers=self._headers, timeout=self._timeout)
            self._aclient_loop = loop
        return self._aclient

    # -- requests ------------------------------------------------------------------------

    def request(self, method: str, url: str, body: Mapping[str, Any] | None = None) -> Any:
        """The JSON reply, retried as the module docstring says.

        Raises:
            TransportError: The last attempt's failure, or a rejection (4xx).
        """
        for attempt in range(self.max_retries + 1):
            try:
                with self._translated(f"{method} {url}"):
                    response = self._client.request(method, url, json=body)
                self._raise_for(response)
                return response.json()
            except TransportError as error:
                if attempt == self.max_retries:
                    raise
                time.sleep(self._delay(attempt, error))
        raise AssertionError("unreachable")  # pragma: no cover

    async def arequest(self, url: str, body: Mapping[str, Any]) -> Any:
        """`request` (a POST) on the running event loop."""
        for attempt in range(self.max_retries + 1):
            try:
                with self._translated(f"POST {url}"):
                    response = await self._async_client().post(url, json=body)
                self._raise_for(response)
                return response.json()
            except TransportError as error:
                if attempt == self.max_retries:
                    raise
                await asyncio.sleep(self._delay(attempt, error))
        raise AssertionError("unreachable")  # pragma: no cover

    def events(self, url: str, body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """The JSON payloads of a POST's server-sent events, retried before the first.

        Raises:
            TransportError: As `request`; after the first event, failures are not retried.
            LLMError: The worker reported an error inside the stream.
        """
        for attempt in range(self.max_retries + 1):
            started = False
            try:
                with (
                    self._translated(f"stream from {url}"),
                    self._client.stream("POST", url, json=body) as response,
                ):
                    if response.status_code >= 400:
                        response.read()
                        self._raise_for(response)
                    for line in response.iter_lines():
                        if (data := self._event(line)) is not None:
                            started = True
                            yield data
                    return
            except TransportError as error:
                if started or attempt == self.max_retries:  # never replay text already sent
                    raise
                time.sleep(self._delay(attempt, error))

    async def aevents(self, url: str, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """`events` on the running event loop (not retried)."""
        with self._translated(f"stream from {url}"):
            async with self._async_client().stream("POST", url, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    self._raise_for(response)
                async for line in response.aiter_lines():
                    if (data := self._event(line)) is not None:
                        yield data

    # -- errors --------------------------------------------------------------------------

    def _raise_for(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            error = response.json().get("error", {})
            message = error.get("message") or response.text
        except (json.JSONDecodeError, AttributeError):
            error, message = {}, response.text
        status = response.status_code
        where = f"{response.request.method} {response.request.url}"
        if status == 429:
            retry_after = response.headers.get("retry-after")
            raise RateLimitedError(
                f"{where} rate limited: {message}",
                model=self.model,
                retry_after=float(retry_after) if retry_after else None,
            )
        if status >= 500:
            raise WorkerServerError(
                f"{where} failed ({status}): {message}", model=self.model, status=status
            )
        raise RequestRejectedError(
            f"{where} rejected ({status}): {message}",
            model=self.model,
            status=status,
            code=error.get("code") or error.get("type"),
            param=error.get("param"),
        )

    def _delay(self, attempt: int, error: TransportError) -> float:
        if isinstance(error, RateLimitedError) and error.retry_after is not None:
            return error.retry_after
        return float(self.backoff_s * 2**attempt)

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """Turn httpx's transport failures into relaygraph's `TransportError` kinds."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise WorkerTimeoutError(f"{what} timed out: {exc}", model=self.model) from exc
        except httpx.TransportError as exc:
            raise WorkerConnectionError(
                f"{what} failed to reach the worker: {exc}", model=self.model
            ) from exc

    def _event(self, line: str) -> dict[str, Any] | None:
        """The JSON payload of an SSE ``data:`` line (None for other lines and ``[DONE]``).

        Raises:
            LLMError: The worker reported an error inside the stream.
        """
        if not line.startswith("data:"):
            return None
        payload = line[5:].strip()
        if payload == "[DONE]":
            return None
        data: dict[str, Any] = json.loads(payload)
        if "error" in data:
            message = data["error"].get("message")
            raise LLMError(f"worker stream failed: {message}", model=self.model)
        return data
