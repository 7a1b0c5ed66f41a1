"""Emitting one event to the broker, as a use case sees it (serialization and addressing are the adapter's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from payment_domain.events import EventEnvelope


class EventSink(Protocol):
    async def emit(self, envelope: EventEnvelope) -> None:
        """Return once the broker acknowledged it (topic from the event type, key = aggregateId); else raise."""
        ...

    async def emit_batch(self, envelopes: Sequence[EventEnvelope]) -> list[Exception | None]:
        """Send all, wait for every acknowledgement: one entry per envelope, in order, None when acknowledged,
        else the reason it was not. Never raises for one envelope's failure (as `EventPublisher.publish_batch`)."""
        ...
