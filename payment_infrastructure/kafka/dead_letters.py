"""Dead letters: a record no handler could process goes, untouched, to `<topic>.DLQ` with headers saying why.

Like the original's recoverer: same key, same partition number, the original raw bytes, the original headers
plus the error headers (named in `dead_letter_format`). The send waits for the broker's acknowledgement: the
consumer commits past a record only once its dead letter is durable.
"""

from __future__ import annotations

import asyncio
import traceback
from datetime import datetime
from typing import Protocol, Self

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError

from payment_application.ports.clock import Clock
from payment_domain.topics import dlq_of
from payment_infrastructure.kafka.consumer_metrics import kafka_dlq_messages_total
from payment_infrastructure.kafka.dead_letter_format import (
    ATTEMPTS,
    CONSUMER_GROUP,
    DEAD_LETTER_HEADERS,
    ERROR_CLASS,
    ERROR_MESSAGE,
    ERROR_STACKTRACE,
    ORIGINAL_OFFSET,
    ORIGINAL_PARTITION,
    ORIGINAL_TOPIC,
    RECOVERED_AT,
)
from payment_infrastructure.kafka.lifecycle import OwnsProducer
from payment_infrastructure.kafka.producer import build_producer
from payment_infrastructure.kafka.records import ConsumedRecord
from payment_infrastructure.kafka.settings import KafkaSettings

MAX_ERROR_MESSAGE_CHARS = 8_000
MAX_STACKTRACE_CHARS = 16_000


class DeadLetterSink(Protocol):
    async def publish(self, record: ConsumedRecord, error: BaseException, *, group_id: str, attempts: int) -> None: ...


def error_class_name(error: BaseException) -> str:
    cls = type(error)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def dead_letter_headers(
    record: ConsumedRecord, error: BaseException, *, group_id: str, attempts: int, recovered_at: datetime
) -> list[tuple[str, bytes]]:
    """The original headers (any stale error headers of an earlier dead-lettering replaced) plus why and where."""
    headers = {name: value for name, value in record.headers.items() if name not in DEAD_LETTER_HEADERS}
    stacktrace = "".join(traceback.format_exception(error))
    headers |= {
        ERROR_CLASS: error_class_name(error).encode(),
        ERROR_MESSAGE: str(error)[:MAX_ERROR_MESSAGE_CHARS].encode("utf-8", "replace"),
        ERROR_STACKTRACE: stacktrace[-MAX_STACKTRACE_CHARS:].encode("utf-8", "replace"),
        ORIGINAL_TOPIC: record.topic.encode(),
        ORIGINAL_PARTITION: str(record.partition).encode(),
        ORIGINAL_OFFSET: str(record.offset).encode(),
        CONSUMER_GROUP: group_id.encode(),
        ATTEMPTS: str(attempts).encode(),
        RECOVERED_AT: recovered_at.isoformat().encode(),
    }
    return list(headers.items())


class DeadLetterPublisher(OwnsProducer):
    """`DeadLetterSink` over its own producer (never the business publisher's, so a DLQ burst cannot starve it)."""

    def __init__(self, producer: AIOKafkaProducer, *, clock: Clock, delivery_timeout: float) -> None:
        self._producer = producer
        self._clock = clock
        self._delivery_timeout = delivery_timeout

    @classmethod
    def from_settings(cls, settings: KafkaSettings, *, clock: Clock, client_id: str | None = None) -> Self:
        producer = build_producer(settings, client_id=client_id or f"{settings.client_id}-dlq")
        return cls(producer, clock=clock, delivery_timeout=settings.delivery_timeout_seconds)

    async def publish(self, record: ConsumedRecord, error: BaseException, *, group_id: str, attempts: int) -> None:
        """Send and wait for the ack; raises when the broker did not acknowledge (the caller retries)."""
        topic = dlq_of(record.topic)
        headers = dead_letter_headers(
            record, error, group_id=group_id, attempts=attempts, recovered_at=self._clock.now()
        )
        try:
            async with asyncio.timeout(self._delivery_timeout):
                partitions = await self._producer.partitions_for(topic)
                partition = record.partition if record.partition in partitions else None
                future = await self._producer.send(
                    topic, record.value, key=record.key_bytes, partition=partition, headers=headers
                )
                await future
        except TimeoutError as timeout:
            message = f"dead letter to {topic}: no acknowledgement within {self._delivery_timeout}s"
            raise KafkaTimeoutError(message) from timeout
        kafka_dlq_messages_total.labels(topic).inc()
