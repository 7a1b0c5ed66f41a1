"""Use case: send the request of each unsettled refund a round claims again, so the refund executor works it.

Two rounds use it: the stale-refund sweeper (REQUESTED refunds whose message was lost, or whose worker died) and
the parked-refund re-query (NEEDS_RECONCILIATION refunds, at a long interval). Either way the executor does what
it always does with a request: nothing for a settled refund; a status query first when the refund may have reached
the PSP, and a call only when the PSP has no refund under its key, always the same key. So a re-drive never
refunds twice (docs/ledger.md, "Re-drives").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from payment_application.ports.events import EventSink
from payment_application.ports.refund_redrives import UnsettledRefund
from payment_application.relay_report import RelayFailure, RelayReport

log = structlog.get_logger(__name__)

Claim = Callable[[int], Awaitable[list[UnsettledRefund]]]


class RedriveRefunds:
    def __init__(self, *, claim: Claim, events: EventSink, reason: str) -> None:
        """`claim(limit)` takes the round's refunds (stale or parked); `reason` names the round in logs."""
        self._claim = claim
        self._events = events
        self._reason = reason

    async def run_once(self, *, limit: int) -> RelayReport[UnsettledRefund]:
        """A failed send ends the round; its refund and the rest are claimed again once their claim runs out."""
        claimed = tuple(await self._claim(limit))
        sent: list[UnsettledRefund] = []
        for unsettled in claimed:
            refund = unsettled.refund
            facts = {
                "refund_id": refund.public_id,
                "payment_order_id": unsettled.order.public_id,
                "status": refund.status.value,
                "reason": self._reason,
                "trace_id": unsettled.trace_id,
            }
            try:
                await self._events.emit(unsettled.request())
            except Exception as error:
                log.warning("refund_redrive_failed", error=repr(error), **facts)
                failure = (RelayFailure(unsettled, error),)
                return RelayReport(
                    limit=limit, claimed=claimed, published=tuple(sent), failures=failure, sent=len(sent)
                )
            log.warning("refund_redriven", **facts)
            sent.append(unsettled)
        return RelayReport(limit=limit, claimed=claimed, published=tuple(sent), sent=len(sent))


__all__ = ["RedriveRefunds"]
