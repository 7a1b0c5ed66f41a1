"""The one Kafka producer every process uses: aiokafka, keyed by paymentOrderId, original header names, and the W3C
`traceparent` of the publish span when tracing is on (its parent: the message's stored traceparent, else the current
span; a message with neither is sent without one, no span)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from opentelemetry.trace import Span, SpanKind

from payment_application.ports.publisher import EventHeaders, OutboundMessage
from payment_domain.events import AnyEnvelope
from payment_infrastructure.kafka.lifecycle import OwnsProducer
from payment_infrastructure.kafka.metrics import (
    kafka_messages_published_total,
    kafka_publish_batch_seconds,
    kafka_publish_failed_total,
)
from payment_infrastructure.kafka.security import client_security
from payment_infrastructure.kafka.settings import KafkaSettings
from payment_infrastructure.observability import tracing
from payment_infrastructure.serialization import envelope_to_bytes

Header = tuple[str, bytes]


def kafka_headers(headers: EventHeaders, traceparent: str | None = None) -> list[Header]:
    """`traceparent`: the publish span's (or, with no span, the current one's), which replaces the one the message
    came with."""
    wire = [
        ("eventId", headers.event_id.encode()),
        ("eventType", headers.event_type.encode()),
        ("traceId", headers.trace_id.encode()),
        ("parentEventId", headers.parent_event_id.encode()),
        ("aggregateId", headers.aggregate_id.encode()),
    ]
    context = traceparent or headers.traceparent
    if context:
        wire.append(("traceparent", context.encode()))
    return wire


def publish_span(topic: str, headers: EventHeaders) -> Span | None:
    """The producer span of one message, when tracing is on and the message belongs to a trace."""
    if not tracing.tracing_enabled():
        return None
    parent = tracing.parent_context(headers.traceparent)
    if parent is None and tracing.traceparent_of() is None:
        return None
    return tracing.start_span(
        f"{topic} publish",
        kind=SpanKind.PRODUCER,
        parent=parent,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            "messaging.kafka.message.key": headers.aggregate_id,
            "messaging.message.id": headers.event_id,
        },
    )


def _end_span(span: Span | None, failure: BaseException | None) -> None:
    if span is not None:
        if failure is not None:
            tracing.mark_failed(span, f"{type(failure).__name__}: {failure}")
        span.end()


def outbound_message(envelope: AnyEnvelope) -> OutboundMessage:
    """Serialize the envelope once (orjson) and address it: its topic, keyed by its aggregate (paymentOrderId)."""
    return OutboundMessage(
        topic=envelope.topic.value,
        key=envelope.aggregate_id,
        value=envelope_to_bytes(envelope),
        headers=EventHeaders.of(envelope),
    )


def build_producer(settings: KafkaSettings, *, client_id: str | None = None) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=client_id or settings.client_id,
        acks="all" if settings.acks == "all" else int(settings.acks),
        enable_idempotence=settings.enable_idempotence,
        linger_ms=settings.linger_ms,
        max_batch_size=settings.max_batch_size,
        max_request_size=settings.max_request_size,
        compression_type=None if settings.compression_type == "none" else settings.compression_type,
        request_timeout_ms=settings.request_timeout_ms,
        retry_backoff_ms=settings.retry_backoff_ms,
        metadata_max_age_ms=settings.metadata_max_age_ms,
        **client_security(settings),
    )


class KafkaEventPublisher(OwnsProducer):
    """`EventPublisher` over one AIOKafkaProducer. Start it before use and stop it (flushes) at shutdown."""

    def __init__(self, producer: AIOKafkaProducer, *, delivery_timeout: float) -> None:
        self._producer = producer
        self._delivery_timeout = delivery_timeout

    @classmethod
    def from_settings(cls, settings: KafkaSettings, *, client_id: str | None = None) -> KafkaEventPublisher:
        return cls(build_producer(settings, client_id=client_id), delivery_timeout=settings.delivery_timeout_seconds)

    async def publish(self, topic: str, key: str, value: bytes, headers: EventHeaders) -> None:
        span = publish_span(topic, headers)
        wire = kafka_headers(headers, tracing.traceparent_of(span))
        try:
            async with asyncio.timeout(self._delivery_timeout):
                future = await self._producer.send(topic, value, key=key.encode(), headers=wire)
                await future
        except TimeoutError as error:
            kafka_publish_failed_total.labels(topic).inc()
            _end_span(span, error)
            raise KafkaTimeoutError(f"no acknowledgement within {self._delivery_timeout}s") from error
        except Exception as error:
            kafka_publish_failed_total.labels(topic).inc()
            _end_span(span, error)
            raise
        _end_span(span, None)
        kafka_messages_published_total.labels(topic).inc()

    async def publish_batch(self, messages: Sequence[OutboundMessage]) -> list[Exception | None]:
        outcomes: list[Exception | None] = [None] * len(messages)
        futures: list[asyncio.Future[Any] | None] = [None] * len(messages)
        spans = [publish_span(m.topic, m.headers) for m in messages] if tracing.tracing_enabled() else None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._delivery_timeout):
                for index, message in enumerate(messages):
                    span = spans[index] if spans is not None else None
                    try:
                        futures[index] = await self._producer.send(
                            message.topic,
                            message.value,
                            key=message.key.encode(),
                            headers=kafka_headers(message.headers, tracing.traceparent_of(span)),
                        )
                    except Exception as error:  # unknown topic, message too large, producer closed...
                        outcomes[index] = error
                pending = [f for f in futures if f is not None]
                if pending:
                    await asyncio.wait(pending)
        except TimeoutError:
            pass
        timed_out = KafkaTimeoutError(f"no acknowledgement within {self._delivery_timeout}s")
        for index, future in enumerate(futures):
            if future is None:
                if outcomes[index] is None:
                    outcomes[index] = timed_out
            elif not future.done():
                # aiokafka may still deliver it: the caller treats it as failed and retries (a duplicate at worst).
                future.add_done_callback(_retrieve_outcome)
                outcomes[index] = timed_out
            elif future.cancelled():
                outcomes[index] = timed_out
            else:
                failure = future.exception()
                if failure is not None:
                    outcomes[index] = failure if isinstance(failure, Exception) else RuntimeError(repr(failure))
        kafka_publish_batch_seconds.observe(time.perf_counter() - started)
        if spans is not None:
            for span, outcome in zip(spans, outcomes, strict=True):
                _end_span(span, outcome)
        _count(messages, outcomes)
        return outcomes


def _retrieve_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _count(messages: Sequence[OutboundMessage], outcomes: Sequence[Exception | None]) -> None:
    published: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for message, outcome in zip(messages, outcomes, strict=True):
        (published if outcome is None else failed)[message.topic] += 1
    for topic, count in published.items():
        kafka_messages_published_total.labels(topic).inc(count)
    for topic, count in failed.items():
        kafka_publish_failed_total.labels(topic).inc(count)
