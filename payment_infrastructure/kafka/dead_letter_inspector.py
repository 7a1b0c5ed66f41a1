"""Reading and replaying dead letters (behind the `payments dlq` CLI).

Reads are group-less (nothing is committed anywhere) and stop at the highwater each partition's fetch reports,
bounded by a deadline: ListOffsets is not trusted (the dev broker answers it unreliably), and nothing is
written to a DLQ to mark its end. A replay re-publishes the original value, key and headers (the dead-letter
headers stripped) to the original topic and partition; consumers are idempotent, so replaying twice is safe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from payment_infrastructure.kafka.dead_letter_format import DeadLetter, Replayed, TopicNotFound, is_dlq
from payment_infrastructure.kafka.producer import build_producer
from payment_infrastructure.kafka.records import ConsumedRecord, consumed_record
from payment_infrastructure.kafka.security import client_security
from payment_infrastructure.kafka.settings import KafkaSettings


class DeadLetterInspector:
    def __init__(self, settings: KafkaSettings, *, within: float = 10.0) -> None:
        self._settings = settings
        self._within = within

    async def counts(self, topics: Iterable[str] | None = None) -> dict[str, int]:
        """Messages per DLQ topic (every `.DLQ` topic on the broker unless `topics` is given)."""
        async with _Reader(self._settings, self._within) as reader:
            names = sorted(topics) if topics is not None else sorted(t for t in reader.topics() if is_dlq(t))
            counts = dict.fromkeys(names, 0)
            for record in await reader.read(reader.partitions(names)):
                counts[record.topic] += 1
            return counts

    async def records(self, topic: str) -> list[ConsumedRecord]:
        """Every record of any topic, up to its end (for operators looking at the business topics too)."""
        async with _Reader(self._settings, self._within) as reader:
            return await reader.read(reader.partitions([topic]))

    async def letters(self, topic: str) -> list[DeadLetter]:
        async with _Reader(self._settings, self._within) as reader:
            return [DeadLetter(r) for r in await reader.read(reader.partitions([topic]))]

    async def letter(self, topic: str, partition: int, offset: int) -> DeadLetter | None:
        async with _Reader(self._settings, self._within) as reader:
            tps = reader.partitions([topic])
            tp = TopicPartition(topic, partition)
            if tp not in tps:
                raise TopicNotFound(f"{topic} has no partition {partition}")
            records = await reader.read([tp], start=offset, enough=lambda rs: any(r.offset >= offset for r in rs))
            return next((DeadLetter(r) for r in records if r.offset == offset), None)

    async def replay(self, letters: Sequence[DeadLetter]) -> list[Replayed]:
        """To the original topic and partition (default partitioning by key if that partition is gone)."""
        async with _Reader(self._settings, self._within) as reader:
            layout = {topic: set(reader.partitions_of(topic)) for topic in {ltr.original_topic for ltr in letters}}
        producer = build_producer(self._settings, client_id=f"{self._settings.client_id}-dlq-replay")
        await producer.start()
        try:
            replayed = []
            for letter in letters:
                topic = letter.original_topic
                partition = letter.original_partition if letter.original_partition in layout[topic] else None
                metadata = await producer.send_and_wait(
                    topic,
                    letter.record.value,
                    key=letter.record.key_bytes,
                    partition=partition,
                    headers=letter.original_headers(),
                )
                replayed.append(Replayed(letter, topic, metadata.partition, metadata.offset))
            return replayed
        finally:
            await producer.stop()


class _Reader:
    """One group-less consumer: whole partitions, from an offset up to the highwater its fetches report."""

    def __init__(self, settings: KafkaSettings, within: float) -> None:
        self._settings = settings
        self._within = within
        self._layout: dict[str, list[int]] = {}
        self._started = False
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=f"{settings.client_id}-dlq-reader",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=settings.request_timeout_ms,
            fetch_max_wait_ms=100,
            **client_security(settings),
        )

    async def __aenter__(self) -> _Reader:
        # Described all at once: naming a topic in a metadata request creates it on a broker that
        # auto-creates topics (the dev broker does), and a typo must not leave a topic behind.
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._settings.bootstrap_servers,
            client_id=f"{self._settings.client_id}-dlq-reader",
            request_timeout_ms=self._settings.request_timeout_ms,
            **client_security(self._settings),
        )
        await admin.start()
        try:
            described = await admin.describe_topics()
        finally:
            await admin.close()
        self._layout = {t["topic"]: sorted(p["partition"] for p in t["partitions"]) for t in described}
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._started:
            await self._consumer.stop()

    async def _start(self) -> None:
        if not self._started:
            await self._consumer.start()
            self._started = True
            # aiokafka's group-less consumer raises CancelledError from stop() if its background task was
            # cancelled before it ever ran: give it one turn of the loop.
            await asyncio.sleep(0)

    def topics(self) -> set[str]:
        return set(self._layout)

    def partitions_of(self, topic: str) -> list[int]:
        if topic not in self._layout:
            raise TopicNotFound(f"no topic {topic} on the broker")
        return self._layout[topic]

    def partitions(self, topics: Iterable[str]) -> list[TopicPartition]:
        return [TopicPartition(topic, partition) for topic in topics for partition in self.partitions_of(topic)]

    async def read(
        self,
        tps: Sequence[TopicPartition],
        *,
        start: int = 0,
        enough: Callable[[list[ConsumedRecord]], bool] | None = None,
    ) -> list[ConsumedRecord]:
        """Records from `start` (0: the beginning; an offset below the log start resets to it) to the highwater."""
        if not tps:
            return []
        await self._start()
        consumer = self._consumer
        consumer.assign(list(tps))
        for tp in tps:
            consumer.seek(tp, start)
        records: list[ConsumedRecord] = []
        pending = set(tps)
        deadline = time.monotonic() + self._within
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"did not reach the end of {_names(pending)} within {self._within}s")
            batch = await consumer.getmany(*pending, timeout_ms=200)
            for raw_records in batch.values():
                records.extend(consumed_record(raw) for raw in raw_records)
            if enough is not None and enough(records):
                break
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                if highwater is not None and await consumer.position(tp) >= highwater:
                    pending.discard(tp)
        records.sort(key=lambda r: (r.topic, r.partition, r.offset))
        return records


def _names(tps: Iterable[TopicPartition]) -> str:
    return ", ".join(sorted(f"{tp.topic}:{tp.partition}" for tp in tps))
