"""Use case: pay one accepted refund back at the PSP and settle it (payment_order_refund_requested_topic).

The refund has one PSP idempotency key for its whole life (its public id), so however often the message is
delivered or a call repeated, the PSP pays it back at most once. An answer that is not final is worked on in
place with equal-jitter backoff (the charges' retry numbers): "never executed" sends the same request again; an
unknown outcome is resolved by a status query for the key, and only "the PSP has no such refund" sends it again
(still under the same key). Each call or query is stamped first (`mark_sent`): a refund delivered again after one
may have reached the PSP (a redelivery, a re-drive of a stale or parked refund) starts with a status query. When the
attempts run out, the refund is parked in NEEDS_RECONCILIATION. No database
transaction is open during a PSP call; the settling transaction posts the ledger entry (SettleRefund).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from payment_application.ports.clock import Sleeper
from payment_application.ports.psp import PspRefundRequest, PspRefunds
from payment_application.ports.refunds import RefundStore
from payment_application.settle_refund import RefundAnswer, SettleRefund, UnknownRefund
from payment_domain.backoff import equal_jitter_backoff_ms
from payment_domain.events import EventEnvelope, EventType, RefundRequested
from payment_domain.psp_answer import AnswerKind, PspAnswer, refund_status_for
from payment_domain.refund import Refund, RefundStatus

log = structlog.get_logger(__name__)
# A refund keeps one key for life, so an answer that says "not executed" (proven, or a 503's likely) is followed
# by the same request under the same key: the PSP refunds a key at most once.
_SEND_AGAIN = frozenset({AnswerKind.NOT_CHARGED, AnswerKind.UNAVAILABLE})


@dataclass(frozen=True, slots=True)
class RefundCallPolicy:
    attempts: int  # PSP calls or status queries after the first call, before the refund is parked
    base_ms: int
    max_ms: int

    def __post_init__(self) -> None:
        if self.attempts < 0 or not 0 < self.base_ms <= self.max_ms:
            raise ValueError("need attempts >= 0 and 0 < base_ms <= max_ms")


class ExecuteRefund:
    def __init__(
        self,
        *,
        refunds: RefundStore,
        psp: PspRefunds,
        settle: SettleRefund,
        sleeper: Sleeper,
        randint: Callable[[int, int], int],
        policy: RefundCallPolicy,
    ) -> None:
        self._refunds = refunds
        self._psp = psp
        self._settle = settle
        self._sleeper = sleeper
        self._randint = randint
        self._policy = policy

    async def __call__(self, request: EventEnvelope[RefundRequested]) -> Refund:
        if request.event_type is not EventType.REFUND_REQUESTED:
            raise ValueError(f"expected {EventType.REFUND_REQUESTED}, got {request.event_type}")
        payload = request.payload
        refund = await self._refunds.get(payload.order.payment_order_id, payload.refund_id)
        if refund is None:
            raise UnknownRefund(f"{payload.refund_id.public} of {payload.order.public_id}")
        if refund.status in (RefundStatus.SUCCEEDED, RefundStatus.FAILED):  # settled already: a redelivery
            log.info("refund_call_skipped", refund_id=refund.public_id, status=refund.status.value)
            return refund
        call = PspRefundRequest(
            idempotency_key=refund.psp_key,
            merchant_reference=payload.order.public_id,
            refund_reference=refund.public_id,
            amount_minor=refund.amount.value,
            currency=refund.amount.currency.value,
            seller_id=refund.seller_id,
        )
        if await self._refunds.mark_sent(refund.refund_id):
            # A call may have reached the PSP before (a redelivery, a re-drive, a parked refund): ask first.
            answer = await self._next_answer(call, PspAnswer(AnswerKind.OUTCOME_UNKNOWN))
        else:
            answer = (await self._psp.refund(call)).answer
        attempt = 0
        while refund_status_for(answer) is None and attempt < self._policy.attempts:
            attempt += 1
            wait_ms = equal_jitter_backoff_ms(
                attempt, base_ms=self._policy.base_ms, max_ms=self._policy.max_ms, randint=self._randint
            )
            log.info("refund_unresolved", refund_id=refund.public_id, answer=answer.kind.value, attempt=attempt)
            await self._sleeper.sleep(wait_ms / 1000)
            await self._refunds.mark_sent(refund.refund_id)
            answer = await self._next_answer(call, answer)
        settled = await self._settle(
            RefundAnswer(refund.payment_order_id, refund.refund_id, answer, give_up=refund_status_for(answer) is None)
        )
        log.info("refund_settled", refund_id=refund.public_id, status=settled.status.value, answer=answer.kind.value)
        return settled

    async def _next_answer(self, call: PspRefundRequest, last: PspAnswer) -> PspAnswer:
        if last.kind in _SEND_AGAIN:  # not executed (or a 503): the same request, under the same key
            return (await self._psp.refund(call)).answer
        status = await self._psp.refund_status(call.idempotency_key)
        if not status.found:  # the PSP has no refund under the key: send it (the key still makes it at most one)
            return (await self._psp.refund(call)).answer
        return status.answer


__all__ = ["ExecuteRefund", "RefundCallPolicy"]
