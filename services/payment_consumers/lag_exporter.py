"""`python -m services.payment_consumers.lag_exporter`: consumer-group lag from the broker, for Prometheus.

One per Kafka cluster (a single replica: two would double every sum). Every `interval_seconds` it asks the broker
for each of the code's consumer groups (services/payment_consumers/groups.py) the committed offset and the end
offset of every partition of the group's topic, and serves the last reading on /metrics under
prometheus-kafka-exporter's names, so the lag alerts, the dashboard and the `external` autoscaling mode work with
either: `kafka_consumergroup_lag{consumergroup,topic,partition}`, `kafka_consumergroup_current_offset` and
`kafka_topic_partition_current_offset`. Unlike the consumers' own view (`kafka_consumer_member_lag`), a group with
no live member still shows what waits for it. A failed reading keeps the last one served (with
`kafka_lag_exporter_reads_total{result="failed"}` counting and `kafka_lag_exporter_last_read_timestamp_seconds`
standing still); /health/ready fails once the last good reading is older than `stale_after_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence

import structlog
import uvloop
from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from payment_infrastructure.environment import settings_from_environment
from payment_infrastructure.kafka.group_lag import BrokerGroupLag, PartitionLag
from payment_infrastructure.observability.logging import configure_logging
from payment_infrastructure.observability.management import create_management_app
from payment_infrastructure.server import http_server, run_until_stopped
from services.payment_consumers.groups import GROUPS
from services.payment_consumers.settings import ConsumersSettings

log = structlog.get_logger(__name__)

READS = Counter("kafka_lag_exporter_reads_total", "Readings of the consumer groups' lag from the broker", ["result"])
READS_OK, READS_FAILED = READS.labels("ok"), READS.labels("failed")
LAST_READ = Gauge(
    "kafka_lag_exporter_last_read_timestamp_seconds", "When the last good reading of the groups' lag was taken"
)


def code_groups() -> dict[str, tuple[str, ...]]:
    """Every consumer group of payment-consumers and the topic it consumes."""
    return {group: (topic.value,) for group, topic in GROUPS.values()}


class LagCollector(Collector):
    """Serves the last reading as it was (a partition that disappears from the reading disappears from /metrics)."""

    def __init__(self) -> None:
        self.reading: Sequence[PartitionLag] = ()

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "kafka_consumergroup_lag",
            "Records behind the partition's end offset (end - committed, or - log start with no commit), per group",
            labels=["consumergroup", "topic", "partition"],
        )
        committed = GaugeMetricFamily(
            "kafka_consumergroup_current_offset",
            "The group's committed offset on the partition (absent: never committed)",
            labels=["consumergroup", "topic", "partition"],
        )
        ends = GaugeMetricFamily(
            "kafka_topic_partition_current_offset",
            "The partition's end offset (the offset the next record gets)",
            labels=["topic", "partition"],
        )
        seen: set[tuple[str, int]] = set()
        for p in self.reading:
            labels = [p.group, p.topic, str(p.partition)]
            lag.add_metric(labels, p.lag)
            if p.committed is not None:
                committed.add_metric(labels, p.committed)
            if (p.topic, p.partition) not in seen:
                seen.add((p.topic, p.partition))
                ends.add_metric([p.topic, str(p.partition)], p.end)
        yield from (lag, committed, ends)


class LagExporter:
    def __init__(
        self,
        reader: BrokerGroupLag,
        groups: Mapping[str, Sequence[str]],
        *,
        interval_seconds: float,
        stale_after_seconds: float,
    ) -> None:
        self.collector = LagCollector()
        self._reader = reader
        self._groups = groups
        self._interval = interval_seconds
        self._stale_after = stale_after_seconds
        self._read_at: float | None = None

    async def read_once(self) -> None:
        try:
            reading = await self._reader.read(self._groups)
        except Exception as error:  # a broker blip: keep serving the last reading, count it, try again
            READS_FAILED.inc()
            log.warning("consumer_group_lag_read_failed", error_class=type(error).__name__, error=str(error))
            return
        self.collector.reading = reading
        self._read_at = time.monotonic()
        READS_OK.inc()
        LAST_READ.set_to_current_time()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.read_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def fresh(self) -> None:
        """Readiness: a good reading younger than `stale_after_seconds`."""
        if self._read_at is None:
            raise RuntimeError("no reading of the groups' lag yet")
        age = time.monotonic() - self._read_at
        if age > self._stale_after:
            raise RuntimeError(f"the last good reading is {age:.0f} s old")


async def serve(
    settings: ConsumersSettings,
    *,
    groups: Mapping[str, Sequence[str]] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """`groups`: group -> its topics; by default every consumer group of the code."""
    options = settings.lag_exporter
    groups = code_groups() if groups is None else groups
    reader = BrokerGroupLag(settings.kafka, client_id=f"{settings.kafka.client_id}-lag-exporter")
    exporter = LagExporter(
        reader,
        groups,
        interval_seconds=options.interval_seconds,
        stale_after_seconds=options.stale_after_seconds,
    )
    REGISTRY.register(exporter.collector)
    try:
        await reader.start()
        management = http_server(
            create_management_app({"lag_reading": exporter.fresh}), host=options.host, port=options.port
        )
        log.info("lag_exporter_started", groups=sorted(groups), interval_seconds=options.interval_seconds)
        await run_until_stopped([management], [exporter.run], stop=stop)
    finally:
        REGISTRY.unregister(exporter.collector)
        await reader.close()
        log.info("lag_exporter_stopped")


def main() -> None:
    settings = settings_from_environment(ConsumersSettings, deployable="payment-consumers")
    configure_logging(service="payment-lag-exporter", level=settings.logging.level, json=settings.logging.json_output)
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
