"""The money book: accounts, balanced journal entries in minor units, the commission rule and the charge posting.

An entry balances per currency by construction (`JournalEntry` refuses one that does not); the database checks the
same at commit. Commission is `floor(amount * bps / 10_000)`, the seller is credited the rest, so the parts of a
charge always sum to the amount charged. The chart, the rules and a worked example: docs/ledger.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from payment_domain.errors import DomainError
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentOrder
from payment_domain.status import PaymentOrderStatus

BPS_PER_UNIT = 10_000  # basis points in 100 %
PLATFORM = "platform"  # the owner of every account that is not a seller's


class AccountKind(StrEnum):
    PSP_RECEIVABLE = "PSP_RECEIVABLE"  # asset: what the PSP holds for us (charged, not yet paid out to us)
    SELLER_PAYABLE = "SELLER_PAYABLE"  # liability: what the platform owes one seller
    COMMISSION_REVENUE = "COMMISSION_REVENUE"  # revenue: the platform's commission
    REFUNDS_IN_FLIGHT = "REFUNDS_IN_FLIGHT"  # liability: refunds accepted, not yet confirmed by the PSP


class Side(StrEnum):
    DEBIT = "DEBIT"
    CREDIT = "CREDIT"


# The side on which each kind of account grows; a balance is reported on that side (positive = normal).
NORMAL_SIDE: Mapping[AccountKind, Side] = {
    AccountKind.PSP_RECEIVABLE: Side.DEBIT,
    AccountKind.SELLER_PAYABLE: Side.CREDIT,
    AccountKind.COMMISSION_REVENUE: Side.CREDIT,
    AccountKind.REFUNDS_IN_FLIGHT: Side.CREDIT,
}


class EntryKind(StrEnum):
    CHARGE = "CHARGE"  # one per payment order that became SUCCESSFUL_FINAL
    REFUND = "REFUND"  # one per refund the PSP confirmed (SUCCEEDED)


class UnbalancedEntry(DomainError):
    """Debits and credits of an entry differ in some currency, or the entry is not a journal entry at all."""

    code = "unbalanced_entry"


class InvalidCommission(DomainError):
    code = "invalid_commission"


@dataclass(frozen=True, slots=True, order=True)
class Account:
    """One account of the chart: a kind, its owner (a seller id, or PLATFORM) and one currency."""

    kind: AccountKind
    owner: str
    currency: Currency

    def __post_init__(self) -> None:
        seller_account = self.kind is AccountKind.SELLER_PAYABLE
        if seller_account and not self.owner.strip():
            raise ValueError("a seller's payable account is owned by a seller id")
        if not seller_account and self.owner != PLATFORM:
            raise ValueError(f"a {self.kind.value} account is owned by {PLATFORM!r}")

    @classmethod
    def psp_receivable(cls, currency: Currency) -> Account:
        return cls(AccountKind.PSP_RECEIVABLE, PLATFORM, currency)

    @classmethod
    def seller_payable(cls, seller_id: str, currency: Currency) -> Account:
        return cls(AccountKind.SELLER_PAYABLE, seller_id, currency)

    @classmethod
    def commission_revenue(cls, currency: Currency) -> Account:
        return cls(AccountKind.COMMISSION_REVENUE, PLATFORM, currency)

    @classmethod
    def refunds_in_flight(cls, currency: Currency) -> Account:
        return cls(AccountKind.REFUNDS_IN_FLIGHT, PLATFORM, currency)

    @property
    def normal_side(self) -> Side:
        return NORMAL_SIDE[self.kind]


@dataclass(frozen=True, slots=True)
class Posting:
    account: Account
    side: Side
    amount: int  # minor units, > 0

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise TypeError("Posting.amount must be an int of minor units")
        if self.amount <= 0:
            raise ValueError("Posting.amount must be positive (a zero part is not posted)")

    @property
    def signed(self) -> int:
        """Debit positive, credit negative: an entry's signed postings sum to zero per currency."""
        return self.amount if self.side is Side.DEBIT else -self.amount


def net_by_currency(postings: Iterable[Posting]) -> dict[Currency, int]:
    """Debits minus credits, per currency."""
    net: Counter[Currency] = Counter()
    for posting in postings:
        net[posting.account.currency] += posting.signed
    return dict(net)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """Postings that move money together; (kind, payment_order_id, refund_id) names it (one charge entry per order,
    one refund entry per refund)."""

    kind: EntryKind
    payment_order_id: int
    seller_id: str
    postings: tuple[Posting, ...]
    refund_id: int | None = None

    def __post_init__(self) -> None:
        if (self.kind is EntryKind.REFUND) != (self.refund_id is not None):
            raise UnbalancedEntry("a refund entry names its refund, and only a refund entry does")
        if len(self.postings) < 2:
            raise UnbalancedEntry("a journal entry has at least two postings")
        if not all(isinstance(p, Posting) for p in self.postings):
            raise UnbalancedEntry("a journal entry holds postings only")
        if off := {c.value: n for c, n in net_by_currency(self.postings).items() if n != 0}:
            raise UnbalancedEntry(f"entry {self.kind.value} of order {self.payment_order_id} does not balance: {off}")


def commission_of(amount: int, bps: int) -> int:
    """The platform's commission on `amount` minor units: floor(amount * bps / 10_000), so never more than the
    exact share; the seller's part is the rest (`amount - commission`), so the two always sum to `amount`."""
    if amount < 0:
        raise ValueError("amount must not be negative")
    return amount * bps // BPS_PER_UNIT


def _check_bps(bps: int, what: str) -> None:
    if isinstance(bps, bool) or not isinstance(bps, int) or not 0 <= bps <= BPS_PER_UNIT:
        raise InvalidCommission(f"{what} must be an integer number of basis points from 0 to {BPS_PER_UNIT}")


@dataclass(frozen=True, slots=True)
class Split:
    seller: int
    commission: int


@dataclass(frozen=True, slots=True)
class CommissionSchedule:
    """Basis points per seller, with the platform default for every seller not listed."""

    default_bps: int
    seller_bps: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_bps(self.default_bps, "the default commission")
        for seller, bps in self.seller_bps.items():
            _check_bps(bps, f"the commission of seller {seller!r}")

    def bps_for(self, seller_id: str) -> int:
        return self.seller_bps.get(seller_id, self.default_bps)

    def split(self, amount: Amount, seller_id: str) -> Split:
        commission = commission_of(amount.value, self.bps_for(seller_id))
        return Split(seller=amount.value - commission, commission=commission)


def posts_charge(before: PaymentOrderStatus, after: PaymentOrderStatus) -> bool:
    """The move that posts an order's charge entry: into SUCCESSFUL_FINAL (which has no way out, so once)."""
    success = PaymentOrderStatus.SUCCESSFUL_FINAL
    return after is success and before is not success


def charge_entry(order: PaymentOrder, commission: CommissionSchedule) -> JournalEntry:
    """PSP receivable debited with the amount; the seller credited the amount less commission; commission revenue
    credited the commission (a zero part is left out)."""
    currency = order.amount.currency
    split = commission.split(order.amount, order.seller_id)
    postings = [Posting(Account.psp_receivable(currency), Side.DEBIT, order.amount.value)]
    if split.seller:
        postings.append(Posting(Account.seller_payable(order.seller_id, currency), Side.CREDIT, split.seller))
    if split.commission:
        postings.append(Posting(Account.commission_revenue(currency), Side.CREDIT, split.commission))
    return JournalEntry(EntryKind.CHARGE, order.payment_order_id.value, order.seller_id, tuple(postings))


def refund_commission(*, charged: int, charge_commission: int, refunded_before: int, amount: int) -> int:
    """The commission given back with a refund of `amount` from an order charged `charged` (of which the charge
    entry credited `charge_commission` to the platform) after `refunded_before` was refunded (confirmed).

    The platform keeps `floor(charge_commission * still_charged / charged)`; a refund gives back the difference
    between what it kept before and after. So after any sequence of partial refunds the parts still sum exactly,
    a full refund (in one piece or many) gives back the whole charge commission, and a later change of the
    commission schedule does not change what a refund of an older charge gives back."""
    if not 0 < amount <= charged - refunded_before or refunded_before < 0 or not 0 <= charge_commission <= charged:
        raise ValueError("a refund is positive and within what is still charged")

    def kept(still_charged: int) -> int:
        return charge_commission * still_charged // charged

    return kept(charged - refunded_before) - kept(charged - refunded_before - amount)


def refund_entry(
    refund_id: int, order: PaymentOrder, amount: int, *, refunded_before: int, charge_commission: int
) -> JournalEntry:
    """A confirmed refund: PSP receivable credited with the amount (the PSP paid the buyer back); the seller's
    payable debited with the amount less the commission given back, commission revenue debited with that
    commission. The seller's balance may go negative (money the seller owes): a refund is never refused for it."""
    currency = order.amount.currency
    back = refund_commission(
        charged=order.amount.value, charge_commission=charge_commission, refunded_before=refunded_before, amount=amount
    )
    postings = [Posting(Account.psp_receivable(currency), Side.CREDIT, amount)]
    if amount - back:
        postings.append(Posting(Account.seller_payable(order.seller_id, currency), Side.DEBIT, amount - back))
    if back:
        postings.append(Posting(Account.commission_revenue(currency), Side.DEBIT, back))
    return JournalEntry(EntryKind.REFUND, order.payment_order_id.value, order.seller_id, tuple(postings), refund_id)


__all__ = [
    "BPS_PER_UNIT",
    "NORMAL_SIDE",
    "PLATFORM",
    "Account",
    "AccountKind",
    "CommissionSchedule",
    "EntryKind",
    "InvalidCommission",
    "JournalEntry",
    "Posting",
    "Side",
    "Split",
    "UnbalancedEntry",
    "charge_entry",
    "commission_of",
    "net_by_currency",
    "posts_charge",
    "refund_commission",
    "refund_entry",
]
