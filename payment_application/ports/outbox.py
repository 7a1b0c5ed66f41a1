"""The transactional outbox as the dispatcher sees it: claim rows under a lease, then settle the claim.

A lease (token + expiry) replaces the original's PROCESSING status: a crashed dispatcher's rows come back by
themselves when the lease expires, and a dispatcher whose lease was taken over can no longer touch the rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from payment_application.relay_report import RelayReport


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One committed event waiting to be published; `payload` is the envelope JSON, published as-is; `traceparent`:
    the W3C trace context of the work that wrote it, if any (its publish continues that trace)."""

    id: int
    created_at: datetime
    event_id: str
    event_type: str
    topic: str
    aggregate_id: str
    trace_id: str
    parent_event_id: str
    payload: bytes
    publish_attempts: int
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxClaim:
    lease_token: uuid.UUID
    records: Sequence[OutboxRecord]


class OutboxStore(Protocol):
    async def claim(self, *, lease_token: uuid.UUID, limit: int, lease_seconds: float) -> OutboxClaim:
        """Lease up to `limit` publishable rows, oldest first, in a short transaction.

        Publishable: not yet sent, not under a live lease, and the oldest unsent row of its aggregate, so two
        events of one payment order are never in flight together and go out in the order they were written.
        """
        ...

    async def mark_sent(self, lease_token: uuid.UUID, records: Sequence[OutboxRecord]) -> int:
        """Mark the rows sent where the lease is still ours; return how many were."""
        ...

    async def release(self, lease_token: uuid.UUID, records: Sequence[OutboxRecord]) -> int:
        """Give back rows we could not publish, where the lease is still ours; return how many were."""
        ...


class NewOutboxRowSignal(Protocol):
    """Wakes an idle dispatcher when rows are committed (Postgres NOTIFY); a hint, never a guarantee."""

    def reset(self) -> None:
        """Forget wake-ups seen so far; called right before a claim, so none that follows it is lost."""
        ...

    async def wait(self, max_seconds: float) -> bool:
        """Return True when woken, False when `max_seconds` passed first."""
        ...


class OutboxDispatchObserver(Protocol):
    """Where the dispatch loop reports its work (metrics, logs); it must not raise."""

    def batch_done(self, report: RelayReport[OutboxRecord], seconds: float) -> None: ...

    def batch_failed(self, error: Exception, seconds: float) -> None: ...
