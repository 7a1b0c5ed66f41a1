"""Use case: an operator settles a parked order with what the PSP says (its dashboard, a report, support).

The order moves out of NEEDS_RECONCILIATION the way the pipeline would move it: one transaction saves the final
status, writes its succeeded/failed event to the outbox, posts the charge entry when it succeeded, rolls the
payment up and keeps an audit line naming the operator and the evidence. Only a parked order can be settled this
way, and only to a final outcome.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import structlog

from payment_application.ports.clock import Clock
from payment_application.ports.parked_orders import ParkedOrders
from payment_application.ports.payment_orders import ReconciliationEntry, ResultStore
from payment_domain.events import payment_order_settled
from payment_domain.ledger import CommissionSchedule, charge_entry, posts_charge
from payment_domain.payment import PaymentOrder
from payment_domain.status import FINAL_OUTCOMES, PaymentOrderStatus, PaymentStatus, transition

log = structlog.get_logger(__name__)

OPERATOR_REASON = "RECONCILED_BY_OPERATOR"


class NotParked(LookupError):
    """The order does not exist or is not in NEEDS_RECONCILIATION: nothing was changed."""


@dataclass(frozen=True, slots=True)
class Settled:
    order: PaymentOrder
    payment_status: PaymentStatus


class SettleParkedOrder:
    def __init__(
        self, *, parked: ParkedOrders, store: ResultStore, clock: Clock, commission: CommissionSchedule
    ) -> None:
        self._parked = parked
        self._commission = commission
        self._store = store
        self._clock = clock

    async def __call__(
        self, payment_order_id: int, *, outcome: PaymentOrderStatus, operator: str, evidence: str
    ) -> Settled:
        if outcome not in FINAL_OUTCOMES:
            allowed = ", ".join(sorted(s.value for s in FINAL_OUTCOMES))
            raise ValueError(f"a parked order settles as one of {allowed}, not {outcome.value}")
        if not operator.strip() or not evidence.strip():
            raise ValueError("say who settles it (operator) and what the PSP says (evidence)")
        parked = await self._parked.get(payment_order_id)
        if parked is None:
            raise NotParked(f"payment order {payment_order_id} is not in NEEDS_RECONCILIATION (or does not exist)")
        async with self._store.transaction() as tx:
            locked = await tx.lock(payment_order_id)
            if locked is None or locked.order.status is not PaymentOrderStatus.NEEDS_RECONCILIATION:
                now_status = "gone" if locked is None else locked.order.status.value
                raise NotParked(f"payment order {payment_order_id} is {now_status} now; nothing was changed")
            transition(locked.order.status, outcome)
            now = tx.now
            order = dataclasses.replace(
                locked.order,
                status=outcome,
                retry_reason=OPERATOR_REASON,
                updated_at=now,
            )
            await tx.save(
                payment_order_id,
                status=outcome,
                attempt=order.retry_count,
                reason=order.retry_reason,
                error=order.last_error_message,
                status_check_number=locked.status_check_number,
                now=now,
            )
            await tx.add_events([payment_order_settled(order, trace_id=parked.trace_id, parent_event_id="", now=now)])
            if posts_charge(locked.order.status, outcome):
                await tx.post_entries([charge_entry(order, self._commission)], now)
            payment_status = await tx.roll_up(order.payment_id.value, now)
            await tx.record_reconciliation(
                ReconciliationEntry(
                    payment_order_id=payment_order_id,
                    attempt=order.retry_count,
                    from_status=PaymentOrderStatus.NEEDS_RECONCILIATION,
                    to_status=outcome,
                    source="operator",
                    actor=operator.strip(),
                    note=evidence.strip(),
                    at=now,
                )
            )
        log.warning(
            "payment_order_reconciled",
            payment_order_id=order.public_id,
            attempt=order.retry_count,
            status=outcome.value,
            source="operator",
            operator=operator.strip(),
            note=evidence.strip(),
            trace_id=parked.trace_id,
        )
        return Settled(order, payment_status)
