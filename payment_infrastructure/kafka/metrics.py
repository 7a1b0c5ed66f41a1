"""Producer meters (default registry). Labels are topic names: a fixed, small set."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from payment_domain.topics import Topic

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

# Every topic's series created at 0 at import (start-up): a series born at 1 by its first inc() is invisible to
# increase() and rate(), so a first failed publish would show nowhere.
for _topic in Topic:
    for _name in (_topic.value, _topic.dlq):
        kafka_messages_published_total.labels(_name)
        kafka_publish_failed_total.labels(_name)
