"""Consumer meters (default registry). Labels are group, topic and partition names: a fixed, small set.

A labelled counter has no series until its first `labels(...)`; one created by its first `inc()` starts at 1, and
`increase()` sees no change in it: the first dead letter of a pod would never alert. `export_consumer_series`
creates every series a consumer can count, at 0, when the consumer is built.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from payment_domain.topics import dlq_of

kafka_consumer_records_total = Counter(
    "kafka_consumer_records_total",
    "Records handled: ok (handler returned), retried (one in-place retry, any cause), dead_lettered (sent to the DLQ).",
    ["group", "topic", "result"],
)
kafka_consumer_handle_seconds = Histogram(
    "kafka_consumer_handle_seconds",
    "Time one handler call took (each in-place attempt is one observation).",
    ["group", "topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
# The member's own view, of the partitions it holds; the group's lag as the broker sees it (a group with no live
# member included) is the lag exporter's kafka_consumergroup_lag (services/payment_consumers/lag_exporter.py).
kafka_consumer_member_lag = Gauge(
    "kafka_consumer_member_lag",
    "Records behind the partition highwater (highwater - committed), summed over this member's partitions.",
    ["consumergroup", "topic"],
)
kafka_dlq_messages_total = Counter(
    "kafka_dlq_messages_total", "Records published to a dead-letter topic (label: the DLQ topic).", ["topic"]
)
kafka_consumer_rebalances_total = Counter(
    "kafka_consumer_rebalances_total", "Partition assignments received by this member.", ["group"]
)
kafka_consumer_dependency_retries_total = Counter(
    "kafka_consumer_dependency_retries_total",
    "In-place retries of a record whose handler found a dependency unavailable (database, redis, kafka, network).",
    ["group", "topic", "dependency"],
)
# Set as a function of the clock (see RecordProcessor), so a scrape between two retries sees the outage so far.
kafka_consumer_partition_blocked_seconds = Gauge(
    "kafka_consumer_partition_blocked_seconds",
    "Seconds the partition's head record has been waiting for a dependency or for the DLQ (0: flowing).",
    ["group", "topic", "partition"],
)


RECORD_RESULTS = ("ok", "retried", "dead_lettered")


def export_consumer_series(group: str, topics: Iterable[str], dependencies: Iterable[str]) -> None:
    """Create, at 0, the counters a consumer of `topics` in `group` can increment (so the first one is seen)."""
    dependencies = tuple(dependencies)
    for topic in topics:
        for result in RECORD_RESULTS:
            kafka_consumer_records_total.labels(group, topic, result)
        for dependency in dependencies:
            kafka_consumer_dependency_retries_total.labels(group, topic, dependency)
        kafka_dlq_messages_total.labels(dlq_of(topic))
