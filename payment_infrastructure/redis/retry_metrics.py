"""Retry meters: the original's names (default registry); labels are topic names and outcomes, never ids."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

redis_retry_zset_size = Gauge("redis_retry_zset_size", "Retries waiting in payment_retry_queue (ZCARD).")
redis_retry_inflight_size = Gauge(
    "redis_retry_inflight_size", "Retries claimed but not yet acknowledged (ZCARD of payment_retry_inflight)."
)
redis_retry_events_total = Counter(
    "redis_retry_events_total",
    "Due retries re-published (processed) or not acknowledged (failed).",
    ["result", "topic"],
)
redis_retry_dispatch_batch_seconds = Histogram(
    "redis_retry_dispatch_batch_seconds",
    "One claim → publish → ack round that claimed something.",
    ["topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
redis_retry_batch_size = Gauge("redis_retry_batch_size", "Due retries claimed by the last round.", ["topic"])
redis_retry_reclaimed_total = Counter(
    "redis_retry_reclaimed_total", "In-flight retries whose visibility timeout expired, put back on the queue."
)
redis_retry_dropped_total = Counter(
    "redis_retry_dropped_total", "Claimed retries dropped because their stored payload was missing or unreadable."
)
