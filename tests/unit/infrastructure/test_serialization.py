"""The one wire mapping: the envelope and every payload with the original's field names, byte for byte what was
written before payloads were typed, and decoding that yields typed payloads or refuses the message as poison."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from payment_domain.events import (
    AnyEnvelope,
    EventEnvelope,
    PaymentOrderCreated,
    PaymentOrderSettled,
    PspCallRequested,
    PspResultUpdated,
    StatusCheckRequested,
    payment_order_created,
    payment_order_settled,
    psp_call_requested,
    psp_result_updated,
    refund_requested,
    status_check_requested,
)
from payment_domain.ids import PaymentId, PaymentOrderId, RefundId
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentOrder
from payment_domain.psp_result import ResultSource
from payment_domain.status import PaymentOrderStatus
from payment_infrastructure.serialization import (
    EnvelopeDecodeError,
    envelope_from_bytes,
    envelope_to_bytes,
    envelope_to_wire,
    typed_envelope_from_bytes,
)

S = PaymentOrderStatus
CREATED_AT = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
PUBLISHED_AT = datetime(2025, 3, 1, 12, 30, 16, tzinfo=UTC)
WIRE_FIELDS = {"eventId", "eventType", "aggregateId", "data", "timestamp", "traceId", "parentEventId"}
ORDER_WIRE = {
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


def an_order(*, at: datetime = CREATED_AT, **changes: Any) -> PaymentOrder:
    order = PaymentOrder(
        payment_order_id=PaymentOrderId(17),
        payment_id=PaymentId(4),
        seller_id="seller-9",
        amount=Amount(2599, Currency.GBP),
        status=S.INITIATED_PENDING,
        created_at=at,
        updated_at=at,
    )
    return replace(order, **changes)


def a_result(order: PaymentOrder, **changes: Any) -> EventEnvelope[PspResultUpdated]:
    fields: dict[str, Any] = {
        "attempt": 1,
        "psp_status": S.SUCCESSFUL_FINAL,
        "latency_ms": 12,
        "source": ResultSource.CHARGE,
        "trace_id": "t",
        "parent_event_id": "p",
        "now": PUBLISHED_AT,
        **changes,
    }
    return psp_result_updated(order, **fields)


# --- the wire form ------------------------------------------------------------------------------------------------


def test_the_wire_form_has_exactly_the_original_field_names() -> None:
    assert set(envelope_to_wire(payment_order_created(an_order(), trace_id="t", now=PUBLISHED_AT))) == WIRE_FIELDS


def test_the_wire_form_carries_the_envelope_values() -> None:
    envelope = psp_call_requested(an_order(), attempt=2, trace_id="trace-1", parent_event_id="", now=PUBLISHED_AT)
    assert envelope_to_wire(envelope) == {
        "eventId": envelope.event_id,
        "eventType": "payment_order_psp_call_requested",
        "aggregateId": "17",
        "data": {**ORDER_WIRE, "retryCount": 2},
        "timestamp": "2025-03-01T12:30:16.000Z",
        "traceId": "trace-1",
        "parentEventId": envelope.event_id,
    }


def test_payment_order_created_carries_the_original_payload_fields_and_values() -> None:
    wire = envelope_to_wire(payment_order_created(an_order(), trace_id="trace-7", now=PUBLISHED_AT))
    assert wire["data"] == ORDER_WIRE
    assert type(wire["data"]["amountValue"]) is int
    assert wire["eventType"] == "payment_order_created"
    assert wire["aggregateId"] == wire["data"]["paymentOrderId"]


def test_a_psp_result_adds_the_answer_fields() -> None:
    result = a_result(
        an_order(status=S.PSP_UNAVAILABLE_TRANSIENT, retry_reason="X", last_error_message="busy"),
        psp_status=None,
        source=ResultSource.STATUS_CHECK,
        check_number=2,
        call_number=3,
        found=False,
        error_code="E1",
        error_detail="detail",
        unconfirmed=True,
    )
    assert envelope_to_wire(result)["data"] == {
        **ORDER_WIRE,
        "status": "PSP_UNAVAILABLE_TRANSIENT",
        "retryCount": 1,
        "retryReason": "X",
        "lastErrorMessage": "busy",
        "pspStatus": None,
        "pspErrorCode": "E1",
        "pspErrorDetail": "detail",
        "latencyMs": 12,
        "resultSource": "status_check",
        "statusCheckNumber": 2,
        "pspCallNumber": 3,
        "foundAtPsp": False,
        "pspAnswerUnconfirmed": True,
    }


def test_a_status_check_request_adds_its_check_number() -> None:
    check = status_check_requested(
        an_order(), attempt=1, check_number=4, trace_id="t", parent_event_id="", now=PUBLISHED_AT
    )
    assert envelope_to_wire(check)["data"] == {**ORDER_WIRE, "retryCount": 1, "statusCheckNumber": 4}


def test_a_settled_order_carries_the_order_fields_only() -> None:
    order = an_order(status=S.DECLINED_FINAL, retry_count=2, retry_reason="DECLINED_FINAL")
    settled = payment_order_settled(order, trace_id="t", parent_event_id="p", now=PUBLISHED_AT)
    wire = envelope_to_wire(settled)
    assert wire["eventType"] == "payment_order_failed"
    assert wire["data"] == {**ORDER_WIRE, "status": "DECLINED_FINAL", "retryCount": 2, "retryReason": "DECLINED_FINAL"}


def test_the_bytes_are_the_compact_json_of_the_wire_form_in_field_order() -> None:
    """Pinned: the outbox, the retry queue and Kafka hold these exact bytes."""
    envelope = a_result(an_order())
    assert envelope_to_bytes(envelope) == (
        b'{"eventId":"0d6f0655-0fd8-5493-8f9f-54cc62d31466","eventType":"payment_order_psp_result_updated",'
        b'"aggregateId":"17","data":{"paymentOrderId":"17","publicPaymentOrderId":"paymentorder-17",'
        b'"paymentId":"4","publicPaymentId":"payment-4","sellerId":"seller-9","amountValue":2599,"currency":"GBP",'
        b'"status":"INITIATED_PENDING","createdAt":"2025-03-01T12:30:15.123Z",'
        b'"updatedAt":"2025-03-01T12:30:15.123Z","retryCount":1,"retryReason":null,"lastErrorMessage":null,'
        b'"pspStatus":"SUCCESSFUL_FINAL","pspErrorCode":null,"pspErrorDetail":null,"latencyMs":12,'
        b'"resultSource":"charge","statusCheckNumber":0,"pspCallNumber":1,"foundAtPsp":true,'
        b'"pspAnswerUnconfirmed":false},'
        b'"timestamp":"2025-03-01T12:30:16.000Z","traceId":"t","parentEventId":"p"}'
    )


def test_an_envelope_with_a_naive_timestamp_cannot_go_on_the_wire() -> None:
    envelope = payment_order_created(an_order(), trace_id="t", now=datetime(2025, 3, 1, 12, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        envelope_to_bytes(envelope)


# --- decoding -----------------------------------------------------------------------------------------------------

WHOLE_MS = datetime(2025, 3, 1, 12, 30, 15, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    "envelope",
    [
        payment_order_created(an_order(at=WHOLE_MS), trace_id="t", now=PUBLISHED_AT),
        psp_call_requested(an_order(at=WHOLE_MS), attempt=3, trace_id="t", parent_event_id="p", now=PUBLISHED_AT),
        a_result(an_order(at=WHOLE_MS), error_code="E", error_detail="d", call_number=2),
        a_result(an_order(at=WHOLE_MS), psp_status=None, source=ResultSource.STATUS_CHECK, check_number=5, found=False),
        status_check_requested(
            an_order(at=WHOLE_MS), attempt=2, check_number=1, trace_id="t", parent_event_id="p", now=PUBLISHED_AT
        ),
        payment_order_settled(
            an_order(at=WHOLE_MS, status=S.SUCCESSFUL_FINAL), trace_id="t", parent_event_id="p", now=PUBLISHED_AT
        ),
        payment_order_settled(
            an_order(at=WHOLE_MS, status=S.FAILED_FINAL, retry_reason="NO_CHARGE_AT_PSP", last_error_message="x"),
            trace_id="t",
            parent_event_id="p",
            now=PUBLISHED_AT,
        ),
        refund_requested(
            an_order(at=WHOLE_MS, status=S.SUCCESSFUL_FINAL),
            refund_id=RefundId(3),
            amount=Amount(500, Currency.GBP),
            trace_id="t",
            now=PUBLISHED_AT,
        ),
    ],
    ids=[
        "created",
        "call_requested",
        "charge_result",
        "status_check_result",
        "check",
        "succeeded",
        "failed",
        "refund_requested",
    ],
)
def test_every_event_survives_the_wire_unchanged(envelope: AnyEnvelope) -> None:
    raw = envelope_to_bytes(envelope)
    decoded = envelope_from_bytes(raw)
    assert decoded == envelope
    assert envelope_to_bytes(decoded) == raw


def test_a_refund_request_adds_the_refund_fields_and_is_keyed_by_the_payment_order() -> None:
    order = an_order(status=S.SUCCESSFUL_FINAL)
    envelope = refund_requested(
        order, refund_id=RefundId(3), amount=Amount(500, Currency.GBP), trace_id="t", now=PUBLISHED_AT
    )

    wire = envelope_to_wire(envelope)

    assert envelope.topic.value == "payment_order_refund_requested_topic"
    assert wire["aggregateId"] == "17"
    assert wire["eventType"] == "payment_order_refund_requested"
    assert wire["data"]["refundId"] == "refund-3"
    assert (wire["data"]["refundAmountValue"], wire["data"]["refundCurrency"]) == (500, "GBP")
    assert wire["data"]["amountValue"] == 2599


def test_a_typed_decode_refuses_another_payload_kind() -> None:
    raw = envelope_to_bytes(payment_order_created(an_order(), trace_id="t", now=PUBLISHED_AT))
    assert isinstance(typed_envelope_from_bytes(raw, PaymentOrderCreated).payload, PaymentOrderCreated)
    with pytest.raises(EnvelopeDecodeError, match="PspCallRequested"):
        typed_envelope_from_bytes(raw, PspCallRequested)


def wire_of(envelope: AnyEnvelope, **data_changes: Any) -> dict[str, Any]:
    wire = envelope_to_wire(envelope)
    wire["data"] = {k: v for k, v in {**wire["data"], **data_changes}.items() if v is not ...}
    return wire


def test_a_missing_parent_makes_a_root_event() -> None:
    wire = envelope_to_wire(payment_order_created(an_order(), trace_id="t", now=PUBLISHED_AT))
    del wire["parentEventId"]
    assert envelope_from_bytes(orjson.dumps(wire)).parent_event_id == wire["eventId"]


def test_result_fields_left_out_read_as_their_defaults() -> None:
    wire = wire_of(
        a_result(an_order()),
        statusCheckNumber=...,
        resultSource=...,
        foundAtPsp=...,
        pspCallNumber=...,
        latencyMs=...,
        pspAnswerUnconfirmed=...,
    )
    answer = envelope_from_bytes(orjson.dumps(wire)).payload
    assert isinstance(answer, PspResultUpdated)
    assert (
        answer.check_number,
        answer.source,
        answer.found,
        answer.call_number,
        answer.latency_ms,
        answer.unconfirmed,
    ) == (0, ResultSource.CHARGE, True, 1, 0, False)


@pytest.mark.parametrize("flag", [True, 1, "false", None])
def test_an_unconfirmed_flag_that_is_not_plainly_false_reads_as_unconfirmed(flag: object) -> None:
    """A garbled flag must never let a 503 open a new key."""
    wire = wire_of(a_result(an_order(), unconfirmed=False), pspAnswerUnconfirmed=flag)
    answer = envelope_from_bytes(orjson.dumps(wire)).payload
    assert isinstance(answer, PspResultUpdated) and answer.unconfirmed


def test_fields_nothing_decides_on_read_a_wrong_type_as_absent() -> None:
    wire = wire_of(a_result(an_order()), pspErrorCode=5, pspErrorDetail=["x"], latencyMs="12", retryReason=7)
    answer = envelope_from_bytes(orjson.dumps(wire)).payload
    assert isinstance(answer, PspResultUpdated)
    assert (answer.error_code, answer.error_detail, answer.latency_ms, answer.order.retry_reason) == (
        None,
        None,
        0,
        None,
    )


def _result() -> AnyEnvelope:
    return a_result(an_order())


def _check() -> AnyEnvelope:
    return status_check_requested(
        an_order(), attempt=1, check_number=1, trace_id="t", parent_event_id="", now=PUBLISHED_AT
    )


def _call_request() -> AnyEnvelope:
    return psp_call_requested(an_order(), attempt=0, trace_id="t", parent_event_id="", now=PUBLISHED_AT)


def _succeeded() -> AnyEnvelope:
    return payment_order_settled(
        an_order(status=S.SUCCESSFUL_FINAL), trace_id="t", parent_event_id="", now=PUBLISHED_AT
    )


@pytest.mark.parametrize(
    ("envelope", "data_changes"),
    [
        (_result, {"paymentOrderId": ...}),
        (_result, {"paymentOrderId": "0"}),
        (_result, {"paymentOrderId": "x"}),
        (_result, {"sellerId": ""}),
        (_result, {"amountValue": "2599"}),
        (_result, {"amountValue": True}),
        (_result, {"amountValue": -1}),
        (_result, {"currency": "JPY"}),
        (_result, {"status": "NOPE"}),
        (_result, {"createdAt": "2025-03-01T12:30:15"}),
        (_result, {"updatedAt": "yesterday"}),
        (_result, {"retryCount": "1"}),
        (_result, {"retryCount": -1}),
        (_result, {"statusCheckNumber": "1"}),
        (_result, {"statusCheckNumber": False}),
        (_result, {"resultSource": "guess"}),
        (_result, {"resultSource": None}),
        (_result, {"pspStatus": "MAYBE"}),
        (_check, {"statusCheckNumber": ...}),
        (_check, {"statusCheckNumber": 1.5}),
        (_succeeded, {"status": "FAILED_FINAL"}),
        # Values no column can hold: each would fail every statement it is coalesced into.
        (_result, {"paymentOrderId": str(2**63)}),
        (_result, {"paymentId": str(2**63)}),
        (_result, {"amountValue": 2**63}),
        (_result, {"amountValue": 0}),
        (_result, {"retryCount": 2**31}),
        (_result, {"statusCheckNumber": 2**31}),
        (_result, {"statusCheckNumber": -1}),
        (_check, {"statusCheckNumber": 2**31}),
        (_call_request, {"retryCount": 2**31}),
        (_call_request, {"retryCount": -1}),
        (_call_request, {"amountValue": 2**63}),
    ],
)
def test_an_invalid_payload_is_a_decode_error(envelope: Any, data_changes: dict[str, Any]) -> None:
    with pytest.raises(EnvelopeDecodeError):
        envelope_from_bytes(orjson.dumps(wire_of(envelope(), **data_changes)))


@pytest.mark.parametrize(
    "change",
    [
        {"eventId": ""},
        {"eventId": "not-a-uuid"},  # the inbox and the outbox store event ids as UUIDs
        {"eventType": "payment_order_refunded"},
        {"aggregateId": 17},
        {"traceId": None},
        {"timestamp": "2025-03-01T12:30:16"},
        {"data": []},
    ],
)
def test_an_invalid_envelope_is_a_decode_error(change: dict[str, Any]) -> None:
    wire = {**envelope_to_wire(_result()), **change}
    with pytest.raises(EnvelopeDecodeError):
        envelope_from_bytes(orjson.dumps(wire))


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'"text"', b'{"eventType": "payment_order_created"}'])
def test_bytes_that_are_no_envelope_are_a_decode_error(raw: bytes) -> None:
    with pytest.raises(EnvelopeDecodeError):
        envelope_from_bytes(raw)


def test_a_decoded_payload_is_the_typed_kind_of_its_event_type() -> None:
    kinds = {
        type(envelope_from_bytes(envelope_to_bytes(e)).payload)
        for e in (
            payment_order_created(an_order(), trace_id="t", now=PUBLISHED_AT),
            _result(),
            _check(),
            _succeeded(),
        )
    }
    assert kinds == {PaymentOrderCreated, PspResultUpdated, StatusCheckRequested, PaymentOrderSettled}
