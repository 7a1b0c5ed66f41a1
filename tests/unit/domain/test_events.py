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
    deterministic_event_id,
    iso_utc,
    payment_order_created,
    payment_order_data,
)
from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentOrder
from payment_domain.status import PaymentOrderStatus
from payment_domain.topics import DLQ_SUFFIX, Topic, dlq_of

CREATED_AT = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
PUBLISHED_AT = datetime(2025, 3, 1, 12, 30, 16, tzinfo=UTC)
WIRE_FIELDS = {"eventId", "eventType", "aggregateId", "data", "timestamp", "traceId", "parentEventId"}


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


def an_envelope(*, parent_event_id: str | None = None) -> EventEnvelope:
    return EventEnvelope.create(
        event_type=EventType.PSP_CALL_REQUESTED,
        aggregate_id="17",
        data={"retryCount": 2},
        timestamp=PUBLISHED_AT,
        trace_id="trace-1",
        id_parts=("paymentorder-17", 2),
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
    child = EventEnvelope.create(
        event_type=EventType.PSP_RESULT_UPDATED,
        aggregate_id="17",
        data={},
        timestamp=PUBLISHED_AT,
        trace_id="trace-1",
        id_parts=("paymentorder-17", 2),
        parent_event_id=parent.event_id,
    )
    assert child.parent_event_id == parent.event_id
    assert child.event_id != parent.event_id


def test_the_wire_form_has_exactly_the_original_field_names() -> None:
    assert set(an_envelope().to_wire()) == WIRE_FIELDS


def test_the_wire_form_carries_the_envelope_values() -> None:
    envelope = an_envelope()
    assert envelope.to_wire() == {
        "eventId": envelope.event_id,
        "eventType": "payment_order_psp_call_requested",
        "aggregateId": "17",
        "data": {"retryCount": 2},
        "timestamp": "2025-03-01T12:30:16.000Z",
        "traceId": "trace-1",
        "parentEventId": envelope.event_id,
    }


def test_the_wire_data_is_a_copy_not_the_envelope_own_mapping() -> None:
    envelope = an_envelope()
    wire = envelope.to_wire()
    data = wire["data"]
    assert isinstance(data, dict)
    data["retryCount"] = 99
    assert envelope.data["retryCount"] == 2


def test_an_envelope_is_published_on_its_event_type_topic() -> None:
    assert an_envelope().topic is Topic.PSP_CALL_REQUESTED


# --- PaymentOrderCreated --------------------------------------------------------------------------


def test_payment_order_created_carries_the_original_payload_fields_and_values() -> None:
    envelope = payment_order_created(an_order(), trace_id="trace-7", now=PUBLISHED_AT)
    assert envelope.data == {
        "paymentOrderId": "17",
        "publicPaymentOrderId": "paymentorder-17",
        "paymentId": "4",
        "publicPaymentId": "payment-4",
        "sellerId": "seller-9",
        "amountValue": 2599,
        "currency": "GBP",
        "status": "INITIATED_PENDING",
        "createdAt": "2025-03-01T12:30:15.123Z",
        "updatedAt": "2025-03-01T12:30:15.123Z",
        "retryCount": 0,
        "retryReason": None,
        "lastErrorMessage": None,
    }
    assert type(envelope.data["amountValue"]) is int


def test_payment_order_created_is_keyed_by_the_numeric_payment_order_id() -> None:
    envelope = payment_order_created(an_order(order_id=123456789), trace_id="t", now=PUBLISHED_AT)
    assert envelope.aggregate_id == "123456789"
    assert envelope.aggregate_id == envelope.data["paymentOrderId"]


def test_payment_order_created_is_a_root_event_on_the_created_topic() -> None:
    envelope = payment_order_created(an_order(), trace_id="trace-7", now=PUBLISHED_AT)
    assert envelope.event_type is EventType.PAYMENT_ORDER_CREATED
    assert envelope.topic is Topic.PAYMENT_ORDER_CREATED
    assert envelope.parent_event_id == envelope.event_id
    assert (envelope.trace_id, envelope.timestamp) == ("trace-7", PUBLISHED_AT)
    assert envelope.to_wire()["eventType"] == "payment_order_created"


def test_payment_order_created_for_the_same_order_always_has_the_same_event_id() -> None:
    first = payment_order_created(an_order(), trace_id="trace-1", now=PUBLISHED_AT)
    again = payment_order_created(an_order(), trace_id="trace-2", now=PUBLISHED_AT + timedelta(minutes=5))
    assert first.event_id == again.event_id
    other_order = payment_order_created(an_order(order_id=18), trace_id="t", now=PUBLISHED_AT)
    assert first.event_id != other_order.event_id


def test_payment_order_created_always_says_retry_count_zero() -> None:
    retried = replace(an_order(), retry_count=3)
    assert payment_order_created(retried, trace_id="t", now=PUBLISHED_AT).data["retryCount"] == 0


def test_payment_order_data_lets_a_caller_override_status_and_add_fields() -> None:
    data = payment_order_data(
        an_order(), status=PaymentOrderStatus.SUCCESSFUL_FINAL, retry_count=2, extra={"pspStatus": "X"}
    )
    assert (data["status"], data["retryCount"], data["pspStatus"]) == ("SUCCESSFUL_FINAL", 2, "X")


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


def test_an_envelope_with_a_naive_timestamp_cannot_go_on_the_wire() -> None:
    envelope = EventEnvelope.create(
        event_type=EventType.PAYMENT_ORDER_CREATED,
        aggregate_id="1",
        data={},
        timestamp=datetime(2025, 3, 1, 12, 0),
        trace_id="t",
        id_parts=("paymentorder-1",),
    )
    with pytest.raises(ValueError):
        envelope.to_wire()


# --- topics ---------------------------------------------------------------------------------------


def test_every_event_type_maps_to_the_original_topic() -> None:
    assert {event_type.value: event_type.topic.value for event_type in EventType} == {
        "payment_order_created": "payment_order_created_topic",
        "payment_order_psp_call_requested": "payment_order_psp_call_requested_topic",
        "payment_order_psp_result_updated": "payment_order_psp_result_updated_topic",
        "payment_order_success": "payment_order_succeeded_topic",
        "payment_order_failed": "payment_order_failed_topic",
        "payment_order_status_check_requested": "payment_status_check_scheduler_topic",
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
