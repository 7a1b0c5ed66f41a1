"""Use case: claim attempt n of a payment order, charge it at the PSP under the attempt's idempotency key, and
publish what the PSP said. The claim is a short transaction; the PSP call happens with no transaction open."""

from __future__ import annotations

import dataclasses

import structlog

from payment_application.ports.clock import Clock
from payment_application.ports.events import EventSink
from payment_application.ports.payment_orders import PaymentOrderClaims
from payment_application.ports.psp import PspChargeRequest, PspGateway
from payment_domain.events import EventEnvelope, EventType, payment_order_from_data, psp_result_updated
from payment_domain.psp_result import ResultSource
from payment_domain.status import PaymentOrderStatus

log = structlog.get_logger(__name__)


def attempt_key(public_payment_order_id: str, attempt: int) -> str:
    """The PSP idempotency key of one attempt: the same attempt never charges twice."""
    return f"{public_payment_order_id}-{attempt}"


class ExecutePspCall:
    def __init__(
        self, *, claims: PaymentOrderClaims, psp: PspGateway, events: EventSink, clock: Clock, lease_seconds: float
    ) -> None:
        self._claims = claims
        self._psp = psp
        self._events = events
        self._clock = clock
        self._lease_seconds = lease_seconds

    async def __call__(self, request: EventEnvelope, *, delivery: str) -> EventEnvelope | None:
        """`delivery` identifies this delivery of the message (topic/partition/offset): the same delivery may
        re-take its own claim after a crash or an in-place retry; a duplicate message may not."""
        if request.event_type is not EventType.PSP_CALL_REQUESTED:
            raise ValueError(f"expected {EventType.PSP_CALL_REQUESTED}, got {request.event_type}")
        requested = payment_order_from_data(request.data)
        attempt = requested.retry_count
        claimed = await self._claims.claim_attempt(
            requested.payment_order_id.value,
            attempt=attempt,
            claim_token=delivery,
            lease_seconds=self._lease_seconds,
        )
        if claimed is None:
            log.info("psp_call_skipped", payment_order_id=requested.public_id, attempt=attempt)
            return None
        order = claimed.order
        result = await self._psp.charge(
            PspChargeRequest(
                idempotency_key=attempt_key(order.public_id, attempt),
                merchant_reference=order.public_id,
                amount_minor=order.amount.value,
                currency=order.amount.currency.value,
                seller_id=order.seller_id,
            )
        )
        if claimed.reclaimed and result.status is PaymentOrderStatus.PSP_UNAVAILABLE_TRANSIENT:
            # This call never reached the PSP, but an earlier one under the same key may have: that is an unknown
            # outcome (a status check), not licence for attempt n+1 under a new key.
            result = dataclasses.replace(
                result, status=PaymentOrderStatus.TIMEOUT_EXCEEDED_1S_TRANSIENT, error_code="UNAVAILABLE_ON_RECLAIM"
            )
        log.info("psp_charged", payment_order_id=order.public_id, attempt=attempt, psp_status=result.status.value)
        updated = psp_result_updated(
            order,
            attempt=attempt,
            psp_status=result.status,
            latency_ms=result.latency_ms,
            source=ResultSource.CHARGE.value,
            error_code=result.error_code,
            error_detail=result.error_detail,
            trace_id=request.trace_id,
            parent_event_id=request.event_id,
            now=self._clock.now(),
        )
        await self._events.emit(updated)
        return updated
