"""The PSP's answer, as its own type: what one call (a charge, a refund, a status query) tells us about the money.

The gateway produces a `PspAnswer`; nothing outside this module turns one into an order or refund status. The
kinds follow the one question that matters for money: did it move, did it not, or can we not tell? A 503 is its own
kind: most likely nothing was executed, but a proxy or load balancer in front of a PSP answers 503 after an
upstream reset too, when the request may have reached the PSP and charged; sending the same key again is safe, a
new key is not until the PSP says it has no charge under this one. A 401/403/404
is our own configuration being wrong: it says nothing about the money, so it is never a final failure. A 422 "key
first used with another body" proves a call exists under the key: its outcome is unknown, never a failure. See
docs/money-safety.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from payment_domain.refund import RefundStatus
from payment_domain.status import PaymentOrderStatus, map_psp_status

S = PaymentOrderStatus


class AnswerKind(StrEnum):
    CHARGED = "CHARGED"  # the money moved (charged, or for a refund: paid back to the buyer)
    DECLINED = "DECLINED"  # refused for good: no money moved, and the same request never will
    NOT_CHARGED = "NOT_CHARGED"  # not executed, and known: never sent, our own pool refused, a 429, the PSP's word
    # A 503: probably not executed, not proven. The same key may be sent again; a new key only once a status query
    # on this one finds no charge.
    UNAVAILABLE = "UNAVAILABLE"
    OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"  # the money may have moved: ask about the key, never repeat blindly
    MISCONFIGURED = "MISCONFIGURED"  # our own configuration is wrong (credentials, URL): nothing is known


@dataclass(frozen=True, slots=True)
class PspAnswer:
    """`psp_status`: the PSP's own status word when it gave one (its vocabulary is the order status names,
    normalised), which keeps finer grades the kind folds together ("PENDING" and "CAPTURE_PENDING_..." are both
    an unknown outcome; "FAILED_TRANSIENT_ERROR" and a 503 are both not charged)."""

    kind: AnswerKind
    psp_status: str | None = None


_KIND_OF_STATUS: dict[PaymentOrderStatus, AnswerKind] = {
    S.SUCCESSFUL_FINAL: AnswerKind.CHARGED,
    S.DECLINED_FINAL: AnswerKind.DECLINED,
    S.FAILED_FINAL: AnswerKind.DECLINED,
    S.FAILED_TRANSIENT_ERROR: AnswerKind.NOT_CHARGED,
    S.PSP_UNAVAILABLE_TRANSIENT: AnswerKind.NOT_CHARGED,
}
_IN_PROGRESS = frozenset({"PROCESSING", "IN_PROGRESS"})
# A status query answered so tells nothing about the key: ask again later.
_NOTHING_KNOWN = frozenset({AnswerKind.MISCONFIGURED, AnswerKind.UNAVAILABLE})


def answer_for_psp_status(raw: str) -> PspAnswer:
    """The answer a PSP status word stands for ("SUCCESSFUL_FINAL", "PENDING", ...); a word we do not know is
    an unknown outcome."""
    word = raw.strip().upper()
    status = S.PENDING_STATUS_CHECK_LATER if word in _IN_PROGRESS else map_psp_status(word)
    return PspAnswer(_KIND_OF_STATUS.get(status, AnswerKind.OUTCOME_UNKNOWN), status.value)


def _word(answer: PspAnswer) -> PaymentOrderStatus | None:
    if answer.psp_status is None:
        return None
    try:
        status = S(answer.psp_status)
    except ValueError:
        return None
    return status if _KIND_OF_STATUS.get(status, AnswerKind.OUTCOME_UNKNOWN) is answer.kind else None


def order_status_for(answer: PspAnswer) -> PaymentOrderStatus:
    """What a charge call's answer makes of a payment order (the status `decide` then acts on)."""
    word = _word(answer)
    if answer.kind is AnswerKind.CHARGED:
        return S.SUCCESSFUL_FINAL
    if answer.kind is AnswerKind.DECLINED:
        return word or S.DECLINED_FINAL
    if answer.kind is AnswerKind.NOT_CHARGED:
        return word or S.PSP_UNAVAILABLE_TRANSIENT
    if answer.kind is AnswerKind.UNAVAILABLE:
        return S.PSP_UNAVAILABLE_TRANSIENT
    if answer.kind is AnswerKind.OUTCOME_UNKNOWN and word is not None:
        return word
    # An unknown outcome without a word, or our own misconfiguration: resolved by a status query, never failed.
    return S.TIMEOUT_EXCEEDED_1S_TRANSIENT


def unconfirmed(answer: PspAnswer) -> bool:
    """A charge answer that says "not executed" without proving it (a 503): before the attempt's key is given up
    for a new one, a status query must find no charge under it."""
    return answer.kind is AnswerKind.UNAVAILABLE


def status_check_reading(answer: PspAnswer) -> tuple[bool, PaymentOrderStatus | None]:
    """What a status query's answer says about the key, as (found, status): (False, None) the PSP has no such
    charge; (True, None) we could not ask; otherwise the status the PSP holds for the key."""
    if answer.kind is AnswerKind.NOT_CHARGED and answer.psp_status is None:
        return False, None
    if answer.kind in _NOTHING_KNOWN or (answer.kind is AnswerKind.OUTCOME_UNKNOWN and _word(answer) is None):
        return True, None
    return True, order_status_for(answer)


def refund_status_for(answer: PspAnswer) -> RefundStatus | None:
    """What a refund call's (or a refund status query's) answer makes of a refund: paid back, or refused for good,
    or None while it is not final (not executed: send it again under the refund's own key; unknown or our own
    misconfiguration: ask the PSP about the key, never refund again).

    A refund keeps one key for life and the PSP replays a key's answer, so a refund the PSP executed and failed
    with no money moved ("FAILED_TRANSIENT_ERROR") can never succeed under it: it is FAILED, its amount given back
    to the order, and the caller may ask for a new refund."""
    if answer.kind is AnswerKind.CHARGED:
        return RefundStatus.SUCCEEDED
    if answer.kind is AnswerKind.DECLINED or (answer.kind is AnswerKind.NOT_CHARGED and _word(answer) is not None):
        return RefundStatus.FAILED
    return None
