"""Domain events and the EventEnvelope, with the original's wire field names.

Event ids are deterministic (UUIDv5 of the event type and what makes the event unique), so a re-published or
re-derived event carries the same id and every consumer can recognise the duplicate.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentOrder
from payment_domain.status import PaymentOrderStatus
from payment_domain.topics import Topic

EVENT_ID_NAMESPACE = uuid.UUID("6f1c2a8e-4b57-5d0e-9a3c-2f0b7d9e8c41")

JsonValue = str | int | float | bool | None


class EventType(StrEnum):
    PAYMENT_ORDER_CREATED = "payment_order_created"
    PSP_CALL_REQUESTED = "payment_order_psp_call_requested"
    PSP_RESULT_UPDATED = "payment_order_psp_result_updated"
    PAYMENT_ORDER_SUCCEEDED = "payment_order_success"
    PAYMENT_ORDER_FAILED = "payment_order_failed"
    STATUS_CHECK_REQUESTED = "payment_order_status_check_requested"

    @property
    def topic(self) -> Topic:
        return _TOPIC_OF[self]


_TOPIC_OF: Mapping[EventType, Topic] = {
    EventType.PAYMENT_ORDER_CREATED: Topic.PAYMENT_ORDER_CREATED,
    EventType.PSP_CALL_REQUESTED: Topic.PSP_CALL_REQUESTED,
    EventType.PSP_RESULT_UPDATED: Topic.PSP_RESULT_UPDATED,
    EventType.PAYMENT_ORDER_SUCCEEDED: Topic.PAYMENT_ORDER_SUCCEEDED,
    EventType.PAYMENT_ORDER_FAILED: Topic.PAYMENT_ORDER_FAILED,
    EventType.STATUS_CHECK_REQUESTED: Topic.STATUS_CHECK_SCHEDULER,
}


# Text that JSON writes as it is (no escapes): such parts are joined directly, byte for byte what json.dumps writes.
_PLAIN_JSON_TEXT = re.compile(r"[ !#-\[\]-~]*")


def deterministic_event_id(event_type: EventType, *parts: object) -> str:
    """The same logical event always gets the same id."""
    # JSON keeps the parts apart: ("a:b",) and ("a", "b") must not collide.
    texts = [event_type.value, *(str(p) for p in parts)]
    if all(_PLAIN_JSON_TEXT.fullmatch(t) for t in texts):
        name = '["' + '","'.join(texts) + '"]'  # the common case, on every create: skips the encoder
    else:
        name = json.dumps(texts, separators=(",", ":"))
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, name))


@functools.lru_cache(maxsize=64)
def iso_utc(moment: datetime) -> str:
    """ISO-8601 in UTC with an explicit `Z` (the original wrote zone-less local date-times). Cached: one create
    writes the same instant into every order's createdAt, updatedAt and envelope timestamp."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def payment_order_data(
    order: PaymentOrder,
    *,
    status: PaymentOrderStatus | None = None,
    retry_count: int | None = None,
    extra: Mapping[str, JsonValue] | None = None,
) -> dict[str, JsonValue]:
    """The payload every payment order event shares (`PaymentOrderEvent` in the original)."""
    data: dict[str, JsonValue] = {
        "paymentOrderId": str(order.payment_order_id.value),
        "publicPaymentOrderId": order.payment_order_id.public,
        "paymentId": str(order.payment_id.value),
        "publicPaymentId": order.payment_id.public,
        "sellerId": order.seller_id,
        "amountValue": order.amount.value,
        "currency": order.amount.currency.value,
        "status": (status or order.status).value,
        "createdAt": iso_utc(order.created_at),
        "updatedAt": iso_utc(order.updated_at),
        "retryCount": order.retry_count if retry_count is None else retry_count,
        "retryReason": order.retry_reason,
        "lastErrorMessage": order.last_error_message,
    }
    if extra:
        data.update(extra)
    return data


@dataclass(frozen=True, slots=True)
class EventEnvelope:
    """The original's envelope: eventId, eventType, aggregateId, data, timestamp, traceId, parentEventId.

    aggregateId is always the numeric paymentOrderId as a string, and it is the Kafka key on every topic.
    """

    event_id: str
    event_type: EventType
    aggregate_id: str
    data: Mapping[str, JsonValue]
    timestamp: datetime
    trace_id: str
    parent_event_id: str

    @classmethod
    def create(
        cls,
        *,
        event_type: EventType,
        aggregate_id: str,
        data: Mapping[str, JsonValue],
        timestamp: datetime,
        trace_id: str,
        id_parts: tuple[object, ...],
        parent_event_id: str | None = None,
    ) -> EventEnvelope:
        """Root events (no parent) point at themselves, as in the original."""
        event_id = deterministic_event_id(event_type, *id_parts)
        return cls(
            event_id=event_id,
            event_type=event_type,
            aggregate_id=aggregate_id,
            data=data,
            timestamp=timestamp,
            trace_id=trace_id,
            parent_event_id=parent_event_id or event_id,
        )

    @property
    def topic(self) -> Topic:
        return self.event_type.topic

    def to_wire(self) -> dict[str, object]:
        return {
            "eventId": self.event_id,
            "eventType": self.event_type.value,
            "aggregateId": self.aggregate_id,
            "data": dict(self.data),
            "timestamp": iso_utc(self.timestamp),
            "traceId": self.trace_id,
            "parentEventId": self.parent_event_id,
        }


def payment_order_created(order: PaymentOrder, *, trace_id: str, now: datetime) -> EventEnvelope:
    return EventEnvelope.create(
        event_type=EventType.PAYMENT_ORDER_CREATED,
        aggregate_id=str(order.payment_order_id.value),
        data=payment_order_data(order, retry_count=0),
        timestamp=now,
        trace_id=trace_id,
        id_parts=(order.payment_order_id.public,),
    )


def payment_order_from_data(data: Mapping[str, JsonValue]) -> PaymentOrder:
    """The inverse of `payment_order_data`; raises ValueError/KeyError/TypeError for a malformed payload."""

    def text(name: str) -> str:
        value = data[name]
        if not isinstance(value, str) or not value:
            raise ValueError(f"data.{name} must be a non-empty string")
        return value

    def integer(name: str) -> int:
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"data.{name} must be an integer")
        return value

    def moment(name: str) -> datetime:
        parsed = datetime.fromisoformat(text(name).replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError(f"data.{name} must carry a zone")
        return parsed

    reason, error = data.get("retryReason"), data.get("lastErrorMessage")
    return PaymentOrder(
        payment_order_id=PaymentOrderId(int(text("paymentOrderId"))),
        payment_id=PaymentId(int(text("paymentId"))),
        seller_id=text("sellerId"),
        amount=Amount(integer("amountValue"), Currency.parse(text("currency"))),
        status=PaymentOrderStatus(text("status")),
        created_at=moment("createdAt"),
        updated_at=moment("updatedAt"),
        retry_count=integer("retryCount"),
        retry_reason=reason if isinstance(reason, str) else None,
        last_error_message=error if isinstance(error, str) else None,
    )


def _order_event(
    event_type: EventType,
    order: PaymentOrder,
    *,
    trace_id: str,
    parent_event_id: str,
    now: datetime,
    id_parts: tuple[object, ...],
    retry_count: int | None = None,
    extra: Mapping[str, JsonValue] | None = None,
) -> EventEnvelope:
    return EventEnvelope.create(
        event_type=event_type,
        aggregate_id=str(order.payment_order_id.value),
        data=payment_order_data(order, retry_count=retry_count, extra=extra),
        timestamp=now,
        trace_id=trace_id,
        parent_event_id=parent_event_id,
        id_parts=id_parts,
    )


def psp_call_requested(
    order: PaymentOrder, *, attempt: int, trace_id: str, parent_event_id: str, now: datetime
) -> EventEnvelope:
    """Attempt `attempt` (0 = first charge); `retryCount` carries the attempt, as in the original."""
    return _order_event(
        EventType.PSP_CALL_REQUESTED,
        order,
        trace_id=trace_id,
        parent_event_id=parent_event_id,
        now=now,
        id_parts=(order.payment_order_id.public, attempt),
        retry_count=attempt,
    )


def psp_result_updated(
    order: PaymentOrder,
    *,
    attempt: int,
    psp_status: PaymentOrderStatus | None,
    latency_ms: int,
    source: str,
    check_number: int = 0,
    call_number: int = 1,
    found: bool = True,
    error_code: str | None = None,
    error_detail: str | None = None,
    trace_id: str,
    parent_event_id: str,
    now: datetime,
) -> EventEnvelope:
    """The original's PspResultUpdated, plus where the answer came from (a charge or the n-th status check).

    Two calls under one key are two answers (the first may say "not processed", the second "charged"): the call
    number is part of the id, so neither is dropped as the other's duplicate; the same call's answer re-sent is."""
    return _order_event(
        EventType.PSP_RESULT_UPDATED,
        order,
        trace_id=trace_id,
        parent_event_id=parent_event_id,
        now=now,
        id_parts=(order.payment_order_id.public, attempt, source, check_number, call_number),
        retry_count=attempt,
        extra={
            "pspStatus": psp_status.value if psp_status is not None else None,
            "pspErrorCode": error_code,
            "pspErrorDetail": error_detail,
            "latencyMs": latency_ms,
            "resultSource": source,
            "statusCheckNumber": check_number,
            "pspCallNumber": call_number,
            "foundAtPsp": found,
        },
    )


def status_check_requested(
    order: PaymentOrder, *, attempt: int, check_number: int, trace_id: str, parent_event_id: str, now: datetime
) -> EventEnvelope:
    return _order_event(
        EventType.STATUS_CHECK_REQUESTED,
        order,
        trace_id=trace_id,
        parent_event_id=parent_event_id,
        now=now,
        id_parts=(order.payment_order_id.public, attempt, check_number),
        retry_count=attempt,
        extra={"statusCheckNumber": check_number},
    )


def payment_order_settled(order: PaymentOrder, *, trace_id: str, parent_event_id: str, now: datetime) -> EventEnvelope:
    """PaymentOrderSucceeded or PaymentOrderFailed for a terminal order; one per order, ever (deterministic id)."""
    event_type = (
        EventType.PAYMENT_ORDER_SUCCEEDED
        if order.status is PaymentOrderStatus.SUCCESSFUL_FINAL
        else EventType.PAYMENT_ORDER_FAILED
    )
    return _order_event(
        event_type,
        order,
        trace_id=trace_id,
        parent_event_id=parent_event_id,
        now=now,
        id_parts=(order.payment_order_id.public,),
    )
