"""Producer meters (default registry). Labels are topic names: a fixed, small set."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

kafka_messages_published_total = Counter(
    "kafka_messages_published_total", "Messages acknowledged by the broker.", ["topic"]
)
kafka_publish_failed_total = Counter(
    "kafka_publish_failed_total", "Messages the broker did not acknowledge in time or rejected.", ["topic"]
)
kafka_publish_batch_seconds = Histogram(
    "kafka_publish_batch_seconds",
    "Time from the first send of a batch to its last acknowledgement.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
