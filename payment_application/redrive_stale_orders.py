"""Use case: notice payment orders that stopped moving and re-drive each with the safe action for its state.

An order stops when a message about it is lost for good: dead-lettered and never replayed, a broker that lost its
log, a Redis flush that dropped a retry, a status-check request that vanished. Orders are claimed in a short
transaction (see `StaleOrderClaims`), then, with no transaction open, each gets what it was waiting for
(`redrive.safe_redrive`): the deterministic event the pipeline would have sent itself, so a late original and
its re-drive collapse into one downstream (the executor's attempt claim, the PSP key, the inbox).

Staleness is judged by the store on its own clock (the database's, which wrote every time it compares), never on
this process's: a sweeper whose clock is off would otherwise re-drive orders still moving, or miss stuck ones. This
process's clock only timestamps the events it sends and the `stale_seconds` it logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from payment_application.ports.clock import Clock
from payment_application.ports.events import EventSink
from payment_application.ports.retry_queue import RetryQueue
from payment_application.ports.stale_orders import StaleOrder, StaleOrderClaims
from payment_domain.events import psp_call_requested, status_check_requested
from payment_domain.redrive import Redrive, safe_redrive

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Redriven:
    stale: StaleOrder
    action: Redrive


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one claim → re-drive round did (for metrics)."""

    limit: int
    found: int = 0
    redriven: tuple[Redriven, ...] = ()
    waiting: tuple[StaleOrder, ...] = ()  # stale, but the retry it waits for is still queued: left alone
    failed: StaleOrder | None = None  # the re-drive that failed; the round stopped there

    @property
    def full(self) -> bool:
        """The round claimed as many as it could: more stale orders may be waiting."""
        return self.found >= self.limit


class RedriveStaleOrders:
    def __init__(
        self,
        *,
        orders: StaleOrderClaims,
        events: EventSink,
        retries: RetryQueue,
        clock: Clock,
        stale_after: timedelta,
    ) -> None:
        if stale_after <= timedelta(0):
            raise ValueError("stale_after must be positive")
        self._orders = orders
        self._events = events
        self._retries = retries
        self._clock = clock
        self._stale_after = stale_after

    async def sweep_once(self, *, limit: int) -> SweepReport:
        """Claim up to `limit` stale orders and re-drive them. A failed re-drive (broker or Redis down) stops the
        round: the orders it claimed and did not re-drive are taken again once the threshold passes their claim."""
        claimed = await self._orders.claim_stale(stale_after=self._stale_after, limit=limit)
        now = self._clock.now()  # for the events and the log only
        redriven: list[Redriven] = []
        waiting: list[StaleOrder] = []
        for stale in claimed:
            order = stale.order
            facts = {
                "payment_order_id": order.public_id,
                "status": order.status.value,
                "attempt": order.retry_count,
                "trace_id": stale.trace_id,
                "stale_seconds": round((now - order.updated_at).total_seconds()),
            }
            action = safe_redrive(stale.state)
            if action is None:
                log.error("stale_order_cannot_be_redriven", status_check_number=stale.status_check_number, **facts)
                continue
            try:
                sent = await self._redrive(stale, action, now)
            except Exception as error:
                log.warning("stale_order_redrive_failed", action=action.value, error=repr(error), **facts)
                return SweepReport(limit, len(claimed), tuple(redriven), tuple(waiting), failed=stale)
            if sent:
                log.warning("stale_order_redriven", action=action.value, **facts)
                redriven.append(Redriven(stale, action))
            else:
                log.info("stale_order_retry_still_queued", **facts)
                waiting.append(stale)
        return SweepReport(limit, len(claimed), tuple(redriven), tuple(waiting))

    async def _redrive(self, stale: StaleOrder, action: Redrive, now: datetime) -> bool:
        """Send what the order waits for; False when it is still queued after all (nothing was sent)."""
        order = stale.order
        if action is Redrive.STATUS_CHECK:
            check = status_check_requested(
                order,
                attempt=order.retry_count,
                check_number=stale.status_check_number,
                trace_id=stale.trace_id,
                parent_event_id="",
                now=now,
            )
            await self._events.emit(check)
            return True
        request = psp_call_requested(
            order, attempt=order.retry_count, trace_id=stale.trace_id, parent_event_id="", now=now
        )
        if action is Redrive.RETRY:
            # Atomic with the check: a member still queued or in flight is left as it is (its due time too).
            return await self._retries.schedule(request, delay_ms=0)
        await self._events.emit(request)
        return True
