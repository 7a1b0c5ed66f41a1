"""Use case: due status checks become `payment_order_status_check_requested` events. Claim in a short
transaction, publish the batch with none open, then mark published only where our lease still stands. A check
whose publish failed stays claimed until its lease runs out, then it is due again."""

from __future__ import annotations

import structlog

from payment_application.ports.clock import Clock
from payment_application.ports.events import EventSink
from payment_application.ports.payment_orders import DueStatusCheck, StatusCheckQueue
from payment_application.relay_report import RelayReport, split_outcomes
from payment_domain.events import status_check_requested

log = structlog.get_logger(__name__)


class DispatchStatusChecks:
    def __init__(self, *, checks: StatusCheckQueue, events: EventSink, clock: Clock, lease_seconds: float) -> None:
        self._checks = checks
        self._events = events
        self._clock = clock
        self._lease_seconds = lease_seconds

    async def dispatch_batch(self, *, limit: int) -> RelayReport[DueStatusCheck]:
        """Publish up to `limit` due checks, with what happened to each."""
        due = tuple(await self._checks.claim_due(limit=limit, lease_seconds=self._lease_seconds))
        if not due:
            return RelayReport(limit=limit)
        now = self._clock.now()
        events = [
            status_check_requested(
                check.order,
                attempt=check.attempt,
                check_number=check.check_number,
                trace_id=check.trace_id,
                parent_event_id="",
                now=now,
            )
            for check in due
        ]
        published, failures = split_outcomes(due, await self._events.emit_batch(events))
        for failure in failures:
            log.warning(
                "status_check_publish_failed",
                payment_order_id=failure.item.order.public_id,
                check_number=failure.item.check_number,
                error=repr(failure.error),
            )
        marked = await self._checks.mark_published(published) if published else 0
        return RelayReport(limit=limit, claimed=due, published=published, failures=failures, sent=marked)
