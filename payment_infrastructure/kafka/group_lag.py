"""Consumer-group lag as the broker sees it: each partition's end offset minus the group's committed offset.

The consumers report their own lag too, but only for the partitions a live member holds: a group whose members
all died, or never started, reports nothing, and the lag alerts and autoscaling would see an idle pipeline. This
reader asks the broker (the group coordinator's committed offsets, the partition leaders' end offsets), so a group
with no member still shows the records waiting for it. A partition the group never committed on counts from the
log's start offset: with `auto_offset_reset=earliest` that is where its first member will begin.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from payment_infrastructure.kafka.security import client_security
from payment_infrastructure.kafka.settings import KafkaSettings


@dataclass(frozen=True, slots=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group never committed on this partition
    end: int
    lag: int


def partition_lags(
    group: str,
    topics: Iterable[str],
    committed: Mapping[tuple[str, int], int],
    starts: Mapping[tuple[str, int], int],
    ends: Mapping[tuple[str, int], int],
) -> list[PartitionLag]:
    """The lag of `group` on every partition of `topics` the broker knows (a negative committed offset is none)."""
    wanted = set(topics)
    lags = []
    for (topic, partition), end in sorted(ends.items()):
        if topic not in wanted:
            continue
        offset = committed.get((topic, partition))
        if offset is not None and offset < 0:
            offset = None
        start = starts.get((topic, partition), 0)
        position = start if offset is None else max(offset, start)
        lags.append(PartitionLag(group, topic, partition, offset, end, max(end - position, 0)))
    return lags


class BrokerGroupLag:
    """Reads the lag of named groups on named topics; one admin client and one group-less consumer, kept open."""

    def __init__(self, settings: KafkaSettings, *, client_id: str) -> None:
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=client_id,
            request_timeout_ms=settings.request_timeout_ms,
            **client_security(settings),
        )
        self._offsets = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=settings.request_timeout_ms,
            metadata_max_age_ms=settings.metadata_max_age_ms,
            **client_security(settings),
        )

    async def start(self) -> None:
        await self._admin.start()
        await self._offsets.start()

    async def close(self) -> None:
        await self._offsets.stop()
        await self._admin.close()

    async def read(self, groups: Mapping[str, Iterable[str]]) -> list[PartitionLag]:
        """`groups`: group -> the topics it consumes. Raises what the broker raised (the caller keeps its last)."""
        topics = sorted({topic for wanted in groups.values() for topic in wanted})
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(self._offsets.partitions_for_topic(topic) or await self._partitions_of(topic))
        ]
        if not partitions:
            return []
        ends = {
            (tp.topic, tp.partition): offset for tp, offset in (await self._offsets.end_offsets(partitions)).items()
        }
        starts = {
            (tp.topic, tp.partition): offset
            for tp, offset in (await self._offsets.beginning_offsets(partitions)).items()
        }
        lags: list[PartitionLag] = []
        for group, wanted in sorted(groups.items()):
            offsets = await self._admin.list_consumer_group_offsets(group)
            committed = {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
            lags.extend(partition_lags(group, wanted, committed, starts, ends))
        return lags

    async def _partitions_of(self, topic: str) -> set[int]:
        """A topic the consumer has no metadata for yet: ask for it (an unknown topic has no partitions)."""
        described = await self._admin.describe_topics([topic])
        return {p["partition"] for d in described if d.get("error_code", 0) == 0 for p in d["partitions"]}
