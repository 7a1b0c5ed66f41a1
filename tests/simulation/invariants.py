"""What must hold after every simulated run, whatever the faults were."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from payment_domain.events import EventType
from payment_domain.ids import PaymentOrderId
from payment_domain.ledger import AccountKind, CommissionSchedule, EntryKind, charge_entry, net_by_currency
from payment_domain.money import Amount, Currency
from payment_domain.status import PaymentOrderStatus, is_terminal, roll_up
from tests.simulation.creates import one_payment_per_order
from tests.simulation.refund_invariants import check_refunds, refunds_in_the_book

if TYPE_CHECKING:
    from tests.simulation.world import World

S = PaymentOrderStatus
# An odd default (rounding on nearly every charge) and sellers of their own: none, a low rate, all of it.
SIM_COMMISSION = CommissionSchedule(
    default_bps=1_234,
    seller_bps={
        **{f"seller-{n}-1": 0 for n in range(100)},
        **{f"seller-{n}-2": 250 for n in range(100)},
        "seller-0-0": 10_000,
    },
)
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
    refund_problems, paid_back = check_refunds(world.refunds.tables, world.refunds.asks, world.psp)
    problems += refund_problems
    problems += _ledger(world, paid_back)
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


def _ledger(world: World, paid_back: dict[int, int]) -> list[str]:
    """Debits equal credits per currency; every SUCCESSFUL_FINAL order has exactly one charge entry, the one its
    amount and seller call for, and no other order has one; each seller's balance, the PSP receivable and the
    commission revenue are what the PSP's own ledger says was charged minus paid back (`paid_back`, per order),
    less commission, to the cent (orders still parked are left out on both sides: their money waits for
    reconciliation)."""
    problems: list[str] = []
    journal = [posted.entry for posted in world.tables.journal]
    if off := {c: n for c, n in net_by_currency(p for e in journal for p in e.postings).items() if n}:
        problems.append(f"the ledger's debits and credits differ: {off}")
    charges: dict[int, list[object]] = {}
    for entry in journal:
        if entry.kind is EntryKind.CHARGE:
            charges.setdefault(entry.payment_order_id, []).append(entry)
    rows = world.tables.orders
    for order_id, row in rows.items():
        posted = charges.get(order_id, [])
        if row.order.status is S.SUCCESSFUL_FINAL:
            if posted != [charge_entry(row.order, SIM_COMMISSION)]:
                problems.append(f"order {order_id} SUCCESSFUL_FINAL with charge entries {posted}")
        elif posted:
            problems.append(f"order {order_id} is {row.order.status} but has charge entries {posted}")
    if strays := sorted(set(charges) - set(rows)):
        problems.append(f"charge entries for orders that do not exist: {strays}")
    parked = {o for o, row in rows.items() if row.order.status is S.NEEDS_RECONCILIATION}

    book: Counter[tuple[AccountKind, str, str]] = Counter()
    for entry in journal:
        if entry.payment_order_id in parked:
            continue
        for p in entry.postings:
            side = 1 if p.account.normal_side is p.side else -1
            book[(p.account.kind, p.account.owner, p.account.currency.value)] += side * p.amount
    psp: Counter[tuple[AccountKind, str, str]] = Counter()
    for reference, key in world.psp.ledger:
        if PaymentOrderId.from_public(reference).value in parked:
            continue
        request = world.psp.requests[key]
        split = SIM_COMMISSION.split(Amount(request.amount_minor, Currency(request.currency)), request.seller_id)
        psp[(AccountKind.PSP_RECEIVABLE, "platform", request.currency)] += request.amount_minor
        psp[(AccountKind.SELLER_PAYABLE, request.seller_id, request.currency)] += split.seller
        psp[(AccountKind.COMMISSION_REVENUE, "platform", request.currency)] += split.commission
    psp.update(refunds_in_the_book({o: row.order for o, row in rows.items()}, paid_back, SIM_COMMISSION))
    for account in sorted(set(book) | set(psp)):
        if book[account] != psp[account]:
            kind, owner, currency = account
            problems.append(
                f"{kind.value} {owner} {currency}: the ledger holds {book[account]}, the PSP charged for {psp[account]}"
            )
    return problems
