"""Trace ids (the envelope's `traceId`, from `X-Trace-Id` or W3C `traceparent`) and OpenTelemetry spans.

Spans are exported by OTLP only when the standard `OTEL_*` variables name an endpoint; without one every helper here
is a single check and returns. The W3C `traceparent` travels in the HTTP and Kafka headers and with each outbox row,
so one payment is one trace across the API, the dispatcher and the consumers (docs/operations.md, "Tracing").
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_SAFE_TRACE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    span_id: str
    sampled: bool = True

    @property
    def traceparent(self) -> str:
        """A traceparent for our own span; a non-W3C X-Trace-Id gets a derived W3C id so the header stays valid."""
        w3c = self.trace_id if re.fullmatch(r"[0-9a-f]{32}", self.trace_id) else _hex32(self.trace_id)
        return f"00-{w3c}-{self.span_id}-{'01' if self.sampled else '00'}"


def _hex32(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def new_span_id() -> str:
    return secrets.token_hex(8)


def new_trace_id() -> str:
    return secrets.token_hex(16)


def trace_from_headers(x_trace_id: str | None, traceparent: str | None) -> TraceContext:
    """X-Trace-Id wins when it is sane (the original's header); then traceparent; else a fresh W3C id."""
    span = new_span_id()
    parsed = _TRACEPARENT.match(traceparent.strip().lower()) if traceparent else None
    sampled = parsed is None or int(parsed.group(3), 16) & 1 == 1  # the sampled bit; 0x02 is "random trace id"
    if x_trace_id and _SAFE_TRACE_ID.match(x_trace_id.strip()):
        return TraceContext(x_trace_id.strip(), span, sampled)
    if parsed and parsed.group(1) != "0" * 32:
        return TraceContext(parsed.group(1), span, sampled)
    return TraceContext(new_trace_id(), span)


# --- OpenTelemetry spans ------------------------------------------------------------------------------------------
# Off unless an OTLP endpoint is configured (the standard OTEL_* variables, see docs/operations.md): then every helper
# below is one check of `_tracer` and returns, so a process without an endpoint pays nothing per request or record.
# On, the sampler (OTEL_TRACES_SAMPLER, default parent-based always-on) decides per trace at its root; a trace it
# drops is carried on (its traceparent says "not sampled") but never recorded, so the exporter never sees it.

_tracer: otel_trace.Tracer | None = None
_parent_based = True  # the sampler follows the parent's decision (every parentbased_* sampler, the default)
_PROTOCOLS = ("http/protobuf", "grpc")


def tracing_enabled() -> bool:
    return _tracer is not None


def otlp_endpoint(environ: Mapping[str, str]) -> str | None:
    """The configured OTLP endpoint for traces, or None when spans are not to be exported at all."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return None
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return endpoint.strip() or None if endpoint else None


def configure_tracing(service: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Install an SDK tracer provider exporting by OTLP when an endpoint is configured; return whether it did.

    The SDK reads the rest of the standard variables itself: OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*, the exporter's
    OTEL_EXPORTER_OTLP_* (headers, timeout, certificate), OTEL_RESOURCE_ATTRIBUTES. OTEL_SERVICE_NAME, when set,
    replaces the deployable's own name."""
    global _tracer, _parent_based
    if otlp_endpoint(environ) is None:
        return False
    # The SDK is imported only here: a process without an endpoint never loads it.
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    from opentelemetry.sdk.trace.sampling import ParentBased

    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or _PROTOCOLS[0]
    ).strip()
    exporter: SpanExporter
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        exporter = HttpExporter()
    elif protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        exporter = GrpcExporter()
    else:
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use one of {', '.join(_PROTOCOLS)}"
        )
    name = environ.get("OTEL_SERVICE_NAME", "").strip() or service
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    otel_trace.set_tracer_provider(provider)
    _parent_based = isinstance(provider.sampler, ParentBased)
    _tracer = provider.get_tracer("payments")
    return True


def parent_context(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """The remote parent a W3C traceparent names, or None when there is none (or tracing is off)."""
    if _tracer is None or not traceparent:
        return None
    parsed = _TRACEPARENT.match(traceparent.strip().lower())
    if parsed is None or parsed.group(1) == "0" * 32 or parsed.group(2) == "0" * 16:
        return None
    remote = otel_trace.SpanContext(
        trace_id=int(parsed.group(1), 16),
        span_id=int(parsed.group(2), 16),
        is_remote=True,
        trace_flags=otel_trace.TraceFlags(int(parsed.group(3), 16)),
        trace_state=otel_trace.TraceState.from_header([tracestate]) if tracestate else None,
    )
    return otel_trace.set_span_in_context(otel_trace.NonRecordingSpan(remote))


def _dropped(parent: Context | None) -> bool:
    """The parent (given, else the current span) is a trace the sampler dropped: with a parent-based sampler its
    children are dropped too, so they need no span at all; the parent's traceparent is handed on as it is."""
    if not _parent_based:
        return False
    context = otel_trace.get_current_span(parent).get_span_context()
    return context.is_valid and not context.trace_flags.sampled


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Context | None = None,
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[otel_trace.Span | None]:
    """A span made current for the block (None when tracing is off or the trace was dropped: then `parent`, if
    given, is made current instead, so what the block publishes carries it on). `parent`: a remote parent instead
    of the current span. An exception leaving the block marks the span as failed."""
    if _tracer is None:
        yield None
        return
    if _dropped(parent):
        token = otel_context.attach(parent) if parent is not None else None
        try:
            yield None
        finally:
            if token is not None:
                otel_context.detach(token)
        return
    with _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes) as current:
        yield current


def start_span(
    name: str, *, kind: SpanKind, parent: Context | None = None, attributes: Mapping[str, str | int] | None = None
) -> otel_trace.Span | None:
    """A span the caller ends (`span.end()`), not made current: for work that finishes elsewhere. None when
    tracing is off or the trace was dropped."""
    if _tracer is None or _dropped(parent):
        return None
    return _tracer.start_span(name, context=parent, kind=kind, attributes=attributes)


def traceparent_of(current: otel_trace.Span | None = None) -> str | None:
    """The traceparent to hand on for `current` (default: the active span), None when there is no span."""
    if _tracer is None:
        return None
    context = (current or otel_trace.get_current_span()).get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_span() -> otel_trace.Span | None:
    """The active span when tracing is on and it is recorded (sampled), else None."""
    if _tracer is None:
        return None
    current = otel_trace.get_current_span()
    return current if current.is_recording() else None


def active_span_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the active span when it is recorded (sampled), for log lines; else None."""
    if _tracer is None:
        return None
    current = otel_trace.get_current_span()
    if not current.is_recording():
        return None
    context = current.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def mark_failed(current: otel_trace.Span | None, description: str) -> None:
    if current is not None:
        current.set_status(Status(StatusCode.ERROR, description[:500]))
