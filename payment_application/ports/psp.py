"""The PSP port: charge one payment order under an idempotency key, and ask what became of a charge.

The key is the attempt's identity at the PSP: the same key never charges twice, so a caller that is unsure
whether a charge happened asks `charge_status` with that key instead of charging again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from payment_domain.psp_answer import PspAnswer, order_status_for, status_check_reading
from payment_domain.status import PaymentOrderStatus


@dataclass(frozen=True)
class PspChargeRequest:
    idempotency_key: str
    merchant_reference: str  # the public payment order id
    amount_minor: int
    currency: str
    seller_id: str


@dataclass(frozen=True)
class PspRefundRequest:
    idempotency_key: str  # the refund's own key: one refund is paid back at most once
    merchant_reference: str  # the public payment order id the refund gives money back from
    refund_reference: str  # the public refund id
    amount_minor: int
    currency: str
    seller_id: str


@dataclass(frozen=True)
class PspCallResult:
    """What one charge call came to, as the PSP's answer (see payment_domain.psp_answer).

    OUTCOME_UNKNOWN means the request may have reached the PSP and may still complete: resolve it with
    `charge_status`, never with a new charge. NOT_CHARGED means the request was not executed (refused before
    sending, rejected by our own pool, or the PSP said 429). UNAVAILABLE (a 503) means probably not executed: the
    same key may be sent again, but a new key only once `charge_status` finds no charge under this one.
    """

    answer: PspAnswer
    latency_ms: int
    error_code: str | None = None
    error_detail: str | None = None

    @property
    def status(self) -> PaymentOrderStatus:
        """The order status this answer stands for (the domain's one mapping)."""
        return order_status_for(self.answer)


@dataclass(frozen=True)
class PspStatusResult:
    """The PSP's answer about one idempotency key, read as (found, status) by the domain's one mapping:

    | found | status | meaning                                                                      |
    |-------|--------|------------------------------------------------------------------------------|
    | True  | set    | the PSP has this charge, in this state (PENDING_STATUS_CHECK_LATER while it  |
    |       |        | is still processing; a retryable status means the attempt moved no money)    |
    | False | None   | the PSP has no charge under this key: the only answer that allows a new      |
    |       |        | charge attempt without knowing more                                          |
    | True  | None   | we could not ask (timeout, network, 5xx, malformed answer): nothing is known; |
    |       |        | ask again later. `found` stays True so that `if not result.found` can never  |
    |       |        | license a second charge by mistake                                           |
    """

    answer: PspAnswer
    latency_ms: int
    error_code: str | None = None

    @property
    def found(self) -> bool:
        return status_check_reading(self.answer)[0]

    @property
    def status(self) -> PaymentOrderStatus | None:
        return status_check_reading(self.answer)[1]

    @property
    def psp_has_no_such_charge(self) -> bool:
        return not self.found

    @property
    def could_not_ask(self) -> bool:
        return self.found and self.status is None


class PspGateway(Protocol):
    async def charge(self, request: PspChargeRequest) -> PspCallResult: ...

    async def charge_status(self, idempotency_key: str) -> PspStatusResult: ...


class PspRefunds(Protocol):
    """Refunds at the PSP: answered like charges (the same PspAnswer), each under its refund's own key; a caller
    unsure whether a refund happened asks `refund_status`, never refunds again."""

    async def refund(self, request: PspRefundRequest) -> PspCallResult: ...

    async def refund_status(self, idempotency_key: str) -> PspStatusResult: ...
