"""Hand-written fakes of the retry ports (queue, publisher) and a builder of retry envelopes.

FakeRetryQueue follows the same rules as the Redis one, on a clock the test moves (`now_ms`): a member is
`<paymentOrderId>:<attempt>`, a duplicate keeps the first due time, a member in flight is not re-queued, ack
forgets a member everywhere, reclaim returns claims older than the timeout, due now.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from payment_application.ports.publisher import EventHeaders, OutboundMessage
from payment_application.ports.retry_queue import ClaimedRetry, retry_member
from payment_domain.events import EventEnvelope, EventType


def retry_envelope(payment_order_id: int | str, attempt: int, *, trace_id: str = "trace-retry") -> EventEnvelope:
    """A PSP-call-requested envelope for `attempt` of one order, as the result applier would queue it."""
    order = str(payment_order_id)
    return EventEnvelope.create(
        event_type=EventType.PSP_CALL_REQUESTED,
        aggregate_id=order,
        data={
            "paymentOrderId": order,
            "publicPaymentOrderId": f"paymentorder-{order}",
            "status": "FAILED_TRANSIENT_ERROR",
            "retryCount": attempt,
            "retryReason": "PSP_UNAVAILABLE",
            "amountValue": 1250,
            "currency": "EUR",
        },
        timestamp=datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
        trace_id=trace_id,
        id_parts=(order, attempt),
        parent_event_id=f"parent-{order}-{attempt}",
    )


def message_of(envelope: EventEnvelope) -> OutboundMessage:
    return OutboundMessage(
        topic=envelope.topic.value,
        key=envelope.aggregate_id,
        value=json.dumps(envelope.to_wire()).encode(),
        headers=EventHeaders.of(envelope),
    )


class FakeRetryQueue:
    def __init__(self, now_ms: int = 1_000_000) -> None:
        self.now_ms = now_ms
        self.queued: dict[str, int] = {}
        self.inflight: dict[str, int] = {}
        self.payloads: dict[str, OutboundMessage] = {}
        self.acked: list[str] = []
        self.claim_failures: list[Exception] = []

    async def schedule(self, envelope: EventEnvelope, *, delay_ms: int) -> bool:
        member = retry_member(envelope)
        if member in self.inflight or member in self.queued:
            return False
        self.queued[member] = self.now_ms + delay_ms
        self.payloads[member] = message_of(envelope)
        return True

    async def claim_due(self, limit: int) -> list[ClaimedRetry]:
        if self.claim_failures:
            raise self.claim_failures.pop(0)
        due = sorted((at, m) for m, at in self.queued.items() if at <= self.now_ms)[:limit]
        claimed = []
        for _, member in due:
            del self.queued[member]
            self.inflight[member] = self.now_ms
            claimed.append(ClaimedRetry(member=member, message=self.payloads[member]))
        return claimed

    async def ack(self, members: Sequence[str]) -> None:
        for member in members:
            self.acked.append(member)
            self.inflight.pop(member, None)
            self.queued.pop(member, None)
            self.payloads.pop(member, None)

    async def reclaim_expired(self, visibility_timeout_ms: int) -> int:
        expired = [m for m, at in self.inflight.items() if at < self.now_ms - visibility_timeout_ms]
        for member in expired:
            del self.inflight[member]
            self.queued.setdefault(member, self.now_ms)
        return len(expired)

    async def next_due_in_ms(self) -> int | None:
        if not self.queued:
            return None
        return max(min(self.queued.values()) - self.now_ms, 0)

    async def sizes(self) -> tuple[int, int]:
        return len(self.queued), len(self.inflight)


class FakeRetryPublisher:
    """Records what it publishes; keys in `failing_keys` are not acknowledged; `raises` makes a batch blow up."""

    def __init__(self) -> None:
        self.published: list[OutboundMessage] = []
        self.batches: list[list[OutboundMessage]] = []
        self.failing_keys: set[str] = set()
        self.raises: BaseException | None = None

    async def publish(self, topic: str, key: str, value: bytes, headers: EventHeaders) -> None:
        [outcome] = await self.publish_batch([OutboundMessage(topic, key, value, headers)])
        if outcome is not None:
            raise outcome

    async def publish_batch(self, messages: Sequence[OutboundMessage]) -> list[Exception | None]:
        self.batches.append(list(messages))
        if self.raises is not None:
            raise self.raises
        outcomes: list[Exception | None] = []
        for message in messages:
            if message.key in self.failing_keys:
                outcomes.append(ConnectionError(f"broker unavailable for key {message.key}"))
            else:
                self.published.append(message)
                outcomes.append(None)
        return outcomes
