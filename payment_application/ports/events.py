"""Emitting one event to the broker, as a use case sees it (serialization and addressing are the adapter's)."""

from __future__ import annotations

from typing import Protocol

from payment_domain.events import AnyEnvelope


class EventSink(Protocol):
    async def emit(self, envelope: AnyEnvelope) -> None:
        """Return once the broker acknowledged it (topic from the event type, key = aggregateId); else raise."""
        ...
