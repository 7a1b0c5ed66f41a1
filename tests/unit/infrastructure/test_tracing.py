"""Tracing: off without an endpoint (every helper a no-op), spans and traceparents when on, and a trace the sampler
drops is carried on but never reaches the exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import SpanKind
from starlette.types import Message, Receive, Scope, Send

from payment_application.ports.publisher import EventHeaders
from payment_infrastructure.kafka.producer import kafka_headers, publish_span
from payment_infrastructure.observability import tracing
from payment_infrastructure.observability.logging import add_span_ids
from services.payment_service.api.middleware import RequestContextMiddleware

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SAMPLED_PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
DROPPED_PARENT = f"00-{TRACE}-00f067aa0ba902b7-00"


def _tracer_with(monkeypatch: pytest.MonkeyPatch, sampler: Sampler) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    return exporter


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    yield _tracer_with(monkeypatch, ParentBased(ALWAYS_ON))


def _headers(traceparent: str | None = None) -> EventHeaders:
    return EventHeaders("event-1", "payment_order_created", TRACE, "event-1", "42", traceparent)


# --- off -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ""},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"},
    ],
)
def test_without_an_endpoint_tracing_stays_off_and_every_helper_is_a_no_op(environ: dict[str, str]) -> None:
    assert tracing.configure_tracing("payment-service", environ) is False
    assert not tracing.tracing_enabled()
    with tracing.span("anything") as span:
        assert span is None
        assert tracing.traceparent_of() is None
        assert tracing.active_span_ids() is None
    assert tracing.parent_context(SAMPLED_PARENT) is None
    assert publish_span("payment_order_created_topic", _headers(SAMPLED_PARENT)) is None


def test_an_unknown_protocol_is_refused_with_the_supported_ones() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
    with pytest.raises(ValueError, match=r"http/json.*http/protobuf, grpc"):
        tracing.configure_tracing("payment-service", environ)
    assert not tracing.tracing_enabled()


def test_the_stored_traceparent_is_still_handed_on_when_the_publisher_does_not_trace() -> None:
    assert ("traceparent", SAMPLED_PARENT.encode()) in kafka_headers(_headers(SAMPLED_PARENT))
    assert "traceparent" not in dict(kafka_headers(_headers()))


# --- on ---------------------------------------------------------------------------------------------------------


def test_a_publish_continues_the_stored_traceparent_and_hands_on_its_own(exported: InMemorySpanExporter) -> None:
    span = publish_span("payment_order_created_topic", _headers(SAMPLED_PARENT))
    assert span is not None
    wire = dict(kafka_headers(_headers(SAMPLED_PARENT), tracing.traceparent_of(span)))
    span.end()

    (finished,) = exported.get_finished_spans()
    assert finished.name == "payment_order_created_topic publish"
    assert finished.kind is SpanKind.PRODUCER
    assert finished.parent is not None and f"{finished.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert f"{finished.context.trace_id:032x}" == TRACE
    assert wire["traceparent"].decode() == f"00-{TRACE}-{finished.context.span_id:016x}-01"


def test_a_message_outside_any_trace_gets_no_publish_span(exported: InMemorySpanExporter) -> None:
    assert publish_span("payment_status_check_scheduler_topic", _headers()) is None
    assert exported.get_finished_spans() == ()


def test_log_lines_in_a_recorded_span_carry_its_ids(exported: InMemorySpanExporter) -> None:
    with tracing.span("step", parent=tracing.parent_context(SAMPLED_PARENT)) as span:
        assert span is not None
        span_id = f"{span.get_span_context().span_id:016x}"
        plain = add_span_ids(None, "info", {"event": "psp_charged"})
        bound = add_span_ids(None, "info", {"event": "psp_charged", "trace_id": TRACE})
        clients = add_span_ids(None, "info", {"event": "psp_charged", "trace_id": "client-trace-7"})
    assert plain == {"event": "psp_charged", "trace_id": TRACE, "span_id": span_id}
    assert bound == plain
    assert clients == {"event": "psp_charged", "trace_id": "client-trace-7", "otel_trace_id": TRACE, "span_id": span_id}
    assert add_span_ids(None, "info", {"event": "outside"}) == {"event": "outside"}


async def _request(middleware: RequestContextMiddleware, headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/payments", "headers": headers}
    await middleware(scope, receive, send)
    return dict(sent[0]["headers"])


def _app_logging_inside_the_span(ids: list[tuple[str, str] | None]) -> object:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ids.append(tracing.active_span_ids())
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


async def test_the_request_span_is_the_servers_child_of_the_callers_traceparent(
    exported: InMemorySpanExporter,
) -> None:
    ids: list[tuple[str, str] | None] = []
    middleware = RequestContextMiddleware(_app_logging_inside_the_span(ids))  # type: ignore[arg-type]

    answered = await _request(middleware, [(b"traceparent", SAMPLED_PARENT.encode())])

    (server,) = exported.get_finished_spans()
    assert server.name == "POST unmatched" and server.kind is SpanKind.SERVER
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 202
    assert server.parent is not None and f"{server.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert answered[b"traceparent"].decode() == f"00-{TRACE}-{server.context.span_id:016x}-01"
    assert answered[b"x-trace-id"].decode() == TRACE
    assert ids == [(TRACE, f"{server.context.span_id:016x}")]


async def test_a_request_the_sampler_drops_is_carried_on_but_never_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    exported = _tracer_with(monkeypatch, ParentBased(TraceIdRatioBased(0.0)))
    ids: list[tuple[str, str] | None] = []
    middleware = RequestContextMiddleware(_app_logging_inside_the_span(ids))  # type: ignore[arg-type]

    answered = await _request(middleware, [])
    dropped = answered[b"traceparent"].decode()
    with tracing.span("payment create transaction", parent=tracing.parent_context(dropped)) as create:
        stored = tracing.traceparent_of(create)
    publish = publish_span("payment_order_created_topic", _headers(stored))
    with tracing.span("payment_order_created_topic process", parent=tracing.parent_context(dropped)) as step:
        handed_on = dict(kafka_headers(_headers(), tracing.traceparent_of()))

    assert create is None and publish is None and step is None  # no span at all below a dropped root
    assert stored == dropped and handed_on["traceparent"].decode() == dropped
    assert int(dropped.rsplit("-", 1)[1], 16) & 1 == 0  # W3C flags: the sampled bit is off
    assert answered[b"x-trace-id"].decode() == dropped.split("-")[1]
    assert ids == [None]
    assert exported.get_finished_spans() == ()


async def test_a_caller_that_says_not_sampled_is_obeyed(monkeypatch: pytest.MonkeyPatch) -> None:
    exported = _tracer_with(monkeypatch, ParentBased(ALWAYS_ON))
    middleware = RequestContextMiddleware(_app_logging_inside_the_span([]))  # type: ignore[arg-type]

    answered = await _request(middleware, [(b"traceparent", DROPPED_PARENT.encode())])

    assert answered[b"traceparent"].decode().startswith(f"00-{TRACE}-")
    assert int(answered[b"traceparent"].decode().rsplit("-", 1)[1], 16) & 1 == 0
    assert exported.get_finished_spans() == ()
