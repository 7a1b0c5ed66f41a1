"""Event ids, the envelope's wire form, the PaymentOrderCreated payload and topic names."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payment_domain.events import (
    EventEnvelope,
    EventType,
    PaymentOrderCreated,
    PaymentOrderSettled,
    PspCallRequested,
    PspResultUpdated,
    StatusCheckRequested,
    deterministic_event_id,
    envelope_of,
    iso_utc,
    narrowed,
    payment_order_created,
    payment_order_settled,
    psp_call_requested,
    psp_result_updated,
    status_check_requested,
)
from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentOrder
from payment_domain.psp_result import PspOutcome, ResultSource
from payment_domain.status import PaymentOrderStatus
from payment_domain.topics import DLQ_SUFFIX, Topic, dlq_of

CREATED_AT = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
PUBLISHED_AT = datetime(2025, 3, 1, 12, 30, 16, tzinfo=UTC)


def an_order(order_id: int = 17, payment_id: int = 4) -> PaymentOrder:
    return PaymentOrder(
        payment_order_id=PaymentOrderId(order_id),
        payment_id=PaymentId(payment_id),
        seller_id="seller-9",
        amount=Amount(2599, Currency.GBP),
        status=PaymentOrderStatus.INITIATED_PENDING,
        created_at=CREATED_AT,
        updated_at=CREATED_AT,
    )


def an_envelope(*, parent_event_id: str | None = None) -> EventEnvelope[PspCallRequested]:
    return envelope_of(
        PspCallRequested(replace(an_order(), retry_count=2)),
        trace_id="trace-1",
        now=PUBLISHED_AT,
        parent_event_id=parent_event_id,
    )


# --- deterministic ids ----------------------------------------------------------------------------


def test_the_same_inputs_give_the_same_event_id() -> None:
    first = deterministic_event_id(EventType.PSP_CALL_REQUESTED, "paymentorder-17", 2)
    again = deterministic_event_id(EventType.PSP_CALL_REQUESTED, "paymentorder-17", 2)
    assert first == again


def test_event_ids_are_name_based_uuids() -> None:
    assert uuid.UUID(deterministic_event_id(EventType.PAYMENT_ORDER_CREATED, "paymentorder-1")).version == 5


def test_the_same_parts_in_another_order_give_another_event_id() -> None:
    assert deterministic_event_id(EventType.PSP_CALL_REQUESTED, "a", "b") != deterministic_event_id(
        EventType.PSP_CALL_REQUESTED, "b", "a"
    )


def test_another_event_type_with_the_same_parts_gives_another_event_id() -> None:
    ids = {deterministic_event_id(event_type, "paymentorder-17", 0) for event_type in EventType}
    assert len(ids) == len(EventType)


def test_another_attempt_gives_another_event_id() -> None:
    first_call = deterministic_event_id(EventType.PSP_CALL_REQUESTED, "paymentorder-17", 0)
    first_retry = deterministic_event_id(EventType.PSP_CALL_REQUESTED, "paymentorder-17", 1)
    assert first_call != first_retry


def test_recreating_an_envelope_reproduces_its_event_id() -> None:
    assert an_envelope().event_id == an_envelope().event_id


# --- envelope -------------------------------------------------------------------------------------


def test_a_root_envelope_is_its_own_parent() -> None:
    envelope = an_envelope()
    assert envelope.parent_event_id == envelope.event_id


def test_a_child_envelope_points_at_its_parent() -> None:
    parent = an_envelope()
    child = payment_order_settled(
        replace(an_order(), status=PaymentOrderStatus.SUCCESSFUL_FINAL),
        trace_id="trace-1",
        parent_event_id=parent.event_id,
        now=PUBLISHED_AT,
    )
    assert child.parent_event_id == parent.event_id
    assert child.event_id != parent.event_id


def test_an_empty_parent_makes_a_root_event() -> None:
    envelope = an_envelope(parent_event_id="")
    assert envelope.parent_event_id == envelope.event_id


def test_an_envelope_is_published_on_its_event_type_topic() -> None:
    assert an_envelope().event_type is EventType.PSP_CALL_REQUESTED
    assert an_envelope().topic is Topic.PSP_CALL_REQUESTED


def test_an_envelope_narrows_to_the_payload_kind_it_carries_and_refuses_another() -> None:
    envelope = an_envelope()
    assert narrowed(envelope, PspCallRequested) is envelope
    with pytest.raises(ValueError, match="PspResultUpdated"):
        narrowed(envelope, PspResultUpdated)


# --- payloads and their builders ------------------------------------------------------------------


def test_payment_order_created_carries_the_order_and_is_keyed_by_the_numeric_payment_order_id() -> None:
    envelope = payment_order_created(an_order(order_id=123456789), trace_id="t", now=PUBLISHED_AT)
    assert envelope.payload == PaymentOrderCreated(an_order(order_id=123456789))
    assert envelope.aggregate_id == "123456789"


def test_payment_order_created_is_a_root_event_on_the_created_topic() -> None:
    envelope = payment_order_created(an_order(), trace_id="trace-7", now=PUBLISHED_AT)
    assert envelope.event_type is EventType.PAYMENT_ORDER_CREATED
    assert envelope.topic is Topic.PAYMENT_ORDER_CREATED
    assert envelope.parent_event_id == envelope.event_id
    assert (envelope.trace_id, envelope.timestamp) == ("trace-7", PUBLISHED_AT)


def test_payment_order_created_for_the_same_order_always_has_the_same_event_id() -> None:
    first = payment_order_created(an_order(), trace_id="trace-1", now=PUBLISHED_AT)
    again = payment_order_created(an_order(), trace_id="trace-2", now=PUBLISHED_AT + timedelta(minutes=5))
    assert first.event_id == again.event_id
    assert first.event_id == deterministic_event_id(EventType.PAYMENT_ORDER_CREATED, "paymentorder-17")
    other_order = payment_order_created(an_order(order_id=18), trace_id="t", now=PUBLISHED_AT)
    assert first.event_id != other_order.event_id


def test_payment_order_created_always_says_retry_count_zero() -> None:
    retried = replace(an_order(), retry_count=3)
    assert payment_order_created(retried, trace_id="t", now=PUBLISHED_AT).payload.order.retry_count == 0


def test_a_psp_call_request_carries_its_attempt_as_the_order_retry_count() -> None:
    request = psp_call_requested(an_order(), attempt=3, trace_id="t", parent_event_id="p", now=PUBLISHED_AT)
    assert (request.payload.attempt, request.payload.order.retry_count) == (3, 3)
    assert request.event_id == deterministic_event_id(EventType.PSP_CALL_REQUESTED, "paymentorder-17", 3)


def test_a_psp_result_carries_the_answer_and_its_outcome() -> None:
    result = psp_result_updated(
        an_order(),
        attempt=2,
        psp_status=None,
        latency_ms=9,
        source=ResultSource.STATUS_CHECK,
        check_number=3,
        call_number=2,
        found=False,
        error_code="NOT_FOUND",
        error_detail="no such charge",
        trace_id="t",
        parent_event_id="p",
        now=PUBLISHED_AT,
    )
    answer = result.payload
    assert (answer.latency_ms, answer.call_number, answer.error_code, answer.error_detail) == (
        9,
        2,
        "NOT_FOUND",
        "no such charge",
    )
    assert answer.outcome == PspOutcome(
        attempt=2, source=ResultSource.STATUS_CHECK, status=None, found=False, check_number=3
    )
    assert result.event_id == deterministic_event_id(
        EventType.PSP_RESULT_UPDATED, "paymentorder-17", 2, "status_check", 3, 2
    )


def test_a_status_check_request_carries_its_attempt_and_check_number() -> None:
    check = status_check_requested(
        an_order(), attempt=1, check_number=2, trace_id="t", parent_event_id="", now=PUBLISHED_AT
    )
    assert check.payload == StatusCheckRequested(replace(an_order(), retry_count=1), check_number=2)
    assert check.payload.attempt == 1
    assert check.event_id == deterministic_event_id(EventType.STATUS_CHECK_REQUESTED, "paymentorder-17", 1, 2)


@pytest.mark.parametrize(
    ("status", "event_type"),
    [
        (PaymentOrderStatus.SUCCESSFUL_FINAL, EventType.PAYMENT_ORDER_SUCCEEDED),
        (PaymentOrderStatus.DECLINED_FINAL, EventType.PAYMENT_ORDER_FAILED),
        (PaymentOrderStatus.FAILED_FINAL, EventType.PAYMENT_ORDER_FAILED),
    ],
)
def test_a_settled_order_is_a_succeeded_or_failed_event_by_its_status(
    status: PaymentOrderStatus, event_type: EventType
) -> None:
    order = replace(an_order(), status=status, retry_count=4)
    settled = payment_order_settled(order, trace_id="t", parent_event_id="p", now=PUBLISHED_AT)
    assert settled.payload == PaymentOrderSettled(order)
    assert (settled.event_type, settled.topic) == (event_type, event_type.topic)
    assert settled.event_id == deterministic_event_id(event_type, "paymentorder-17")


# --- timestamps -----------------------------------------------------------------------------------


def test_iso_utc_writes_utc_with_a_z_and_milliseconds() -> None:
    assert iso_utc(CREATED_AT) == "2025-03-01T12:30:15.123Z"


def test_iso_utc_converts_other_zones_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    assert iso_utc(datetime(2025, 3, 1, 13, 0, tzinfo=paris)) == "2025-03-01T12:00:00.000Z"


@given(st.lists(st.one_of(st.text(), st.integers()), max_size=4))
def test_event_ids_are_the_uuid5_of_the_json_list_of_type_and_parts(parts: list[object]) -> None:
    """The shortcut for plain text must name exactly what the JSON encoder would: ids never change with it."""
    name = json.dumps([EventType.PSP_RESULT_UPDATED.value, *(str(p) for p in parts)], separators=(",", ":"))
    expected = str(uuid.uuid5(uuid.UUID("6f1c2a8e-4b57-5d0e-9a3c-2f0b7d9e8c41"), name))
    assert deterministic_event_id(EventType.PSP_RESULT_UPDATED, *parts) == expected


@given(
    st.datetimes(
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7, minutes=-30)), timezone(timedelta(0), "Z0")])
    ),
)
def test_iso_utc_is_the_utc_isoformat_with_a_z(moment: datetime) -> None:
    expected = moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert iso_utc(moment) == expected


def test_iso_utc_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        iso_utc(datetime(2025, 3, 1, 12, 0))


# --- topics ---------------------------------------------------------------------------------------


def test_every_event_type_maps_to_the_original_topic() -> None:
    assert {event_type.value: event_type.topic.value for event_type in EventType} == {
        "payment_order_created": "payment_order_created_topic",
        "payment_order_psp_call_requested": "payment_order_psp_call_requested_topic",
        "payment_order_psp_result_updated": "payment_order_psp_result_updated_topic",
        "payment_order_success": "payment_order_succeeded_topic",
        "payment_order_failed": "payment_order_failed_topic",
        "payment_order_status_check_requested": "payment_status_check_scheduler_topic",
        "payment_order_refund_requested": "payment_order_refund_requested_topic",
    }


def test_no_two_event_types_share_a_topic() -> None:
    assert len({event_type.topic for event_type in EventType}) == len(EventType)


@pytest.mark.parametrize("topic", list(Topic))
def test_a_topic_dead_letters_to_its_dlq_twin(topic: Topic) -> None:
    assert topic.dlq == f"{topic.value}.DLQ"
    assert dlq_of(topic.value) == topic.dlq


def test_a_dlq_dead_letters_to_itself() -> None:
    assert DLQ_SUFFIX == ".DLQ"
    assert dlq_of("payment_order_created_topic.DLQ") == "payment_order_created_topic.DLQ"
    assert dlq_of(dlq_of("any_topic")) == "any_topic.DLQ"
