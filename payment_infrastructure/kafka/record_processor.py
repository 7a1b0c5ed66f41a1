"""The delivery policy for one record: handler, in-place retries, dead letter. Returns only when the record is done.

"Done" means the handler returned (its effect is durable) or the record's dead letter was acknowledged; only
then may its offset be committed. A DLQ that cannot be reached blocks the partition (retried with backoff)
rather than losing the record. Cancellation (rebalance or shutdown past the drain timeout) propagates: the
record is then not done and will be delivered again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from payment_infrastructure.kafka.consumer_metrics import kafka_consumer_handle_seconds, kafka_consumer_records_total
from payment_infrastructure.kafka.consumer_settings import ConsumerSettings
from payment_infrastructure.kafka.dead_letters import DeadLetterSink, error_class_name
from payment_infrastructure.kafka.records import ConsumedRecord, Handler, PoisonMessage

log = structlog.get_logger(__name__)

# Envelope headers (written by the producer) -> log keys, as the rest of the project names them.
_LOGGED_HEADERS = {
    "eventId": "event_id",
    "traceId": "trace_id",
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
    def __init__(
        self, handler: Handler, dead_letters: DeadLetterSink, *, group_id: str, settings: ConsumerSettings
    ) -> None:
        self._handler = handler
        self._dead_letters = dead_letters
        self._group_id = group_id
        self._settings = settings

    async def process(self, record: ConsumedRecord) -> None:
        with structlog.contextvars.bound_contextvars(**record_log_context(record)):
            attempts = 0
            while True:
                attempts += 1
                started = time.perf_counter()
                try:
                    await self._handler(record)
                except PoisonMessage as poison:
                    self._observe(record, started)
                    await self._dead_letter(record, poison, attempts)
                    return
                except Exception as error:
                    self._observe(record, started)
                    if attempts > self._settings.in_place_retries:
                        await self._dead_letter(record, error, attempts)
                        return
                    kafka_consumer_records_total.labels(self._group_id, record.topic, "retried").inc()
                    log.warning(
                        "record_handler_failed_retrying",
                        attempt=attempts,
                        error_class=error_class_name(error),
                        error=str(error)[:500],
                    )
                    await asyncio.sleep(self._settings.in_place_backoff_seconds(attempts))
                    continue
                self._observe(record, started)
                kafka_consumer_records_total.labels(self._group_id, record.topic, "ok").inc()
                return

    def _observe(self, record: ConsumedRecord, started: float) -> None:
        kafka_consumer_handle_seconds.labels(self._group_id, record.topic).observe(time.perf_counter() - started)

    async def _dead_letter(self, record: ConsumedRecord, error: BaseException, attempts: int) -> None:
        failures = 0
        while True:
            try:
                await self._dead_letters.publish(record, error, group_id=self._group_id, attempts=attempts)
            except Exception as publish_error:
                failures += 1
                log.error(
                    "dead_letter_publish_failed",
                    failures=failures,
                    error_class=error_class_name(publish_error),
                    error=str(publish_error)[:500],
                )
                await asyncio.sleep(self._settings.dead_letter_backoff_seconds(failures))
                continue
            kafka_consumer_records_total.labels(self._group_id, record.topic, "dead_lettered").inc()
            log.error(
                "record_dead_lettered",
                attempts=attempts,
                error_class=error_class_name(error),
                error=str(error)[:500],
                poison=isinstance(error, PoisonMessage),
            )
            return
