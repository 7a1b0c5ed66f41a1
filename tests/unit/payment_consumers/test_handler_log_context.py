"""Every log line of a consumed event carries its ids (to follow one payment), bound once per record: from the
record's headers when our producer wrote them, from the envelope when it did not."""

from __future__ import annotations

from typing import Any

import structlog

from payment_domain.events import EventEnvelope, PaymentOrderCreated, payment_order_created
from payment_infrastructure.kafka.consumer_settings import ConsumerSettings
from payment_infrastructure.kafka.producer import kafka_headers, outbound_message
from payment_infrastructure.kafka.record_processor import RecordProcessor
from payment_infrastructure.kafka.records import ConsumedRecord
from services.payment_consumers.handlers import enqueuer_handler
from tests.fakes_consumers import ORDERS_CREATED_AT, an_order

CREATED = payment_order_created(an_order(41), trace_id="trace-41", now=ORDERS_CREATED_AT)
EXPECTED = {
    "event_id": CREATED.event_id,
    "trace_id": "trace-41",
    "parent_event_id": CREATED.parent_event_id,
    "aggregate_id": "41",
    "event_type": CREATED.event_type.value,
}


class Recording:
    """Stands in for the use case: notes the log context it runs in."""

    def __init__(self) -> None:
        self.context: dict[str, Any] = {}

    async def __call__(self, created: EventEnvelope[PaymentOrderCreated]) -> None:
        self.context = structlog.contextvars.get_contextvars()


class NoDeadLetters:
    async def publish(self, record: ConsumedRecord, error: BaseException, *, group_id: str, attempts: int) -> None:
        raise AssertionError(f"dead-lettered: {error!r}")


async def handled_in(record: ConsumedRecord) -> dict[str, Any]:
    use_case = Recording()
    handler = enqueuer_handler(use_case)  # type: ignore[arg-type]  # the stand-in has the use case's call shape
    await RecordProcessor(handler, NoDeadLetters(), group_id="g", settings=ConsumerSettings()).process(record)
    return use_case.context


async def test_the_ids_come_from_the_headers_our_producer_writes() -> None:
    message = outbound_message(CREATED)
    headers = dict(kafka_headers(message.headers))
    context = await handled_in(ConsumedRecord("created", 0, 5, message.key, message.value, headers, 0))
    assert {key: context.get(key) for key in EXPECTED} == EXPECTED


async def test_a_record_without_headers_still_logs_the_envelopes_ids() -> None:
    message = outbound_message(CREATED)
    context = await handled_in(ConsumedRecord("created", 0, 5, message.key, message.value, {}, 0))
    assert {key: context.get(key) for key in EXPECTED} == EXPECTED
    assert context["offset"] == 5
