"""Use case: re-publish due PSP-call retries, at least once.

claim (atomic: due items move to in-flight) → publish the stored envelopes → ack the acknowledged ones. A failed
publish, or a crash anywhere before the ack, leaves the item in flight; it returns to the queue once the
visibility timeout passes, so an item can be published twice but never lost. The PSP-call executor recognises
the duplicate by its attempt (and the deterministic eventId).
"""

from __future__ import annotations

from dataclasses import dataclass

from payment_application.ports.publisher import EventPublisher
from payment_application.ports.retry_queue import ClaimedRetry, RetryQueue


@dataclass(frozen=True, slots=True)
class RetryPublishFailure:
    retry: ClaimedRetry
    error: Exception


@dataclass(frozen=True, slots=True)
class RetryDispatchReport:
    limit: int
    claimed: tuple[ClaimedRetry, ...] = ()
    published: tuple[ClaimedRetry, ...] = ()
    failures: tuple[RetryPublishFailure, ...] = ()

    @property
    def full(self) -> bool:
        """The round claimed as many as it could: more may be due already."""
        return len(self.claimed) >= self.limit


class DispatchRetries:
    def __init__(self, queue: RetryQueue, publisher: EventPublisher) -> None:
        self._queue = queue
        self._publisher = publisher

    async def dispatch_batch(self, *, limit: int) -> RetryDispatchReport:
        """One round, with what happened to each item (for metrics and logs)."""
        claimed = tuple(await self._queue.claim_due(limit))
        if not claimed:
            return RetryDispatchReport(limit=limit)
        # If publishing raises (a publisher bug, cancellation) the items simply stay in flight.
        outcomes = await self._publisher.publish_batch([c.message for c in claimed])
        published = tuple(c for c, error in zip(claimed, outcomes, strict=True) if error is None)
        failures = tuple(
            RetryPublishFailure(retry=c, error=error)
            for c, error in zip(claimed, outcomes, strict=True)
            if error is not None
        )
        if published:
            await self._queue.ack([c.member for c in published])
        return RetryDispatchReport(limit=limit, claimed=claimed, published=published, failures=failures)

    async def dispatch_once(self, *, limit: int) -> int:
        """One round; returns how many items were published and acknowledged."""
        return len((await self.dispatch_batch(limit=limit)).published)

    async def reclaim(self, *, visibility_timeout_ms: int) -> int:
        """Put items whose claim expired (a crashed or failed round) back on the queue; returns how many."""
        return await self._queue.reclaim_expired(visibility_timeout_ms)
