"""Finding payment orders that stopped moving, as the sweeper sees it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from payment_domain.payment import PaymentOrder
from payment_domain.psp_result import OrderState


@dataclass(frozen=True, slots=True)
class StaleOrder:
    order: PaymentOrder
    status_check_number: int
    trace_id: str  # the payment's, so a re-drive can be followed with the rest of its story

    @property
    def state(self) -> OrderState:
        return OrderState(self.order.status, self.order.retry_count, self.status_check_number)


class StaleOrderClaims(Protocol):
    async def claim_stale(self, *, stale_after: timedelta, limit: int) -> list[StaleOrder]:
        """Claim up to `limit` orders in flight (neither terminal nor NEEDS_RECONCILIATION) that show no sign of
        progress for `stale_after`, oldest first, in one short transaction that skips rows others hold.

        The store's clock (the database's) judges the threshold and stamps the claim: it is the clock that wrote
        every time compared here, so a sweeper whose own clock is off neither sweeps early nor misses an order.
        Signs of progress: a state change (`updated_at`), a PSP-call claim by the executor, a claim by a sweeper
        (so two sweepers never take the same order, and one takes it again only `stale_after` after its claim),
        an unsent outbox row of the order, and a status check of the attempt in play that is still scheduled or
        was published within `stale_after`.
        """
        ...
