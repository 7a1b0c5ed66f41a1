"""Use case: ask the PSP what became of attempt n (by its idempotency key) and feed the answer into the same
result path as a charge. Never charges."""

from __future__ import annotations

from payment_application.execute_psp_call import attempt_key
from payment_application.ports.clock import Clock
from payment_application.ports.events import EventSink
from payment_application.ports.psp import PspGateway
from payment_domain.events import EventEnvelope, EventType, PspResultUpdated, StatusCheckRequested, psp_result_updated
from payment_domain.psp_result import ResultSource


class CheckPaymentStatus:
    def __init__(self, *, psp: PspGateway, events: EventSink, clock: Clock) -> None:
        self._psp = psp
        self._events = events
        self._clock = clock

    async def __call__(self, request: EventEnvelope[StatusCheckRequested]) -> EventEnvelope[PspResultUpdated]:
        if request.event_type is not EventType.STATUS_CHECK_REQUESTED:
            raise ValueError(f"expected {EventType.STATUS_CHECK_REQUESTED}, got {request.event_type}")
        order, attempt, check_number = request.payload.order, request.payload.attempt, request.payload.check_number
        if check_number < 1:
            raise ValueError("the check number (statusCheckNumber) must be a positive integer")
        answer = await self._psp.charge_status(attempt_key(order.public_id, attempt))
        updated = psp_result_updated(
            order,
            attempt=attempt,
            psp_status=answer.status,
            latency_ms=answer.latency_ms,
            source=ResultSource.STATUS_CHECK,
            check_number=check_number,
            found=answer.found,
            error_code=answer.error_code,
            trace_id=request.trace_id,
            parent_event_id=request.event_id,
            now=self._clock.now(),
        )
        await self._events.emit(updated)
        return updated
