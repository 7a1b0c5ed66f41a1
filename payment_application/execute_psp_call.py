"""Use case: claim attempt n of a payment order, charge it at the PSP under the attempt's idempotency key, and
publish what the PSP said. The claim is a short transaction; the PSP call happens with no transaction open."""

from __future__ import annotations

import structlog

from payment_application.ports.clock import Clock, MonotonicClock
from payment_application.ports.events import EventSink
from payment_application.ports.payment_orders import PaymentOrderClaims
from payment_application.ports.psp import PspChargeRequest, PspGateway
from payment_domain.events import EventEnvelope, EventType, PspCallRequested, PspResultUpdated, psp_result_updated
from payment_domain.psp_answer import unconfirmed
from payment_domain.psp_result import ResultSource

log = structlog.get_logger(__name__)


def attempt_key(public_payment_order_id: str, attempt: int) -> str:
    """The PSP idempotency key of one attempt: the same attempt never charges twice."""
    return f"{public_payment_order_id}-{attempt}"


class ExecutePspCall:
    def __init__(
        self,
        *,
        claims: PaymentOrderClaims,
        psp: PspGateway,
        events: EventSink,
        clock: Clock,
        monotonic: MonotonicClock,
        lease_seconds: float,
        call_budget_seconds: float = 0.0,
    ) -> None:
        """`call_budget_seconds`: the longest a PSP call can take from its start until nothing of it can reach the
        PSP any more (pool wait, request timeout, the cancelling backstop). A call starts only while that much of
        the lease is left, measured on `monotonic`, so no call under the key can still be on its way to the PSP
        once the lease has run out: then another claim may follow, and a status check may conclude "not
        charged" (the result applier keeps the lease's end as that bound)."""
        if call_budget_seconds < 0 or call_budget_seconds >= lease_seconds:
            raise ValueError("call_budget_seconds must be at least 0 and shorter than the claim lease")
        self._claims = claims
        self._psp = psp
        self._events = events
        self._clock = clock
        self._monotonic = monotonic
        self._lease_seconds = lease_seconds
        self._start_within = lease_seconds - call_budget_seconds

    async def __call__(
        self, request: EventEnvelope[PspCallRequested], *, delivery: str
    ) -> EventEnvelope[PspResultUpdated] | None:
        """`delivery` identifies this delivery of the message (topic/partition/offset): the same delivery may
        re-take its own claim after a crash or an in-place retry; a duplicate message may not."""
        if request.event_type is not EventType.PSP_CALL_REQUESTED:
            raise ValueError(f"expected {EventType.PSP_CALL_REQUESTED}, got {request.event_type}")
        requested, attempt = request.payload.order, request.payload.attempt
        while True:
            asked_at = self._monotonic.monotonic()
            claimed = await self._claims.claim_attempt(
                requested.payment_order_id.value,
                attempt=attempt,
                claim_token=delivery,
                lease_seconds=self._lease_seconds,
            )
            if claimed is None:
                log.info("psp_call_skipped", payment_order_id=requested.public_id, attempt=attempt)
                return None
            if self._in_time(asked_at):
                break
            # Paused between the claim and the call (GC, a stalled event loop): the lease may be gone already.
            log.warning("psp_claim_too_old_to_call", payment_order_id=requested.public_id, attempt=attempt)
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
        log.info(
            "psp_charged",
            payment_order_id=order.public_id,
            attempt=attempt,
            call_number=claimed.call_number,
            psp_status=result.status.value,
        )
        updated = psp_result_updated(
            order,
            attempt=attempt,
            psp_status=result.status,
            latency_ms=result.latency_ms,
            source=ResultSource.CHARGE,
            call_number=claimed.call_number,
            error_code=result.error_code,
            error_detail=result.error_detail,
            unconfirmed=unconfirmed(result.answer),
            trace_id=request.trace_id,
            parent_event_id=request.event_id,
            now=self._clock.now(),
        )
        await self._events.emit(updated)
        return updated

    def _in_time(self, asked_at: float) -> bool:
        """Measured from before the claim was asked for (the lease ran from no earlier than that), on a clock a
        wall-clock step cannot move."""
        return self._monotonic.monotonic() - asked_at < self._start_within
