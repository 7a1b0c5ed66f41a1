"""Use case: a created payment order becomes a request for its first PSP call (attempt 0). No database work: the
executor's claim decides whether a request still matters, so duplicates here are harmless."""

from __future__ import annotations

from payment_application.ports.clock import Clock
from payment_application.ports.events import EventSink
from payment_domain.events import EventEnvelope, EventType, PaymentOrderCreated, PspCallRequested, psp_call_requested
from payment_domain.status import PaymentOrderStatus


class EnqueuePspCall:
    def __init__(self, *, events: EventSink, clock: Clock) -> None:
        self._events = events
        self._clock = clock

    async def __call__(self, created: EventEnvelope[PaymentOrderCreated]) -> EventEnvelope[PspCallRequested] | None:
        if created.event_type is not EventType.PAYMENT_ORDER_CREATED:
            raise ValueError(f"expected {EventType.PAYMENT_ORDER_CREATED}, got {created.event_type}")
        order = created.payload.order
        if order.status is not PaymentOrderStatus.INITIATED_PENDING:
            return None
        request = psp_call_requested(
            order, attempt=0, trace_id=created.trace_id, parent_event_id=created.event_id, now=self._clock.now()
        )
        await self._events.emit(request)
        return request
