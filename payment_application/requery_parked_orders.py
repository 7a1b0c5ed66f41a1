"""Use case: ask the PSP again, at a long interval, about every order parked in NEEDS_RECONCILIATION.

The answer goes the way of every status check (a `psp_result_updated` event, applied by the result applier under
its guards), so a definitive one settles the order with its event, its payment's roll-up and an audit line; an
answer that is still unknown leaves it parked until the next round. Asking never charges.
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from payment_application.execute_psp_call import attempt_key
from payment_application.ports.clock import Clock
from payment_application.ports.events import EventSink
from payment_application.ports.parked_orders import ParkedOrder, ParkedOrders
from payment_application.ports.psp import PspGateway
from payment_application.relay_report import RelayFailure, RelayReport
from payment_domain.events import psp_result_updated
from payment_domain.psp_result import ResultSource

log = structlog.get_logger(__name__)


class RequeryParkedOrders:
    def __init__(
        self, *, parked: ParkedOrders, psp: PspGateway, events: EventSink, clock: Clock, every: timedelta
    ) -> None:
        if every <= timedelta(0):
            raise ValueError("every must be positive")
        self._parked = parked
        self._psp = psp
        self._events = events
        self._clock = clock
        self._every = every

    async def requery_once(self, *, limit: int) -> RelayReport[ParkedOrder]:
        """A claimed order whose answer could not be sent (the failure, and every order after it in the round) is
        asked again one interval later. `published`: the orders whose answer went out; the claim already stamped
        them asked, so each counts as sent."""
        claimed = tuple(await self._parked.claim_due(every=self._every, limit=limit))
        asked: list[ParkedOrder] = []
        for parked in claimed:
            order = parked.order
            answer = await self._psp.charge_status(attempt_key(order.public_id, order.retry_count))
            event = psp_result_updated(
                order,
                attempt=order.retry_count,
                psp_status=answer.status,
                latency_ms=answer.latency_ms,
                source=ResultSource.STATUS_CHECK,
                check_number=parked.query_number,
                found=answer.found,
                error_code=answer.error_code,
                trace_id=parked.trace_id,
                parent_event_id="",
                now=self._clock.now(),
            )
            try:
                await self._events.emit(event)
            except Exception as error:
                log.warning("parked_order_requery_failed", payment_order_id=order.public_id, error=repr(error))
                return _report(limit, claimed, asked, (RelayFailure(parked, error),))
            asked.append(parked)
            log.info(
                "parked_order_requeried",
                payment_order_id=order.public_id,
                attempt=order.retry_count,
                found=answer.found,
                psp_status=answer.status.value if answer.status else None,
            )
        return _report(limit, claimed, asked, ())


def _report(
    limit: int,
    claimed: tuple[ParkedOrder, ...],
    asked: list[ParkedOrder],
    failures: tuple[RelayFailure[ParkedOrder], ...],
) -> RelayReport[ParkedOrder]:
    return RelayReport(limit=limit, claimed=claimed, published=tuple(asked), failures=failures, sent=len(asked))
