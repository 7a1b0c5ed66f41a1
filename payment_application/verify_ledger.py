"""Use case: check the ledger from scratch (`payments ledger verify`).

Every account is recomputed from its postings; the trial balance per currency must have equal debits and
credits; every entry must balance; every SUCCESSFUL_FINAL order has one charge entry of its amount and no other
order has one; every SUCCEEDED refund has one refund entry of its amount and no other refund has one; and, given
the PSP's record, what the book says was charged and refunded (per currency, per seller) must be what the PSP
says. Each difference names the account (or order, or refund), the field and both values.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from payment_application.ports.ledger_audit import AccountTotals, LedgerAudit, PspRecord
from payment_domain.ledger import AccountKind

SAMPLE = 20  # at most this many unbalanced entries / mismatched orders are listed


@dataclass(frozen=True, slots=True)
class TrialBalanceLine:
    currency: str
    debits: int
    credits: int


@dataclass(frozen=True, slots=True)
class Difference:
    subject: str  # an account ("SELLER_PAYABLE seller-1 EUR"), a currency's trial balance, an entry or an order
    field: str
    ledger: int | str | None
    other: int | str | None
    other_source: str  # what the ledger was compared with

    def __str__(self) -> str:
        return f"{self.subject}: {self.field}: ledger {self.ledger}, {self.other_source} {self.other}"


@dataclass(frozen=True, slots=True)
class LedgerReport:
    accounts: tuple[AccountTotals, ...]
    trial_balance: tuple[TrialBalanceLine, ...]
    differences: tuple[Difference, ...]
    compared_with_psp: bool

    @property
    def ok(self) -> bool:
        return not self.differences


class VerifyLedger:
    def __init__(self, *, audit: LedgerAudit, psp: PspRecord | None) -> None:
        self._audit = audit
        self._psp = psp

    async def __call__(self) -> LedgerReport:
        accounts = tuple(await self._audit.account_totals())
        trial = _trial_balance(accounts)
        differences = [
            Difference(f"trial balance {t.currency}", "debits", t.debits, t.credits, "credits")
            for t in trial
            if t.debits != t.credits
        ]
        for entry in await self._audit.unbalanced_entries(limit=SAMPLE):
            differences.append(Difference(f"entry {entry.entry_id} {entry.currency}", "net", entry.net, 0, "balanced"))
        for m in await self._audit.order_mismatches(limit=SAMPLE):
            expected = m.amount if m.status == "SUCCESSFUL_FINAL" else None
            differences.append(
                Difference(
                    f"payment order {m.payment_order_id} ({m.status or 'no such order'})",
                    "charged",
                    m.charged,
                    expected,
                    "order",
                )
            )
        for r in await self._audit.refund_mismatches(limit=SAMPLE):
            expected = r.amount if r.status == "SUCCEEDED" else None
            differences.append(
                Difference(
                    f"refund {r.refund_id} ({r.status or 'no such refund'})", "refunded", r.refunded, expected, "refund"
                )
            )
        if self._psp is not None:
            differences += await self._compare_with_psp(accounts)
        return LedgerReport(accounts, trial, tuple(differences), self._psp is not None)

    async def _compare_with_psp(self, accounts: Sequence[AccountTotals]) -> list[Difference]:
        assert self._psp is not None
        psp = await self._psp.charged()
        differences: list[Difference] = []
        receivable = [a for a in accounts if a.account.kind is AccountKind.PSP_RECEIVABLE]
        debited = {a.account.currency.value: a.debits for a in receivable}
        credited = {a.account.currency.value: a.credits for a in receivable}
        differences += _compared("PSP_RECEIVABLE platform", "charged", debited, psp.by_currency)
        differences += _compared("PSP_RECEIVABLE platform", "refunded", credited, psp.refunded_by_currency)
        differences += _compared("SELLER_PAYABLE", "charged", await self._audit.charged_by_seller(), psp.by_seller)
        differences += _compared(
            "SELLER_PAYABLE", "refunded", await self._audit.refunded_by_seller(), psp.refunded_by_seller
        )
        return differences


Key = TypeVar("Key", str, tuple[str, str])


def _compared(subject: str, what: str, ours: Mapping[Key, int], theirs: Mapping[Key, int]) -> list[Difference]:
    """One difference per key (a currency, or a (seller, currency)) on which the book and the PSP disagree."""
    differences = []
    for key in sorted(set(ours) | set(theirs)):
        name = " ".join(key) if isinstance(key, tuple) else key
        mine, psp = ours.get(key, 0), theirs.get(key, 0)
        if mine != psp:
            differences.append(Difference(f"{subject} {name}", what, mine, psp, "PSP"))
    return differences


def _trial_balance(accounts: Sequence[AccountTotals]) -> tuple[TrialBalanceLine, ...]:
    debits: defaultdict[str, int] = defaultdict(int)
    credits: defaultdict[str, int] = defaultdict(int)
    for a in accounts:
        debits[a.account.currency.value] += a.debits
        credits[a.account.currency.value] += a.credits
    return tuple(TrialBalanceLine(c, debits[c], credits[c]) for c in sorted(debits))
