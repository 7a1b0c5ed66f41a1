"""Domain events: a typed payload per event kind, carried by the EventEnvelope.

Payloads hold domain types only; their wire form (the original's camelCase field names) is the serialization
adapter's business. Event ids are deterministic (UUIDv5 of the event type and what makes the event unique), so a
re-published or re-derived event carries the same id and every consumer can recognise the duplicate.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import ClassVar, Generic, TypeVar, cast

from payment_domain.ids import RefundId
from payment_domain.money import Amount
from payment_domain.payment import PaymentOrder
from payment_domain.psp_result import PspOutcome, ResultSource
from payment_domain.status import PaymentOrderStatus
from payment_domain.topics import Topic

EVENT_ID_NAMESPACE = uuid.UUID("6f1c2a8e-4b57-5d0e-9a3c-2f0b7d9e8c41")


class EventType(StrEnum):
    PAYMENT_ORDER_CREATED = "payment_order_created"
    PSP_CALL_REQUESTED = "payment_order_psp_call_requested"
    PSP_RESULT_UPDATED = "payment_order_psp_result_updated"
    PAYMENT_ORDER_SUCCEEDED = "payment_order_success"
    PAYMENT_ORDER_FAILED = "payment_order_failed"
    STATUS_CHECK_REQUESTED = "payment_order_status_check_requested"
    REFUND_REQUESTED = "payment_order_refund_requested"

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
    EventType.REFUND_REQUESTED: Topic.REFUND_REQUESTED,
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


# --- payloads ---------------------------------------------------------------------------------------------------
# Every payload carries the payment order as the event saw it (the original's PaymentOrderEvent fields). Where an
# event is about one attempt, the order's retry_count is that attempt: the wire has a single field for both.


@dataclass(frozen=True, slots=True)
class PaymentOrderCreated:
    """An order was accepted and waits for its first charge (retry_count 0)."""

    event_type: ClassVar[EventType] = EventType.PAYMENT_ORDER_CREATED
    order: PaymentOrder

    @property
    def id_parts(self) -> tuple[object, ...]:
        return (self.order.public_id,)


@dataclass(frozen=True, slots=True)
class PspCallRequested:
    """Charge attempt `attempt` (0 = the first charge)."""

    event_type: ClassVar[EventType] = EventType.PSP_CALL_REQUESTED
    order: PaymentOrder

    @property
    def attempt(self) -> int:
        return self.order.retry_count

    @property
    def id_parts(self) -> tuple[object, ...]:
        return (self.order.public_id, self.attempt)


@dataclass(frozen=True, slots=True)
class PspResultUpdated:
    """What the PSP said about an attempt, and where the answer came from (a charge or the n-th status check).

    `psp_status` None means no usable answer; `found` False means a status check found no charge under the key;
    `call_number` counts the charge calls made under the attempt's key; `unconfirmed` marks a "not processed"
    answer that proves nothing (a 503: see payment_domain.psp_answer)."""

    event_type: ClassVar[EventType] = EventType.PSP_RESULT_UPDATED
    order: PaymentOrder
    psp_status: PaymentOrderStatus | None
    source: ResultSource
    latency_ms: int
    check_number: int = 0
    call_number: int = 1
    found: bool = True
    error_code: str | None = None
    error_detail: str | None = None
    unconfirmed: bool = False

    @property
    def attempt(self) -> int:
        return self.order.retry_count

    @property
    def outcome(self) -> PspOutcome:
        return PspOutcome(
            attempt=self.attempt,
            source=self.source,
            status=self.psp_status,
            found=self.found,
            check_number=self.check_number,
            unconfirmed=self.unconfirmed,
        )

    @property
    def id_parts(self) -> tuple[object, ...]:
        # Two calls under one key are two answers (the first may say "not processed", the second "charged"): the
        # call number is part of the id, so neither is dropped as the other's duplicate; the same call's answer
        # re-sent is.
        return (self.order.public_id, self.attempt, self.source.value, self.check_number, self.call_number)


@dataclass(frozen=True, slots=True)
class StatusCheckRequested:
    """Ask the PSP what became of attempt `attempt`: the `check_number`-th check of the schedule (1-based)."""

    event_type: ClassVar[EventType] = EventType.STATUS_CHECK_REQUESTED
    order: PaymentOrder
    check_number: int

    @property
    def attempt(self) -> int:
        return self.order.retry_count

    @property
    def id_parts(self) -> tuple[object, ...]:
        return (self.order.public_id, self.attempt, self.check_number)


@dataclass(frozen=True, slots=True)
class PaymentOrderSettled:
    """A terminal order: PaymentOrderSucceeded when it succeeded, PaymentOrderFailed otherwise."""

    order: PaymentOrder

    @property
    def event_type(self) -> EventType:
        if self.order.status is PaymentOrderStatus.SUCCESSFUL_FINAL:
            return EventType.PAYMENT_ORDER_SUCCEEDED
        return EventType.PAYMENT_ORDER_FAILED

    @property
    def id_parts(self) -> tuple[object, ...]:
        return (self.order.public_id,)


@dataclass(frozen=True, slots=True)
class RefundRequested:
    """A refund of `amount` from the (SUCCESSFUL_FINAL) order was accepted; the PSP is to pay it back under the
    refund's own key."""

    event_type: ClassVar[EventType] = EventType.REFUND_REQUESTED
    order: PaymentOrder
    refund_id: RefundId
    amount: Amount

    @property
    def id_parts(self) -> tuple[object, ...]:
        return (self.order.public_id, self.refund_id.public)


EventPayload = (
    PaymentOrderCreated
    | PspCallRequested
    | PspResultUpdated
    | StatusCheckRequested
    | PaymentOrderSettled
    | RefundRequested
)

P = TypeVar("P", bound=EventPayload)
P_co = TypeVar("P_co", bound=EventPayload, covariant=True)


@dataclass(frozen=True, slots=True)
class EventEnvelope(Generic[P_co]):
    """The original's envelope (eventId, eventType, aggregateId, data, timestamp, traceId, parentEventId) around a
    typed payload; the event type is the payload's, so the two cannot disagree.

    aggregateId is always the numeric paymentOrderId as a string, and it is the Kafka key on every topic.
    """

    event_id: str
    aggregate_id: str
    payload: P_co
    timestamp: datetime
    trace_id: str
    parent_event_id: str

    @property
    def event_type(self) -> EventType:
        return self.payload.event_type

    @property
    def topic(self) -> Topic:
        return self.payload.event_type.topic


AnyEnvelope = EventEnvelope[EventPayload]


def envelope_of(payload: P, *, trace_id: str, now: datetime, parent_event_id: str | None = None) -> EventEnvelope[P]:
    """A new event with its deterministic id; a root event (no parent) points at itself, as in the original."""
    event_id = deterministic_event_id(payload.event_type, *payload.id_parts)
    return EventEnvelope(
        event_id=event_id,
        aggregate_id=str(payload.order.payment_order_id.value),
        payload=payload,
        timestamp=now,
        trace_id=trace_id,
        parent_event_id=parent_event_id or event_id,
    )


def narrowed(envelope: AnyEnvelope, kind: type[P]) -> EventEnvelope[P]:
    """The envelope typed by its payload kind; ValueError when it carries another kind."""
    if not isinstance(envelope.payload, kind):
        raise ValueError(f"expected a {kind.__name__} payload, got eventType {envelope.event_type.value}")
    return cast("EventEnvelope[P]", envelope)


def _at_attempt(order: PaymentOrder, attempt: int) -> PaymentOrder:
    return order if order.retry_count == attempt else dataclasses.replace(order, retry_count=attempt)


# --- builders: the events the use cases publish ------------------------------------------------------------------


def payment_order_created(order: PaymentOrder, *, trace_id: str, now: datetime) -> EventEnvelope[PaymentOrderCreated]:
    return envelope_of(PaymentOrderCreated(_at_attempt(order, 0)), trace_id=trace_id, now=now)


def psp_call_requested(
    order: PaymentOrder, *, attempt: int, trace_id: str, parent_event_id: str, now: datetime
) -> EventEnvelope[PspCallRequested]:
    """Attempt `attempt` (0 = first charge); the order's retry_count carries the attempt, as in the original."""
    return envelope_of(
        PspCallRequested(_at_attempt(order, attempt)), trace_id=trace_id, now=now, parent_event_id=parent_event_id
    )


def psp_result_updated(
    order: PaymentOrder,
    *,
    attempt: int,
    psp_status: PaymentOrderStatus | None,
    latency_ms: int,
    source: ResultSource,
    check_number: int = 0,
    call_number: int = 1,
    found: bool = True,
    error_code: str | None = None,
    error_detail: str | None = None,
    unconfirmed: bool = False,
    trace_id: str,
    parent_event_id: str,
    now: datetime,
) -> EventEnvelope[PspResultUpdated]:
    """The original's PspResultUpdated, plus where the answer came from (a charge or the n-th status check)."""
    payload = PspResultUpdated(
        order=_at_attempt(order, attempt),
        psp_status=psp_status,
        source=source,
        latency_ms=latency_ms,
        check_number=check_number,
        call_number=call_number,
        found=found,
        error_code=error_code,
        error_detail=error_detail,
        unconfirmed=unconfirmed,
    )
    return envelope_of(payload, trace_id=trace_id, now=now, parent_event_id=parent_event_id)


def status_check_requested(
    order: PaymentOrder, *, attempt: int, check_number: int, trace_id: str, parent_event_id: str, now: datetime
) -> EventEnvelope[StatusCheckRequested]:
    payload = StatusCheckRequested(_at_attempt(order, attempt), check_number)
    return envelope_of(payload, trace_id=trace_id, now=now, parent_event_id=parent_event_id)


def payment_order_settled(
    order: PaymentOrder, *, trace_id: str, parent_event_id: str, now: datetime
) -> EventEnvelope[PaymentOrderSettled]:
    """PaymentOrderSucceeded or PaymentOrderFailed for a terminal order; one per order, ever (deterministic id)."""
    return envelope_of(PaymentOrderSettled(order), trace_id=trace_id, now=now, parent_event_id=parent_event_id)


def refund_requested(
    order: PaymentOrder, *, refund_id: RefundId, amount: Amount, trace_id: str, now: datetime
) -> EventEnvelope[RefundRequested]:
    """The root event of a refund: written with the refund in one transaction, keyed by the paymentOrderId."""
    return envelope_of(RefundRequested(order, refund_id, amount), trace_id=trace_id, now=now)
