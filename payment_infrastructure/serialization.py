"""The one wire mapping of events: the envelope and every payload as orjson bytes with the original's field names.

Everything that writes or reads an event (the outbox, the Kafka producer and consumers, the Redis retry queue) goes
through here; the domain's payloads never see a camelCase name. Decoding validates what the money path relies on
and raises EnvelopeDecodeError (a poison message) for anything else: a use case receives a typed payload or nothing.
Fields nothing decides on (the public ids, the error code, the latency) are read leniently, a wrong type as absent.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import orjson

from payment_domain.errors import DomainError
from payment_domain.events import (
    AnyEnvelope,
    EventEnvelope,
    EventPayload,
    EventType,
    P,
    PaymentOrderCreated,
    PaymentOrderSettled,
    PspCallRequested,
    PspResultUpdated,
    RefundRequested,
    StatusCheckRequested,
    iso_utc,
    narrowed,
)
from payment_domain.ids import PaymentId, PaymentOrderId, RefundId
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentOrder
from payment_domain.psp_result import ResultSource
from payment_domain.status import PaymentOrderStatus

Wire = dict[str, Any]

# What the columns that store these fields hold (payment_orders, payment_order_status_checks): a value outside
# them is refused by the database, so by every statement it shares, and is poison from the start.
INT4_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1


class EnvelopeDecodeError(ValueError):
    """The bytes are not an envelope we understand (a poison message)."""


# --- encoding -----------------------------------------------------------------------------------------------------


def envelope_to_bytes(envelope: AnyEnvelope) -> bytes:
    return orjson.dumps(envelope_to_wire(envelope))


def envelope_to_wire(envelope: AnyEnvelope) -> Wire:
    return {
        "eventId": envelope.event_id,
        "eventType": envelope.event_type.value,
        "aggregateId": envelope.aggregate_id,
        "data": payload_to_wire(envelope.payload),
        "timestamp": iso_utc(envelope.timestamp),
        "traceId": envelope.trace_id,
        "parentEventId": envelope.parent_event_id,
    }


def payload_to_wire(payload: EventPayload) -> Wire:
    return _ENCODERS[type(payload)](payload)


def _order_to_wire(order: PaymentOrder) -> Wire:
    """The fields every payment order event shares (`PaymentOrderEvent` in the original)."""
    return {
        "paymentOrderId": str(order.payment_order_id.value),
        "publicPaymentOrderId": order.payment_order_id.public,
        "paymentId": str(order.payment_id.value),
        "publicPaymentId": order.payment_id.public,
        "sellerId": order.seller_id,
        "amountValue": order.amount.value,
        "currency": order.amount.currency.value,
        "status": order.status.value,
        "createdAt": iso_utc(order.created_at),
        "updatedAt": iso_utc(order.updated_at),
        "retryCount": order.retry_count,
        "retryReason": order.retry_reason,
        "lastErrorMessage": order.last_error_message,
    }


def _result_to_wire(payload: PspResultUpdated) -> Wire:
    data = _order_to_wire(payload.order)
    data["pspStatus"] = payload.psp_status.value if payload.psp_status is not None else None
    data["pspErrorCode"] = payload.error_code
    data["pspErrorDetail"] = payload.error_detail
    data["latencyMs"] = payload.latency_ms
    data["resultSource"] = payload.source.value
    data["statusCheckNumber"] = payload.check_number
    data["pspCallNumber"] = payload.call_number
    data["foundAtPsp"] = payload.found
    data["pspAnswerUnconfirmed"] = payload.unconfirmed
    return data


def _status_check_to_wire(payload: StatusCheckRequested) -> Wire:
    data = _order_to_wire(payload.order)
    data["statusCheckNumber"] = payload.check_number
    return data


def _only_order(payload: PaymentOrderCreated | PspCallRequested | PaymentOrderSettled) -> Wire:
    return _order_to_wire(payload.order)


def _refund_to_wire(payload: RefundRequested) -> Wire:
    data = _order_to_wire(payload.order)
    data["refundId"] = payload.refund_id.public
    data["refundAmountValue"] = payload.amount.value
    data["refundCurrency"] = payload.amount.currency.value
    return data


_ENCODERS: Mapping[type[Any], Callable[[Any], Wire]] = {
    PaymentOrderCreated: _only_order,
    PspCallRequested: _only_order,
    PspResultUpdated: _result_to_wire,
    StatusCheckRequested: _status_check_to_wire,
    PaymentOrderSettled: _only_order,
    RefundRequested: _refund_to_wire,
}


# --- decoding -----------------------------------------------------------------------------------------------------


def envelope_from_bytes(raw: bytes) -> AnyEnvelope:
    try:
        doc: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise EnvelopeDecodeError(f"not JSON: {error}") from error
    if not isinstance(doc, dict):
        raise EnvelopeDecodeError("envelope must be a JSON object")
    try:
        data = doc["data"]
        if not isinstance(data, dict):
            raise EnvelopeDecodeError("envelope.data must be an object")
        event_type = EventType(doc["eventType"])
        timestamp = datetime.fromisoformat(str(doc["timestamp"]).replace("Z", "+00:00"))
        if timestamp.tzinfo is None:
            raise EnvelopeDecodeError("envelope.timestamp must carry a zone")
        payload = _DECODERS[event_type](data)
        if payload.event_type is not event_type:
            raise EnvelopeDecodeError(f"eventType {event_type.value} does not match data.status")
        event_id = _uuid_text(doc, "eventId")
        return EventEnvelope(
            event_id=event_id,
            aggregate_id=_text(doc, "aggregateId", "envelope"),
            payload=payload,
            timestamp=timestamp,
            trace_id=_text(doc, "traceId", "envelope"),
            parent_event_id=str(doc.get("parentEventId") or event_id),
        )
    except EnvelopeDecodeError:
        raise
    except (KeyError, ValueError, TypeError, DomainError) as error:
        raise EnvelopeDecodeError(f"invalid envelope: {error!r}") from error


def typed_envelope_from_bytes(raw: bytes, kind: type[P]) -> EventEnvelope[P]:
    """Decode an envelope that must carry a `kind` payload (a consumer's one event type)."""
    envelope = envelope_from_bytes(raw)
    try:
        return narrowed(envelope, kind)
    except ValueError as error:
        raise EnvelopeDecodeError(str(error)) from error


def _text(doc: Mapping[str, Any], name: str, where: str = "data") -> str:
    value = doc[name]
    if not isinstance(value, str) or not value:
        raise EnvelopeDecodeError(f"{where}.{name} must be a non-empty string")
    return value


def _integer(data: Mapping[str, Any], name: str, low: int, high: int) -> int:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise EnvelopeDecodeError(f"data.{name} must be an integer")
    if not low <= value <= high:
        raise EnvelopeDecodeError(f"data.{name} must be in {low}..{high}, got {value}")
    return value


def _uuid_text(doc: Mapping[str, Any], name: str) -> str:
    value = _text(doc, name, "envelope")
    try:
        uuid.UUID(value)
    except ValueError:
        raise EnvelopeDecodeError(f"envelope.{name} must be a UUID") from None
    return value


def _moment(data: Mapping[str, Any], name: str) -> datetime:
    parsed = datetime.fromisoformat(_text(data, name).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise EnvelopeDecodeError(f"data.{name} must carry a zone")
    return parsed


def _optional_text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) else None


def _lenient_int(data: Mapping[str, Any], name: str, default: int) -> int:
    value = data.get(name, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _order_from_wire(data: Mapping[str, Any]) -> PaymentOrder:
    return PaymentOrder(
        payment_order_id=PaymentOrderId(int(_text(data, "paymentOrderId"))),
        payment_id=PaymentId(int(_text(data, "paymentId"))),
        seller_id=_text(data, "sellerId"),
        amount=Amount(_integer(data, "amountValue", 1, BIGINT_MAX), Currency.parse(_text(data, "currency"))),
        status=PaymentOrderStatus(_text(data, "status")),
        created_at=_moment(data, "createdAt"),
        updated_at=_moment(data, "updatedAt"),
        retry_count=_integer(data, "retryCount", 0, INT4_MAX),
        retry_reason=_optional_text(data, "retryReason"),
        last_error_message=_optional_text(data, "lastErrorMessage"),
    )


def _result_from_wire(data: Mapping[str, Any]) -> PspResultUpdated:
    order = _order_from_wire(data)
    check_number = _integer(data, "statusCheckNumber", 0, INT4_MAX) if "statusCheckNumber" in data else 0
    raw_status = data.get("pspStatus")
    return PspResultUpdated(
        order=order,
        psp_status=PaymentOrderStatus(raw_status) if isinstance(raw_status, str) else None,
        source=ResultSource(str(data.get("resultSource", ResultSource.CHARGE.value))),
        latency_ms=_lenient_int(data, "latencyMs", 0),
        check_number=check_number,
        call_number=_lenient_int(data, "pspCallNumber", 1),
        found=data.get("foundAtPsp", True) is not False,
        error_code=_optional_text(data, "pspErrorCode"),
        error_detail=_optional_text(data, "pspErrorDetail"),
        # Absent (written before the flag existed) reads as it was meant then; present, anything but false is
        # unconfirmed: a garbled flag must not license a new key.
        unconfirmed=data.get("pspAnswerUnconfirmed", False) is not False,
    )


def _status_check_from_wire(data: Mapping[str, Any]) -> StatusCheckRequested:
    return StatusCheckRequested(
        order=_order_from_wire(data), check_number=_integer(data, "statusCheckNumber", 0, INT4_MAX)
    )


def _refund_from_wire(data: Mapping[str, Any]) -> RefundRequested:
    try:
        refund_id = RefundId.from_public(_text(data, "refundId"))
    except ValueError as error:
        raise EnvelopeDecodeError(f"data.refundId: {error}") from None
    amount = Amount(_integer(data, "refundAmountValue", 1, BIGINT_MAX), Currency.parse(_text(data, "refundCurrency")))
    return RefundRequested(order=_order_from_wire(data), refund_id=refund_id, amount=amount)


_DECODERS: Mapping[EventType, Callable[[Mapping[str, Any]], EventPayload]] = {
    EventType.PAYMENT_ORDER_CREATED: lambda data: PaymentOrderCreated(_order_from_wire(data)),
    EventType.PSP_CALL_REQUESTED: lambda data: PspCallRequested(_order_from_wire(data)),
    EventType.PSP_RESULT_UPDATED: _result_from_wire,
    EventType.STATUS_CHECK_REQUESTED: _status_check_from_wire,
    EventType.PAYMENT_ORDER_SUCCEEDED: lambda data: PaymentOrderSettled(_order_from_wire(data)),
    EventType.PAYMENT_ORDER_FAILED: lambda data: PaymentOrderSettled(_order_from_wire(data)),
    EventType.REFUND_REQUESTED: _refund_from_wire,
}
