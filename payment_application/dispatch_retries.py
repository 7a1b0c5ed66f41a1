"""Use case: re-publish due PSP-call retries, at least once.

claim (atomic: due items move to in-flight) → publish the stored envelopes → ack the acknowledged ones. A failed
publish, or a crash anywhere before the ack, leaves the item in flight; it returns to the queue once the
visibility timeout passes, so an item can be published twice but never lost. The PSP-call executor recognises
the duplicate by its attempt (and the deterministic eventId).
"""

from __future__ import annotations

from payment_application.ports.publisher import EventPublisher
from payment_application.ports.retry_queue import ClaimedRetry, RetryQueue
from payment_application.relay_report import RelayReport, split_outcomes


class DispatchRetries:
    def __init__(self, queue: RetryQueue, publisher: EventPublisher) -> None:
        self._queue = queue
        self._publisher = publisher

    async def dispatch_batch(self, *, limit: int) -> RelayReport[ClaimedRetry]:
        """One round, with what happened to each item (for metrics and logs). A failed item stays in flight."""
        claimed = tuple(await self._queue.claim_due(limit))
        if not claimed:
            return RelayReport(limit=limit)
        # If publishing raises (a publisher bug, cancellation) the items simply stay in flight.
        outcomes = await self._publisher.publish_batch([c.message for c in claimed])
        published, failures = split_outcomes(claimed, outcomes)
        if published:
            await self._queue.ack([c.member for c in published])
        return RelayReport(limit=limit, claimed=claimed, published=published, failures=failures, sent=len(published))

    async def reclaim(self, *, visibility_timeout_ms: int) -> int:
        """Put items whose claim expired (a crashed or failed round) back on the queue; returns how many."""
        return await self._queue.reclaim_expired(visibility_timeout_ms)
