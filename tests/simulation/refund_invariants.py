"""What the refund path must keep after every simulated run (checked with the charges' invariants)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from payment_domain.ids import PaymentOrderId
from payment_domain.ledger import AccountKind, CommissionSchedule, EntryKind, Side, refund_commission
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentOrder
from payment_domain.refund import RefundStatus
from tests.fakes_refunds import RefundTables

if TYPE_CHECKING:
    from tests.simulation.psp import SimPsp
    from tests.simulation.refunds import RefundAsk

R = RefundStatus


def check_refunds(tables: RefundTables, asks: list[RefundAsk], psp: SimPsp) -> tuple[list[str], dict[int, int]]:
    """The refund invariants, and what the PSP paid back per order (for the balances). Per order: never more paid
    back at the PSP than it charged, nor more refunded (not failed) than the order's amount; per refund: paid back
    at most once at the PSP, SUCCEEDED exactly when the PSP paid it back, with exactly one refund entry of its
    amount (a FAILED one with none); per client key: one refund."""
    problems, paid_back, times = _at_the_psp(tables, psp)
    problems += _per_refund(tables, times)
    problems += _per_order(tables)
    problems += _per_client_key(tables, asks)
    return problems, {PaymentOrderId.from_public(reference).value: total for reference, total in paid_back.items()}


def _at_the_psp(tables: RefundTables, psp: SimPsp) -> tuple[list[str], Counter[str], Counter[str]]:
    """Per order (merchant reference) what the PSP paid back, never more than it charged; per refund key how often
    it paid back, never more than once, and only for refunds that exist."""
    problems: list[str] = []
    charged: Counter[str] = Counter()
    for reference, key in psp.ledger:
        charged[reference] += psp.requests[key].amount_minor
    paid_back: Counter[str] = Counter()
    times: Counter[str] = Counter()
    for reference, key in psp.refunds:
        paid_back[reference] += psp.requests[key].amount_minor
        times[key] += 1
    for reference, total in sorted(paid_back.items()):
        if total > charged[reference]:
            problems.append(f"order {reference} paid back {total} at the PSP, charged {charged[reference]}")
    if twice := sorted(key for key, n in times.items() if n > 1):
        problems.append(f"refunds paid back more than once at the PSP: {twice}")
    if strays := sorted(set(times) - {row.refund.psp_key for row in tables.refunds.values()}):
        problems.append(f"the PSP paid back refunds that do not exist: {strays}")
    return problems, paid_back, times


def _per_refund(tables: RefundTables, times: Counter[str]) -> list[str]:
    problems: list[str] = []
    entries: dict[int, list[int]] = {}  # refund id -> what each of its refund entries paid back
    for posted in tables.consumer.journal:
        entry = posted.entry
        if entry.kind is EntryKind.REFUND and entry.refund_id is not None:
            receivable = (p for p in entry.postings if p.account.kind is AccountKind.PSP_RECEIVABLE)
            entries.setdefault(entry.refund_id, []).append(sum(p.amount for p in receivable if p.side is Side.CREDIT))
    for refund_id, row in tables.refunds.items():
        refund, posted_amounts = row.refund, entries.get(refund_id, [])
        paid = times[refund.psp_key]
        if refund.status is R.SUCCEEDED and (paid != 1 or posted_amounts != [refund.amount.value]):
            problems.append(f"{refund.public_id} SUCCEEDED, paid back {paid} times, refund entries {posted_amounts}")
        elif refund.status is R.FAILED and (paid or posted_amounts):
            problems.append(f"{refund.public_id} FAILED, paid back {paid} times, refund entries {posted_amounts}")
        elif refund.status not in (R.SUCCEEDED, R.FAILED):
            problems.append(f"{refund.public_id} still {refund.status} after the faults stopped")
    if strays := sorted(set(entries) - set(tables.refunds)):
        problems.append(f"refund entries for refunds that do not exist: {strays}")
    return problems


def _per_order(tables: RefundTables) -> list[str]:
    """The order's refunded total is its refunds not failed, never above its amount."""
    not_failed: Counter[int] = Counter()
    for row in tables.refunds.values():
        if row.refund.status is not R.FAILED:
            not_failed[row.refund.payment_order_id.value] += row.refund.amount.value
    problems = []
    for order_id, order_row in tables.consumer.orders.items():
        total, amount = tables.refunded.get(order_id, 0), order_row.order.amount.value
        if total != not_failed[order_id] or total > amount:
            problems.append(
                f"order {order_id} of {amount}: refunded {total}, refunds not failed {not_failed[order_id]}"
            )
    return problems


def _per_client_key(tables: RefundTables, asks: list[RefundAsk]) -> list[str]:
    """One refund per client key, the one the client was answered with (none for a refused ask)."""
    problems = []
    for ask in asks:
        made = [r.refund for r in tables.refunds.values() if r.key.key == ask.key]
        answered = [] if ask.refund_id is None else [ask.refund_id]
        if [r.refund_id.value for r in made] != answered:  # a refused ask has none
            problems.append(f"client key {ask.key} ({ask.outcome}) has refunds {[r.public_id for r in made]}")
    return problems


def refunds_in_the_book(
    orders: dict[int, PaymentOrder], paid_back: dict[int, int], commission: CommissionSchedule
) -> Counter[tuple[AccountKind, str, str]]:
    """What the PSP's refunds take off each account: the whole amount off the PSP receivable; the commission given
    back (on the total refunded: the rule telescopes, whatever the order of the partial refunds) off the platform's
    revenue, the rest off the seller."""
    book: Counter[tuple[AccountKind, str, str]] = Counter()
    for order_id, total in paid_back.items():
        order = orders[order_id]
        currency = order.amount.currency.value
        charged = order.amount.value
        taken = commission.split(Amount(charged, Currency(currency)), order.seller_id).commission
        back = refund_commission(charged=charged, charge_commission=taken, refunded_before=0, amount=total)
        book[(AccountKind.PSP_RECEIVABLE, "platform", currency)] -= total
        book[(AccountKind.SELLER_PAYABLE, order.seller_id, currency)] -= total - back
        book[(AccountKind.COMMISSION_REVENUE, "platform", currency)] -= back
    return book
