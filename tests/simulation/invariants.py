"""What must hold after every simulated run, whatever the faults were."""

from __future__ import annotations

from typing import TYPE_CHECKING

from payment_domain.events import EventType
from payment_domain.status import PaymentOrderStatus, is_terminal, roll_up
from tests.simulation.creates import one_payment_per_order

if TYPE_CHECKING:
    from tests.simulation.world import World

S = PaymentOrderStatus
_SETTLED_TYPES = {EventType.PAYMENT_ORDER_SUCCEEDED, EventType.PAYMENT_ORDER_FAILED}


def check_invariants(world: World) -> None:
    from tests.simulation.world import SimulationFailed

    problems: list[str] = []
    rows = world.tables.orders
    for order_id, row in rows.items():
        order = row.order
        charges = world.psp.charges_of(order.public_id)
        if len(charges) > 1:
            problems.append(f"order {order_id} charged {len(charges)} times: {charges}")
        status = order.status
        if not is_terminal(status) and status is not S.NEEDS_RECONCILIATION:
            problems.append(f"order {order_id} still {status} after the faults stopped")
        if status is S.SUCCESSFUL_FINAL and len(charges) != 1:
            problems.append(f"order {order_id} SUCCESSFUL_FINAL but the PSP holds {len(charges)} charges")
        if status in (S.FAILED_FINAL, S.DECLINED_FINAL) and charges:
            problems.append(f"order {order_id} {status} but the PSP charged it: {charges}")
    for payment_id, payment_status in world.tables.payments.items():
        expected = roll_up(r.order.status for r in rows.values() if r.order.payment_id.value == payment_id)
        if payment_status is not expected:
            problems.append(f"payment {payment_id} is {payment_status}, its orders say {expected}")
    problems += one_payment_per_order(world.repository, world.requests)
    problems += _event_order(world)
    if problems:
        raise SimulationFailed("; ".join(problems))


def _event_order(world: World) -> list[str]:
    """Per order and topic, the first appearance of each distinct event follows the attempts in order; each
    settled order has exactly one settled event, of its kind, and no other order has one."""
    problems: list[str] = []
    first_seen: dict[tuple[str, str], list[tuple[str, int, str]]] = {}
    for (topic, _partition), log in sorted(world.broker.logs.items()):
        seen: set[str] = set()
        for record in log:
            envelope = record.envelope
            if envelope.event_id in seen:
                continue
            seen.add(envelope.event_id)
            first_seen.setdefault((topic, envelope.aggregate_id), []).append(
                (envelope.event_id, envelope.payload.order.retry_count, envelope.event_type.value)
            )
    for (topic, aggregate), events in first_seen.items():
        attempts = [attempt for _, attempt, _ in events]
        if attempts != sorted(attempts):
            problems.append(f"{topic}: events of order {aggregate} out of attempt order: {attempts}")
    for order_id, row in world.tables.orders.items():
        settled = [
            kind
            for (topic, aggregate), events in first_seen.items()
            if aggregate == str(order_id)
            for _, _, kind in events
            if kind in {t.value for t in _SETTLED_TYPES}
        ]
        status = row.order.status
        if is_terminal(status):
            expected = (
                EventType.PAYMENT_ORDER_SUCCEEDED.value
                if status is S.SUCCESSFUL_FINAL
                else EventType.PAYMENT_ORDER_FAILED.value
            )
            if settled != [expected]:
                problems.append(f"order {order_id} is {status} but its settled events are {settled}")
        elif settled:
            problems.append(f"order {order_id} is {status} but has settled events {settled}")
    return problems
