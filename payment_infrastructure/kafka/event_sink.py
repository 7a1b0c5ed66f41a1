"""`EventSink` over the shared Kafka publisher: an envelope goes to its event type's topic, keyed by aggregateId."""

from __future__ import annotations

from collections.abc import Sequence

from payment_application.ports.publisher import EventPublisher
from payment_domain.events import AnyEnvelope
from payment_infrastructure.kafka.producer import outbound_message


class KafkaEventSink:
    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher

    async def emit(self, envelope: AnyEnvelope) -> None:
        message = outbound_message(envelope)
        await self._publisher.publish(message.topic, message.key, message.value, message.headers)

    async def emit_batch(self, envelopes: Sequence[AnyEnvelope]) -> list[Exception | None]:
        return await self._publisher.publish_batch([outbound_message(e) for e in envelopes])
