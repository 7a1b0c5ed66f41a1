"""Publishing events to the message broker, as the use cases see it (no broker types leak through)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from payment_domain.events import AnyEnvelope


@dataclass(frozen=True, slots=True)
class EventHeaders:
    """The original's message headers, so a consumer can route and trace without parsing the value; `traceparent`:
    the W3C trace context the publish continues (None: the publisher's current one, if any)."""

    event_id: str
    event_type: str
    trace_id: str
    parent_event_id: str
    aggregate_id: str
    traceparent: str | None = None

    @classmethod
    def of(cls, envelope: AnyEnvelope) -> EventHeaders:
        return cls(
            event_id=envelope.event_id,
            event_type=envelope.event_type.value,
            trace_id=envelope.trace_id,
            parent_event_id=envelope.parent_event_id,
            aggregate_id=envelope.aggregate_id,
        )


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One message: the key is the paymentOrderId on every topic (per-order ordering)."""

    topic: str
    key: str
    value: bytes
    headers: EventHeaders


class EventPublisher(Protocol):
    async def publish(self, topic: str, key: str, value: bytes, headers: EventHeaders) -> None:
        """Return once the broker acknowledged the message; raise if it did not."""
        ...

    async def publish_batch(self, messages: Sequence[OutboundMessage]) -> list[Exception | None]:
        """Send all, wait for every acknowledgement (bounded by the delivery timeout).

        Returns one entry per message, in order: None when acknowledged, else the reason it was not. Never raises
        for a message's failure, so a caller can settle the successes and retry only the failures.
        """
        ...
