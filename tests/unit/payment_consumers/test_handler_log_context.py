"""Every log line of a consumed event carries its ids (to follow one payment), bound once per record: from the
record's headers when our producer wrote them, from the envelope when it did not; the result applier's lines, logged
in a batch apart from the record's context, carry their answer's ids themselves."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from payment_domain.events import EventEnvelope, PaymentOrderCreated, payment_order_created
from payment_domain.status import PaymentOrderStatus
from payment_infrastructure.kafka.consumer_settings import ConsumerSettings
from payment_infrastructure.kafka.producer import kafka_headers, outbound_message
from payment_infrastructure.kafka.record_processor import RecordProcessor
from payment_infrastructure.kafka.records import ConsumedRecord
from services.payment_consumers.handlers import enqueuer_handler, result_batcher, result_handler
from tests.fakes_consumers import ORDERS_CREATED_AT, ConsumerTables, an_order
from tests.unit.application.test_consumer_use_cases import charge_result
from tests.unit.payment_consumers.test_result_handler import result_applier

S = PaymentOrderStatus

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


@pytest.fixture
def log_lines() -> Iterator[list[dict[str, Any]]]:
    """Every line logged, with the log context merged in as the production configuration merges it."""
    lines: list[dict[str, Any]] = []

    def keep(_logger: object, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        lines.append(dict(event_dict))
        raise structlog.DropEvent

    previous = structlog.get_config()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, keep], cache_logger_on_first_use=False)
    yield lines
    structlog.configure(**previous)


async def test_every_line_of_an_applied_answer_carries_its_ids_though_answers_are_applied_in_one_batch(
    log_lines: list[dict[str, Any]],
) -> None:
    tables = ConsumerTables()
    store, apply = result_applier(tables)
    processor = RecordProcessor(
        result_handler(result_batcher(apply, concurrency=1, max_batch=32).submit),
        NoDeadLetters(),
        group_id="result-applier",
        settings=ConsumerSettings(),
    )
    seven, eight = tables.add_order(an_order(7)), tables.add_order(an_order(8, payment_id=5), psp_calls=1)
    answers = {
        "7": dataclasses.replace(
            charge_result(seven, S.SUCCESSFUL_FINAL), trace_id="trace-7", parent_event_id="call-7"
        ),
        "8": dataclasses.replace(
            charge_result(eight, S.PSP_UNAVAILABLE_TRANSIENT), trace_id="trace-8", parent_event_id="call-8"
        ),
    }
    records = []
    for offset, answer in enumerate(answers.values()):
        message = outbound_message(answer)
        records.append(
            ConsumedRecord("results", 0, offset, message.key, message.value, dict(kafka_headers(message.headers)))
        )

    await asyncio.gather(*(processor.process(r) for r in records))

    assert store.commits == 1  # both answers applied in one batch, which runs apart from either record's context
    by_order: dict[str, list[dict[str, Any]]] = {}
    for line in log_lines:
        by_order.setdefault(str(line.get("payment_order_id", "?")), []).append(line)
    assert set(by_order) == {seven.public_id, eight.public_id}, log_lines
    assert {line["event"] for line in by_order[eight.public_id]} == {
        "psp_result_applied",
        "psp_retry_scheduled",
        "event_handled",
    }
    for order, answer in answers.items():
        lines = by_order[tables.order(int(order)).public_id]
        assert {line["event"] for line in lines} >= {"psp_result_applied", "event_handled"}
        for line in lines:
            ids = {key: line.get(key) for key in ("event_id", "parent_event_id", "trace_id")}
            assert ids == {
                "event_id": answer.event_id,
                "parent_event_id": answer.parent_event_id,
                "trace_id": answer.trace_id,
            }, line
