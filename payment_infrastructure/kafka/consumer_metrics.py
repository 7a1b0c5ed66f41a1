"""Consumer meters (default registry). Labels are group, topic and partition names: a fixed, small set."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
# Same name and labels as prometheus-kafka-exporter, so the lag autoscaling rule works with either source.
kafka_consumergroup_lag = Gauge(
    "kafka_consumergroup_lag",
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
