"""Use case: due status checks become `payment_order_status_check_requested` events. Claim in a short
transaction, publish with none open, then mark published only where our lease still stands."""

from __future__ import annotations

import structlog

from payment_application.ports.clock import Clock
from payment_application.ports.events import EventSink
from payment_application.ports.payment_orders import DueStatusCheck, StatusCheckQueue
from payment_domain.events import status_check_requested

log = structlog.get_logger(__name__)


class DispatchStatusChecks:
    def __init__(self, *, checks: StatusCheckQueue, events: EventSink, clock: Clock, lease_seconds: float) -> None:
        self._checks = checks
        self._events = events
        self._clock = clock
        self._lease_seconds = lease_seconds

    async def dispatch_once(self, *, limit: int) -> int:
        """Publish up to `limit` due checks; return how many went out. A failed publish leaves its check
        claimed until the lease runs out, then it is due again."""
        due = await self._checks.claim_due(limit=limit, lease_seconds=self._lease_seconds)
        published: list[DueStatusCheck] = []
        for check in due:
            event = status_check_requested(
                check.order,
                attempt=check.attempt,
                check_number=check.check_number,
                trace_id=check.trace_id,
                parent_event_id="",
                now=self._clock.now(),
            )
            try:
                await self._events.emit(event)
            except Exception as error:
                log.warning(
                    "status_check_publish_failed",
                    payment_order_id=check.order.public_id,
                    check_number=check.check_number,
                    error=repr(error),
                )
                break
            published.append(check)
        if published:
            await self._checks.mark_published(published)
        return len(published)
