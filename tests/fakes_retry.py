"""Hand-written fakes of the retry ports (queue, publisher) and a builder of retry envelopes.

FakeRetryQueue is the one fake of the RetryQueue port. It follows the Redis queue's rules (checked by
tests/integration/contracts/test_retry_queue.py) on a clock the test moves (`now_ms`): a member is
`<paymentOrderId>:<attempt>`, a duplicate keeps the first due time and payload, a member in flight is not
re-queued, ack forgets a member everywhere, reclaim returns claims older than the timeout, due now, and a claimed
message is the envelope's wire bytes, as the Redis queue stores and returns them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime

from payment_application.ports.publisher import EventHeaders, OutboundMessage
from payment_application.ports.retry_queue import ClaimedRetry, retry_member
from payment_domain.events import AnyEnvelope, EventEnvelope, PspCallRequested, psp_call_requested
from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentOrder
from payment_domain.status import PaymentOrderStatus
from payment_infrastructure.serialization import envelope_to_bytes


def retry_envelope(
    payment_order_id: int | str, attempt: int, *, trace_id: str = "trace-retry"
) -> EventEnvelope[PspCallRequested]:
    """A PSP-call-requested envelope for `attempt` of one order, as the result applier would queue it."""
    order_id = int(payment_order_id)
    moment = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)  # whole milliseconds: survives the wire unchanged
    order = PaymentOrder(
        payment_order_id=PaymentOrderId(order_id),
        payment_id=PaymentId(order_id),
        seller_id="seller-1",
        amount=Amount(1250, Currency.EUR),
        status=PaymentOrderStatus.FAILED_TRANSIENT_ERROR,
        created_at=moment,
        updated_at=moment,
        retry_count=attempt,
        retry_reason="PSP_UNAVAILABLE",
    )
    return psp_call_requested(
        order, attempt=attempt, trace_id=trace_id, parent_event_id=f"parent-{order_id}-{attempt}", now=moment
    )


def message_of(envelope: AnyEnvelope) -> OutboundMessage:
    """What a claim of this envelope hands out: its wire bytes, addressed to its topic, keyed by its order."""
    return OutboundMessage(
        topic=envelope.topic.value,
        key=envelope.aggregate_id,
        value=envelope_to_bytes(envelope),
        headers=EventHeaders.of(envelope),
    )


@dataclasses.dataclass
class QueuedRetry:
    envelope: EventEnvelope[PspCallRequested]
    delay_ms: int
    due_ms: int


class FakeRetryQueue:
    """`queued`: member → item; `inflight`: member → (item, claimed at ms). Knobs: `fail_with` makes `schedule`
    raise (Redis down), `claim_failures` makes the next claims raise, one each. `schedule_calls` and `acked`
    record what the use cases asked for."""

    def __init__(self, now_ms: int = 1_000_000) -> None:
        self.now_ms = now_ms
        self.queued: dict[str, QueuedRetry] = {}
        self.inflight: dict[str, tuple[QueuedRetry, int]] = {}
        self.schedule_calls: list[tuple[str, int]] = []
        self.acked: list[str] = []
        self.fail_with: Exception | None = None
        self.claim_failures: list[Exception] = []

    async def schedule(self, envelope: EventEnvelope[PspCallRequested], *, delay_ms: int) -> bool:
        if delay_ms < 0:
            raise ValueError("delay_ms must be >= 0")
        if not isinstance(envelope.payload, PspCallRequested):
            raise ValueError(f"only a PSP call request can be retried, not {envelope.event_type.value}")
        member = retry_member(envelope)
        self.schedule_calls.append((member, delay_ms))
        if self.fail_with is not None:
            raise self.fail_with
        if member in self.queued or member in self.inflight:
            return False
        self.queued[member] = QueuedRetry(envelope, delay_ms, self.now_ms + delay_ms)
        return True

    async def claim_due(self, limit: int) -> list[ClaimedRetry]:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if self.claim_failures:
            raise self.claim_failures.pop(0)
        due = sorted((item.due_ms, member) for member, item in self.queued.items() if item.due_ms <= self.now_ms)
        claimed = []
        for _, member in due[:limit]:
            item = self.queued.pop(member)
            self.inflight[member] = (item, self.now_ms)
            claimed.append(ClaimedRetry(member=member, message=message_of(item.envelope)))
        return claimed

    async def ack(self, members: Sequence[str]) -> None:
        for member in members:
            self.acked.append(member)
            self.queued.pop(member, None)
            self.inflight.pop(member, None)

    async def reclaim_expired(self, visibility_timeout_ms: int) -> int:
        if visibility_timeout_ms < 0:
            raise ValueError("visibility_timeout_ms must be >= 0")
        expired = [m for m, (_, at) in self.inflight.items() if at < self.now_ms - visibility_timeout_ms]
        for member in expired:
            item, _ = self.inflight.pop(member)
            self.queued.setdefault(member, dataclasses.replace(item, due_ms=self.now_ms))
        return len(expired)

    async def next_due_in_ms(self) -> int | None:
        if not self.queued:
            return None
        return max(min(item.due_ms for item in self.queued.values()) - self.now_ms, 0)

    async def sizes(self) -> tuple[int, int]:
        return len(self.queued), len(self.inflight)
