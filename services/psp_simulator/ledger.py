"""The simulator's in-memory ledger: one charge per idempotency key, plus the counters tests assert on.

`orders_charged_more_than_once` is the number the whole project is judged by: distinct merchant references
(payment orders) holding more than one successful charge under different idempotency keys. A correct
system keeps it at 0 in every scenario. Refunds keep the same books: `orders_refunded_more_than_once` counts
refunds (by refund reference) paid back under more than one idempotency key, and `orders_refunded_beyond_charge`
the payment orders whose refunds paid back more than was charged; both stay 0.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from services.psp_simulator.profiles import Outcome

# Summary lists at most this many example references; the counts are always exact.
_SAMPLE_SIZE = 20


class ChargeStatus(StrEnum):
    """A charge's state as GET /v1/charges/{key} reports it."""

    PROCESSING = "PROCESSING"  # executing: the first answer is not decided yet
    PENDING = "PENDING"  # answered "pending, check later"; resolves on its own
    SUCCESSFUL_FINAL = "SUCCESSFUL_FINAL"
    DECLINED_FINAL = "DECLINED_FINAL"
    FAILED_TRANSIENT_ERROR = "FAILED_TRANSIENT_ERROR"  # no money moved; the key still replays this answer


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """A charge, or (with a refund reference) a refund of part of the charge of `merchant_reference`."""

    merchant_reference: str
    amount: int
    currency: str
    seller_id: str
    refund_reference: str = ""


def _decided() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


DECIDED = _decided()
"""What a charge's `decided` becomes once its first answer is set: one shared, already-set event instead of one
per charge for the life of the ledger (a PSP's ledger remembers every charge; each byte of it is kept)."""


@dataclass(eq=False, slots=True)
class Charge:
    id: str
    idempotency_key: str
    request: ChargeRequest
    created_at: datetime
    updated_at: datetime
    status: ChargeStatus = ChargeStatus.PROCESSING
    # Set once the first answer is decided; every request carrying this key waits on it.
    decided: asyncio.Event = field(default_factory=asyncio.Event)

    def view(self) -> dict[str, Any]:
        refund = {"refundReference": self.request.refund_reference} if self.request.refund_reference else {}
        return {
            **refund,
            "id": self.id,
            "idempotencyKey": self.idempotency_key,
            "merchantReference": self.request.merchant_reference,
            "amount": self.request.amount,
            "currency": self.request.currency,
            "sellerId": self.request.seller_id,
            "status": self.status.value,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
        }


@dataclass(eq=False)
class Ledger:
    charges: dict[str, Charge] = field(default_factory=dict)
    # merchant reference -> the first idempotency key that charged it successfully; a reference charged under a
    # second key too is in `charged_again` with all its keys (kept apart: nearly every order has one key)
    first_success_key: dict[str, str] = field(default_factory=dict)
    charged_again: dict[str, set[str]] = field(default_factory=dict)
    charged_minor_by_currency: Counter[str] = field(default_factory=Counter)
    # seller -> currency -> minor units charged (what `payments ledger verify` compares each seller's book with)
    charged_minor_by_seller: dict[str, Counter[str]] = field(default_factory=dict)
    calls: int = 0
    executions: int = 0
    replays: int = 0
    idempotency_mismatches: int = 0
    forced_http_errors: int = 0
    # new charges and refunds executed (and recorded) whose caller heard a 503 (chargedThenUnavailablePercent)
    answered_unavailable_after_execution: int = 0
    slow_calls: int = 0
    status_queries: int = 0
    pending_resolved: int = 0
    by_outcome: Counter[str] = field(default_factory=lambda: Counter({o.value: 0 for o in Outcome}))
    # The refund book, kept like the charges': idempotency key -> refund, and what was paid back.
    refunds: dict[str, Charge] = field(default_factory=dict)
    first_refund_key: dict[str, str] = field(default_factory=dict)  # refund reference -> first key that paid it
    refunded_again: dict[str, set[str]] = field(default_factory=dict)
    charged_by_reference: Counter[str] = field(default_factory=Counter)
    refunded_by_reference: Counter[str] = field(default_factory=Counter)
    refunded_minor_by_currency: Counter[str] = field(default_factory=Counter)
    refunded_minor_by_seller: dict[str, Counter[str]] = field(default_factory=dict)
    refund_calls: int = 0
    refund_executions: int = 0
    refund_status_queries: int = 0

    def charged(self) -> dict[str, dict[str, Any]]:
        """Every merchant reference charged successfully: its first successful charge (key, amount, currency)."""
        out: dict[str, dict[str, Any]] = {}
        for reference, key in self.first_success_key.items():
            request = self.charges[key].request
            out[reference] = {"idempotencyKey": key, "amount": request.amount, "currency": request.currency}
        return out

    def record_success(self, charge: Charge) -> None:
        reference, key = charge.request.merchant_reference, charge.idempotency_key
        first = self.first_success_key.setdefault(reference, key)
        if first != key:
            self.charged_again.setdefault(reference, {first}).add(key)
        if first == key:
            self.charged_by_reference[reference] += charge.request.amount
        self.charged_minor_by_currency[charge.request.currency] += charge.request.amount
        by_seller = self.charged_minor_by_seller.setdefault(charge.request.seller_id, Counter())
        by_seller[charge.request.currency] += charge.request.amount

    def record_refund(self, refund: Charge) -> None:
        request, key = refund.request, refund.idempotency_key
        first = self.first_refund_key.setdefault(request.refund_reference, key)
        if first != key:
            self.refunded_again.setdefault(request.refund_reference, {first}).add(key)
        self.refunded_by_reference[request.merchant_reference] += request.amount
        self.refunded_minor_by_currency[request.currency] += request.amount
        by_seller = self.refunded_minor_by_seller.setdefault(request.seller_id, Counter())
        by_seller[request.currency] += request.amount

    def _refund_summary(self) -> dict[str, Any]:
        doubles = sorted(self.refunded_again)
        beyond = sorted(
            reference
            for reference, refunded in self.refunded_by_reference.items()
            if refunded > self.charged_by_reference.get(reference, 0)
        )
        return {
            "refund_calls": self.refund_calls,
            "refund_executions": self.refund_executions,
            "refund_status_queries": self.refund_status_queries,
            "refunds_in_flight": sum(1 for r in self.refunds.values() if r.status is ChargeStatus.PROCESSING),
            "refunds_paid": len(self.first_refund_key),
            "orders_refunded_more_than_once": len(doubles),
            "orders_refunded_more_than_once_sample": doubles[:_SAMPLE_SIZE],
            "orders_refunded_beyond_charge": len(beyond),
            "orders_refunded_beyond_charge_sample": beyond[:_SAMPLE_SIZE],
            "refunded_minor_by_currency": dict(self.refunded_minor_by_currency),
            "refunded_minor_by_seller": {s: dict(c) for s, c in sorted(self.refunded_minor_by_seller.items())},
        }

    def summary(self, scenario: str) -> dict[str, Any]:
        doubles = sorted(self.charged_again)
        return {
            "scenario": scenario,
            "calls": self.calls,
            "executions": self.executions,
            "replays": self.replays,
            "idempotency_mismatches": self.idempotency_mismatches,
            "forced_http_errors": self.forced_http_errors,
            "answered_unavailable_after_execution": self.answered_unavailable_after_execution,
            "slow_calls": self.slow_calls,
            "by_outcome": dict(self.by_outcome),
            "status_queries": self.status_queries,
            "pending_resolved": self.pending_resolved,
            "in_flight": sum(1 for c in self.charges.values() if c.status is ChargeStatus.PROCESSING),
            "pending": sum(1 for c in self.charges.values() if c.status is ChargeStatus.PENDING),
            "orders_charged": len(self.first_success_key),
            "orders_charged_more_than_once": len(doubles),
            "orders_charged_more_than_once_sample": doubles[:_SAMPLE_SIZE],
            "charged_minor_by_currency": dict(self.charged_minor_by_currency),
            "charged_minor_by_seller": {seller: dict(c) for seller, c in sorted(self.charged_minor_by_seller.items())},
            **self._refund_summary(),
        }
