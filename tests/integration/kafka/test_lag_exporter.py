"""The lag exporter against a real broker: each group's lag per partition is the end offset minus what the group
committed (from the log start when it never committed), read from the broker, so a group with no live member still
shows what waits for it; the process serves it on /metrics under prometheus-kafka-exporter's names and keeps the
last reading when the broker cannot answer."""

from __future__ import annotations

import asyncio

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import REGISTRY

from devstack.process import free_port
from payment_infrastructure.kafka.group_lag import BrokerGroupLag, PartitionLag, partition_lags
from payment_infrastructure.kafka.settings import KafkaSettings
from services.payment_consumers.groups import GROUPS
from services.payment_consumers.lag_exporter import LagExporter, code_groups, serve
from services.payment_consumers.settings import ConsumersSettings
from tests.fixtures.broker import TopicReader, unique_topic
from tests.fixtures.ports import wait_until
from tests.integration.kafka.consumer_support import produce


async def commit(bootstrap_servers: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit as a group's member would, without joining it (the group keeps no live member)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()})
    finally:
        await consumer.stop()


def test_lag_counts_from_the_commit_or_from_the_log_start_and_never_below_zero() -> None:
    ends = {("t", 0): 10, ("t", 1): 7, ("t", 2): 5, ("other", 0): 99}
    starts = {("t", 0): 0, ("t", 1): 3, ("t", 2): 0}
    committed = {("t", 0): 4, ("t", 1): -1, ("t", 2): 6}
    assert partition_lags("g", ["t"], committed, starts, ends) == [
        PartitionLag("g", "t", 0, 4, 10, 6),
        PartitionLag("g", "t", 1, None, 7, 4),  # never committed: from the log start (retention deleted 0-2)
        PartitionLag("g", "t", 2, 6, 5, 0),
    ]


async def test_a_group_with_no_live_member_shows_its_lag_per_partition(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    topic = await topic_reader.create(unique_topic("lag"), partitions=2)
    await produce(kafka_settings.bootstrap_servers, topic, [(p, None, b"x") for p in (0, 1) for _ in range(5)])
    behind, unborn = unique_topic("behind-group"), unique_topic("unborn-group")
    await commit(kafka_settings.bootstrap_servers, behind, {TopicPartition(topic, 0): 2, TopicPartition(topic, 1): 5})
    reader = BrokerGroupLag(kafka_settings, client_id="lag-test")
    await reader.start()
    try:
        lags = await reader.read({behind: [topic], unborn: [topic]})
    finally:
        await reader.close()
    assert {(p.group, p.partition): (p.committed, p.end, p.lag) for p in lags} == {
        (behind, 0): (2, 5, 3),
        (behind, 1): (5, 5, 0),
        (unborn, 0): (None, 5, 5),  # never committed: all of it waits
        (unborn, 1): (None, 5, 5),
    }


class FailingReader:
    def __init__(self) -> None:
        self.failing = False
        self.reading = [PartitionLag("g", "t", 0, 1, 4, 3)]

    async def read(self, _groups: object) -> list[PartitionLag]:
        if self.failing:
            raise ConnectionError("broker gone")
        return self.reading


async def test_a_failed_reading_keeps_the_last_one_served_and_is_counted() -> None:
    reader = FailingReader()
    exporter = LagExporter(reader, {"g": ["t"]}, interval_seconds=1, stale_after_seconds=2)  # type: ignore[arg-type]
    failed = REGISTRY.get_sample_value("kafka_lag_exporter_reads_total", {"result": "failed"}) or 0
    await exporter.read_once()
    await exporter.fresh()
    reader.failing = True
    await exporter.read_once()
    assert exporter.collector.reading == reader.reading
    assert REGISTRY.get_sample_value("kafka_lag_exporter_reads_total", {"result": "failed"}) == failed + 1


def test_the_code_groups_are_every_consumer_group_with_its_topic() -> None:
    assert code_groups() == {group: (topic.value,) for group, topic in GROUPS.values()}
    assert len(code_groups()) == len(GROUPS)


async def test_the_process_serves_each_groups_lag_per_partition_on_metrics(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    topic = await topic_reader.create(unique_topic("served"), partitions=2)
    group = unique_topic("served-group")
    await produce(kafka_settings.bootstrap_servers, topic, [(0, None, b"x"), (1, None, b"y"), (1, None, b"z")])
    port = free_port()
    settings = ConsumersSettings.model_validate(
        {
            "kafka": {"bootstrap_servers": kafka_settings.bootstrap_servers, "request_timeout_ms": 5_000},
            "lag_exporter": {"port": port, "interval_seconds": 0.2, "stale_after_seconds": 5},
        }
    )
    stop = asyncio.Event()
    process = asyncio.create_task(serve(settings, groups={group: [topic]}, stop=stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def served(lag: dict[str, float]) -> bool:
                try:
                    text = (await client.get("/metrics")).text
                except httpx.TransportError:
                    return False
                prefix = f'kafka_consumergroup_lag{{consumergroup="{group}",partition="'
                served = {
                    line[len(prefix) :].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith(prefix)
                }
                return served == lag

            await wait_until(lambda: served({"0": 1, "1": 2}), timeout=20, what="the lag served")
            await commit(kafka_settings.bootstrap_servers, group, {TopicPartition(topic, 1): 2})
            await wait_until(lambda: served({"0": 1, "1": 0}), timeout=20, what="the commit seen")
            assert (await client.get("/health/ready")).status_code == 200
            metrics = (await client.get("/metrics")).text
            assert f'kafka_topic_partition_current_offset{{partition="1",topic="{topic}"}} 2.0' in metrics
            assert (
                f'kafka_consumergroup_current_offset{{consumergroup="{group}",partition="1",topic="{topic}"}} 2.0'
                in metrics
            )
            assert 'kafka_lag_exporter_reads_total{result="ok"}' in metrics
    finally:
        stop.set()
        await process
