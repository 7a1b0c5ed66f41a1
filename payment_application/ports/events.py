"""Emitting one event to the broker, as a use case sees it (serialization and addressing are the adapter's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from payment_domain.events import AnyEnvelope


class EventSink(Protocol):
    async def emit(self, envelope: AnyEnvelope) -> None:
        """Return once the broker acknowledged it (topic from the event type, key = aggregateId); else raise."""
        ...

    async def emit_batch(self, envelopes: Sequence[AnyEnvelope]) -> list[Exception | None]:
        """Send all, wait for every acknowledgement: one entry per envelope, in order, None when acknowledged,
        else the reason it was not. Never raises for one envelope's failure (as `EventPublisher.publish_batch`)."""
        ...
