"""The delivery policy for one record: handler, in-place retries, dead letter. Returns only when the record is done.

"Done" means the handler returned (its effect is durable) or the record's dead letter was acknowledged; only
then may its offset be committed. What a failure leads to depends on its kind (see `failures`): poison is
dead-lettered at once; a dependency failure is retried in place until the dependency is back, however long that
takes, so the DLQ holds only records that can never succeed; an unexpected failure is retried a few times, then
dead-lettered. A DLQ that cannot be reached blocks the partition too (retried with backoff) rather than losing
the record. While the head record waits, its partition is held (the records behind it wait, nothing past it is
committed) and `kafka_consumer_partition_blocked_seconds` says for how long. Cancellation (rebalance or shutdown
past the drain timeout) propagates: the record is then not done and will be delivered again.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from opentelemetry.trace import SpanKind

from payment_domain.backoff import RandInt
from payment_infrastructure.kafka.consumer_metrics import (
    kafka_consumer_dependency_retries_total,
    kafka_consumer_handle_seconds,
    kafka_consumer_partition_blocked_seconds,
    kafka_consumer_records_total,
)
from payment_infrastructure.kafka.consumer_settings import ConsumerSettings
from payment_infrastructure.kafka.dead_letters import DeadLetterSink, error_class_name
from payment_infrastructure.kafka.failures import FailureKind, classify
from payment_infrastructure.kafka.records import ConsumedRecord, Handler, PoisonMessage
from payment_infrastructure.observability import tracing
from payment_infrastructure.observability.logging import log_context

log = structlog.get_logger(__name__)

# Envelope headers (written by the producer) -> log keys, as the rest of the project names them.
_LOGGED_HEADERS = {
    "eventId": "event_id",
    "traceId": "trace_id",
    "parentEventId": "parent_event_id",
    "aggregateId": "aggregate_id",
    "eventType": "event_type",
}


def record_log_context(record: ConsumedRecord) -> dict[str, Any]:
    context: dict[str, Any] = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
    for header, key in _LOGGED_HEADERS.items():
        value = record.header(header)
        if value is not None:
            context[key] = value
    return context


class RecordProcessor:
    """Shared by the partition workers of one consumer; `sleep`, `monotonic` and `randint` are there for tests."""

    def __init__(
        self,
        handler: Handler,
        dead_letters: DeadLetterSink,
        *,
        group_id: str,
        settings: ConsumerSettings,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        randint: RandInt = random.randint,
    ) -> None:
        self._handler = handler
        self._dead_letters = dead_letters
        self._group_id = group_id
        self._settings = settings
        self._sleep = sleep
        self._monotonic = monotonic
        self._randint = randint
        # Per partition, the records waiting in place and since when (a batch runs several records at once).
        self._blocked_since: dict[tuple[str, int], dict[int, float]] = {}

    async def process(self, record: ConsumedRecord) -> None:
        with log_context(**record_log_context(record)):
            try:
                if tracing.tracing_enabled():
                    await self._deliver_in_span(record)
                else:
                    await self._deliver(record)
            finally:
                self._unblock(record)

    async def _deliver_in_span(self, record: ConsumedRecord) -> None:
        """The consumer step's span, a child of the publish that sent the record (its `traceparent` header)."""
        with tracing.span(
            f"{record.topic} process",
            kind=SpanKind.CONSUMER,
            parent=tracing.parent_context(record.header("traceparent")),
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
                "messaging.consumer.group.name": self._group_id,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                "messaging.message.id": record.header("eventId") or "",
            },
        ):
            await self._deliver(record)

    async def _deliver(self, record: ConsumedRecord) -> None:
        attempts = unexpected = dependency_retries = 0
        while True:
            attempts += 1
            started = time.perf_counter()
            try:
                await self._handler(record)
            except Exception as error:
                self._observe(record, started)
                failure = classify(error)
                if failure.kind is FailureKind.POISON:
                    await self._dead_letter(record, error, attempts)
                    return
                if failure.kind is FailureKind.DEPENDENCY:
                    dependency_retries += 1
                    delay = self._settings.dependency_backoff_seconds(dependency_retries, self._randint)
                    blocked = self._block(record)
                    kafka_consumer_dependency_retries_total.labels(
                        self._group_id, record.topic, failure.dependency
                    ).inc()
                    log.warning(
                        "record_waits_for_dependency",
                        attempt=attempts,
                        dependency=failure.dependency,
                        blocked_seconds=round(blocked, 3),
                        retry_in_seconds=delay,
                        error_class=error_class_name(error),
                        error=str(error)[:500],
                    )
                else:
                    unexpected += 1
                    if unexpected > self._settings.in_place_retries:
                        await self._dead_letter(record, error, attempts)
                        return
                    delay = self._settings.in_place_backoff_seconds(unexpected, self._randint)
                    log.warning(
                        "record_handler_failed_retrying",
                        attempt=attempts,
                        error_class=error_class_name(error),
                        error=str(error)[:500],
                    )
                kafka_consumer_records_total.labels(self._group_id, record.topic, "retried").inc()
                await self._sleep(delay)
                continue
            self._observe(record, started)
            kafka_consumer_records_total.labels(self._group_id, record.topic, "ok").inc()
            if dependency_retries:
                log.info(
                    "record_unblocked",
                    attempts=attempts,
                    blocked_seconds=round(self._blocked_for((record.topic, record.partition)), 3),
                )
            return

    def _block(self, record: ConsumedRecord) -> float:
        """Mark the record blocked (from now, unless it already is); return for how long its partition has been."""
        key = (record.topic, record.partition)
        waiting = self._blocked_since.get(key)
        if waiting is None:
            waiting = self._blocked_since[key] = {}
            # (Re)bound at every new blockage: whichever member holds the partition now reports it.
            gauge = kafka_consumer_partition_blocked_seconds.labels(self._group_id, record.topic, str(record.partition))
            gauge.set_function(functools.partial(self._blocked_for, key))
        waiting.setdefault(record.offset, self._monotonic())
        return self._blocked_for(key)

    def _unblock(self, record: ConsumedRecord) -> None:
        key = (record.topic, record.partition)
        waiting = self._blocked_since.get(key)
        if waiting is not None:
            waiting.pop(record.offset, None)
            if not waiting:
                del self._blocked_since[key]

    def _blocked_for(self, key: tuple[str, int]) -> float:
        """Since the oldest record of the partition still waiting in place started waiting."""
        waiting = self._blocked_since.get(key)
        return 0.0 if not waiting else max(self._monotonic() - min(waiting.values()), 0.0)

    def _observe(self, record: ConsumedRecord, started: float) -> None:
        kafka_consumer_handle_seconds.labels(self._group_id, record.topic).observe(time.perf_counter() - started)

    async def _dead_letter(self, record: ConsumedRecord, error: BaseException, attempts: int) -> None:
        failures = 0
        while True:
            try:
                await self._dead_letters.publish(record, error, group_id=self._group_id, attempts=attempts)
            except Exception as publish_error:
                failures += 1
                blocked = self._block(record)
                log.error(
                    "dead_letter_publish_failed",
                    failures=failures,
                    blocked_seconds=round(blocked, 3),
                    error_class=error_class_name(publish_error),
                    error=str(publish_error)[:500],
                )
                await self._sleep(self._settings.dead_letter_backoff_seconds(failures))
                continue
            kafka_consumer_records_total.labels(self._group_id, record.topic, "dead_lettered").inc()
            tracing.mark_failed(tracing.current_span(), f"dead-lettered: {error_class_name(error)}")
            log.error(
                "record_dead_lettered",
                attempts=attempts,
                error_class=error_class_name(error),
                error=str(error)[:500],
                poison=isinstance(error, PoisonMessage),
            )
            return
