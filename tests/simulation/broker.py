"""A simulated Kafka: per-partition logs keyed by paymentOrderId, consumer groups with committed offsets, and a
producer that loses, duplicates, or lands-and-reports-failure while faults are on (at-least-once, like the real one).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from payment_application.ports.publisher import EventHeaders, OutboundMessage
from payment_domain.events import EventEnvelope
from payment_infrastructure.serialization import envelope_from_bytes
from tests.simulation.scheduler import checkpoint

PARTITIONS = 3


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    envelope: EventEnvelope

    @property
    def delivery(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass
class SimBroker:
    random: random.Random
    trace: Callable[[str], None]
    faults: Callable[[], bool]
    logs: dict[tuple[str, int], list[Record]] = field(default_factory=dict)

    def log(self, topic: str, partition: int) -> list[Record]:
        return self.logs.setdefault((topic, partition), [])

    def append(self, envelope: EventEnvelope) -> None:
        topic = envelope.topic.value
        partition = int(envelope.aggregate_id) % PARTITIONS
        log = self.log(topic, partition)
        log.append(Record(topic, partition, len(log), envelope))

    def send(self, envelope: EventEnvelope) -> None:
        """One produce with acks=all: may be lost, duplicated, or land and still report a failure."""
        what = "ok"
        if self.faults():
            what = self.random.choices(["ok", "lost", "landed", "duplicate"], weights=[85, 5, 5, 5])[0]
        name = f"{envelope.event_type.value} of {envelope.aggregate_id} ({envelope.event_id[:8]})"
        if what == "lost":
            self.trace(f"broker lost {name}")
            raise ConnectionError("broker did not acknowledge")
        self.append(envelope)
        if what == "duplicate":
            self.append(envelope)
            self.trace(f"broker wrote {name} twice")
        if what == "landed":
            self.trace(f"broker wrote {name} but the ack timed out")
            raise TimeoutError("produce timed out (the record landed)")


@dataclass
class SimEventSink:
    """EventSink on the simulated broker."""

    broker: SimBroker

    async def emit(self, envelope: EventEnvelope) -> None:
        await checkpoint()
        self.broker.send(envelope)
        await checkpoint()

    async def emit_batch(self, envelopes: Sequence[EventEnvelope]) -> list[Exception | None]:
        await checkpoint()
        outcomes: list[Exception | None] = []
        for envelope in envelopes:
            try:
                self.broker.send(envelope)
            except Exception as error:
                outcomes.append(error)
            else:
                outcomes.append(None)
        await checkpoint()
        return outcomes


@dataclass
class SimPublisher:
    """EventPublisher on the simulated broker (the retry dispatcher's): each message on its own."""

    broker: SimBroker

    async def publish(self, topic: str, key: str, value: bytes, headers: EventHeaders) -> None:
        await checkpoint()
        self.broker.send(envelope_from_bytes(value))

    async def publish_batch(self, messages: Sequence[OutboundMessage]) -> list[Exception | None]:
        await checkpoint()
        outcomes: list[Exception | None] = []
        for message in messages:
            try:
                self.broker.send(envelope_from_bytes(message.value))
            except Exception as error:
                outcomes.append(error)
            else:
                outcomes.append(None)
        await checkpoint()
        return outcomes
