"""Payment orders parked in NEEDS_RECONCILIATION, as the periodic re-query and the operator see them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from payment_domain.payment import PaymentOrder


@dataclass(frozen=True, slots=True)
class ParkedOrder:
    order: PaymentOrder
    query_number: int  # numbers this re-query's answer (its status-check number), so each answer has its own id
    trace_id: str  # the payment's
    parked_since: datetime
    reason: str | None


class ParkedOrders(Protocol):
    async def claim_due(self, *, every: timedelta, limit: int) -> list[ParkedOrder]:
        """Up to `limit` parked orders not asked about for `every` (on the database's clock), each stamped as
        asked now with the next query number, in one short transaction that skips rows others hold."""
        ...

    async def list_parked(self, *, limit: int) -> list[ParkedOrder]:
        """The parked orders, longest parked first (for the operator); claims nothing."""
        ...

    async def count(self) -> int:
        """How many orders are parked (the alerting gauge)."""
        ...

    async def get(self, payment_order_id: int) -> ParkedOrder | None:
        """The order if it is parked; None if it does not exist or is not in NEEDS_RECONCILIATION."""
        ...
