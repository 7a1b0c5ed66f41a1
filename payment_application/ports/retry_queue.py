"""The delayed queue of PSP-call retries, as the use cases see it.

An item is one "call the PSP again for attempt n" envelope. Its member is deterministic per (paymentOrderId,
attempt), so a re-derived schedule of the same attempt collapses into the item already queued or in flight
(the original keyed items by the whole envelope JSON with a random eventId, so one attempt could be queued twice).
A claimed item stays in an in-flight set until acknowledged; an item nobody acknowledges within the visibility
timeout goes back to the queue, so a dispatcher crash between claim and publish loses nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from payment_application.ports.publisher import OutboundMessage
from payment_domain.events import EventEnvelope, PspCallRequested


def retry_member(envelope: EventEnvelope[PspCallRequested]) -> str:
    """`<paymentOrderId>:<attempt>`: the same attempt of the same order is always the same member."""
    return f"{envelope.aggregate_id}:{envelope.payload.attempt}"


@dataclass(frozen=True, slots=True)
class ClaimedRetry:
    """A due item moved to in-flight: publish `message` (the stored envelope, byte for byte), then ack `member`."""

    member: str
    message: OutboundMessage


class RetryQueue(Protocol):
    async def schedule(self, envelope: EventEnvelope[PspCallRequested], *, delay_ms: int) -> bool:
        """Queue the PSP call request, due `delay_ms` from now. True if newly queued; ValueError for another kind.

        A member already queued keeps its due time and payload (a duplicate never pushes a retry back); a member
        in flight is not queued again.
        """
        ...

    async def claim_due(self, limit: int) -> list[ClaimedRetry]:
        """Atomically move up to `limit` due items, earliest first, from the queue to in-flight."""
        ...

    async def ack(self, members: Sequence[str]) -> None:
        """The items were published: forget them (in-flight entry, any re-queued copy, payload)."""
        ...

    async def reclaim_expired(self, visibility_timeout_ms: int) -> int:
        """Put items in flight for longer than the timeout back on the queue, due now. Returns how many."""
        ...

    async def next_due_in_ms(self) -> int | None:
        """Milliseconds until the earliest queued item is due (0 if one is due already); None if the queue is empty."""
        ...

    async def sizes(self) -> tuple[int, int]:
        """(queued, in flight)."""
        ...
