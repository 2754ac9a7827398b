"""OpenTelemetry spans of relaygraph's work, named by the GenAI semantic conventions.

Off by default: until export is configured, every span is OpenTelemetry's shared no-op
span and callers skip building attributes (`Span.is_recording`), so a run costs what it
cost before. Export turns on

- in code, with `configure` (an exporter of your choice, an OTLP endpoint, or the
  ``OTEL_*`` variables), which returns the SDK `TracerProvider` (``force_flush``);
- from the environment, at the first span, when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (OTLP over HTTP/protobuf; the other
  standard variables apply: ``OTEL_SERVICE_NAME``, ``OTEL_EXPORTER_OTLP_HEADERS``,
  ``OTEL_BSP_*``; ``OTEL_SDK_DISABLED=true`` keeps it off);
- or by an application that set OpenTelemetry's global tracer provider itself, whose
  spans relaygraph's then join.

The tracer is process-wide, as OpenTelemetry's own is (one provider per process, spans
parented through context variables); `configure` replaces it and `shutdown` flushes
it and turns export off again. The span tree and the attributes are described in
``docs/guides/telemetry.md``; the spans themselves are made by the layers that do the work
(`graph`, `agents`, `eval`, `serving`).

Example:
    >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    ...     InMemorySpanExporter)
    >>> exporter = InMemorySpanExporter()
    >>> provider = configure(exporter, batch=False)
    >>> with span("invoke_workflow demo", attributes={"gen_ai.operation.name": "x"}):
    ...     pass
    >>> [s.name for s in exporter.get_finished_spans()]
    ['invoke_workflow demo']
    >>> shutdown()
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import TYPE_CHECKING, TypeVar

from opentelemetry import trace
from opentelemetry.propagate import extract as _extract
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

from relaygraph.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.util.types import AttributeValue

__all__ = [
    "Span",
    "SpanKind",
    "configure",
    "context_from_headers",
    "current_span",
    "enabled",
    "fail",
    "iterate_within",
    "record_content",
    "shutdown",
    "span",
    "start_span",
    "traceresponse",
]

T = TypeVar("T")
_log = logging.getLogger(__name__)
_SCOPE = "relaygraph"
_NOOP: contextlib.nullcontext[Span] = contextlib.nullcontext(INVALID_SPAN)
_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


class _State:
    """The resolved tracer (None: export is off), and whether spans carry content."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # re-entered: resolving from the environment configures
        self.resolved = False
        self.tracer: trace.Tracer | None = None
        self.provider: TracerProvider | None = None
        self.content = False


_state = _State()


def configure(
    exporter: SpanExporter | None = None,
    *,
    endpoint: str | None = None,
    service_name: str | None = None,
    record_content: bool | None = None,
    batch: bool = True,
) -> TracerProvider:
    """Turn span export on for this process (replacing any earlier configuration).

    Args:
        exporter: Where spans go; by default OTLP over HTTP/protobuf to ``endpoint`` (or
            the ``OTEL_EXPORTER_OTLP_*`` variables). Tests pass an ``InMemorySpanExporter``.
        endpoint: The OTLP traces URL (``http://host:4318/v1/traces``), for the default
            exporter.
        service_name: The resource's ``service.name``; ``OTEL_SERVICE_NAME`` or
            ``relaygraph`` by default.
        record_content: Whether model and tool spans carry prompts, replies, tool
            arguments and results (``gen_ai.input.messages`` and the like: possibly
            sensitive). Default: ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``.
        batch: Export from a background thread in batches (what a service wants);
            False exports each span as it ends (what a test wants).

    Returns:
        The SDK tracer provider: ``force_flush()`` it before reading an exporter.
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if exporter is None:
        exporter = _otlp_exporter(endpoint)
    name = service_name or os.environ.get("OTEL_SERVICE_NAME") or "relaygraph"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    with _state.lock:
        previous = _state.provider
        _state.provider = provider
        _state.tracer = provider.get_tracer(_SCOPE)
        _state.content = _env_flag(_CONTENT_ENV) if record_content is None else record_content
        _state.resolved = True
    if previous is not None:
        previous.shutdown()
    return provider


def shutdown() -> None:
    """Flush and close what `configure` set up; export stays off until it is called again."""
    with _state.lock:
        provider = _state.provider
        _state.provider = _state.tracer = None
        _state.content = False
        _state.resolved = True
    if provider is not None:
        provider.shutdown()


def _otlp_exporter(endpoint: str | None) -> SpanExporter:
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    )
    if protocol not in (None, "", "http/protobuf"):
        raise ConfigError(
            f"OTLP protocol {protocol!r} is not supported; relaygraph exports "
            "http/protobuf (set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf and port 4318)",
            parameter="OTEL_EXPORTER_OTLP_PROTOCOL",
            value=protocol,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _resolve() -> trace.Tracer | None:
    """The tracer, looked up once: configured, from the environment, global, or none.

    Held under the lock throughout, so threads that start spans at once configure one
    exporter between them.
    """
    with _state.lock:
        if _state.resolved:
            return _state.tracer
        if _env_flag("OTEL_SDK_DISABLED"):
            tracer = None
        elif os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        ):
            try:
                configure()
            except ConfigError as exc:  # a bad variable must not fail the run it observes
                _log.error("OpenTelemetry export stays off: %s", exc)
                shutdown()
            return _state.tracer
        elif isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            tracer = None  # nobody set a global provider: off
        else:
            tracer = trace.get_tracer(_SCOPE)
        _state.tracer, _state.content = tracer, _env_flag(_CONTENT_ENV)
        _state.resolved = True
        return tracer


def enabled() -> bool:
    """Whether spans are exported (a cheap check for work done only for telemetry)."""
    return (_state.tracer if _state.resolved else _resolve()) is not None


def record_content() -> bool:
    """Whether spans may carry prompts, replies and tool arguments (see `configure`)."""
    return enabled() and _state.content


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
    context: Context | None = None,
) -> contextlib.AbstractContextManager[Span]:
    """A span that is current inside the ``with`` block (a child of the current span, or
    of ``context``); an exception escaping the block marks it as an error.

    With export off this is one shared no-op context manager.
    """
    tracer = _state.tracer if _state.resolved else _resolve()
    if tracer is None:
        return _NOOP
    return tracer.start_as_current_span(name, context=context, kind=kind, attributes=attributes)


def start_span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Span:
    """A span the caller ends (``span.end()``), a child of the current span; not made
    current, for work that yields between its parts (see `iterate_within`)."""
    tracer = _state.tracer if _state.resolved else _resolve()
    if tracer is None:
        return INVALID_SPAN
    return tracer.start_span(name, kind=kind, attributes=attributes)


def iterate_within(parent: Span, items: Iterator[T]) -> Iterator[T]:
    """``items``, each produced with ``parent`` as the current span (``items`` itself
    when the span is not recorded).

    A generator cannot keep a span current across its ``yield``s (its consumer may resume
    it from another thread or context), so the span is made current around each step of
    the iteration instead: what the step starts (a LangGraph node) becomes its child.
    """
    return _within(parent, items) if parent.is_recording() else items


def _within(parent: Span, items: Iterator[T]) -> Iterator[T]:
    # What an exception means for the span is the caller's to say (a recursion limit is a
    # run's structured error, not a crash), so use_span records none.
    try:
        while True:
            with trace.use_span(
                parent, end_on_exit=False, record_exception=False, set_status_on_exception=False
            ):
                try:
                    item = next(items)
                except StopIteration:
                    return
            yield item
    finally:  # a consumer that leaves early releases what ``items`` holds (a LangGraph run)
        close = getattr(items, "close", None)
        if close is not None:
            close()


def fail(target: Span, kind: str, message: str) -> None:
    """Mark a span as failed: status ERROR and the conventions' ``error.type``."""
    if target.is_recording():
        target.set_attribute("error.type", kind)
        target.set_status(Status(StatusCode.ERROR, message))


def current_span() -> Span:
    """The span current in this context (the no-op span when none is, or export is off)."""
    return trace.get_current_span()


def context_from_headers(headers: Mapping[str, str]) -> Context:
    """The trace context of incoming request headers (W3C ``traceparent``/``tracestate``)."""
    return _extract(headers)


def traceresponse(target: Span) -> str | None:
    """``target`` as a W3C ``traceparent``-format value, for a response's
    ``traceresponse`` header (None when the span is not exported)."""
    ctx = target.get_span_context()
    if not ctx.is_valid or not target.is_recording():
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
