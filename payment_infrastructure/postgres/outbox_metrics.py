"""Outbox meters (the original's names, default registry) and the dispatch observer that feeds them."""

from __future__ import annotations

from datetime import datetime

import structlog
from prometheus_client import Counter, Gauge, Histogram

from payment_application.ports.outbox import OutboxRecord
from payment_application.relay_report import RelayReport

log = structlog.get_logger(__name__)

outbox_dispatched_total = Counter("outbox_dispatched_total", "Outbox rows published and marked sent.")
outbox_dispatch_failed_total = Counter(
    "outbox_dispatch_failed_total", "Outbox rows whose publish failed (released for a retry)."
)
outbox_dispatcher_duration_seconds = Histogram(
    "outbox_dispatcher_duration_seconds",
    "One claim → publish → settle round.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
outbox_event_backlog = Gauge("outbox_event_backlog", "Unsent outbox rows (a COUNT, refreshed on a timer).")
outbox_oldest_pending_age_seconds = Gauge(
    "outbox_oldest_pending_age_seconds", "Age of the oldest unsent outbox row (0 when none)."
)
outbox_lease_conflicts_total = Counter(
    "outbox_lease_conflicts_total", "Rows published under a lease that another dispatcher had taken over."
)
outbox_default_partition_rows = Gauge(
    "outbox_default_partition_rows", "Rows found in the DEFAULT partition at the last maintenance run."
)
outbox_maintenance_failed_total = Counter(
    "outbox_maintenance_failed_total", "Partition maintenance runs that failed (retried at the next tick)."
)
outbox_maintenance_deferred_total = Counter(
    "outbox_maintenance_deferred_total",
    "Partition maintenance steps left to the next run so as not to hold up writers: a lock was busy, or the step "
    "could not finish within the time it may hold one.",
    ["step", "reason"],
)


def record_pending(count: int, oldest_created_at: datetime | None, *, now: datetime) -> None:
    outbox_event_backlog.set(count)
    age = 0.0 if oldest_created_at is None else max((now - oldest_created_at).total_seconds(), 0.0)
    outbox_oldest_pending_age_seconds.set(age)


class PrometheusDispatchObserver:
    """`OutboxDispatchObserver`: metrics per round, a log line per failure with the ids needed to follow it."""

    def batch_done(self, report: RelayReport[OutboxRecord], seconds: float) -> None:
        if not report.claimed:
            return
        outbox_dispatcher_duration_seconds.observe(seconds)
        outbox_dispatched_total.inc(report.sent)
        if report.lease_conflicts:
            outbox_lease_conflicts_total.inc(report.lease_conflicts)
            log.warning("outbox_lease_conflicts", rows=report.lease_conflicts)
        if report.failures:
            outbox_dispatch_failed_total.inc(len(report.failures))
            first = report.failures[0]
            log.warning(
                "outbox_publish_failed",
                rows=len(report.failures),
                released=report.released,
                event_id=first.item.event_id,
                aggregate_id=first.item.aggregate_id,
                topic=first.item.topic,
                attempts=first.item.publish_attempts,
                error=repr(first.error),
            )

    def batch_failed(self, error: Exception, seconds: float) -> None:
        outbox_dispatcher_duration_seconds.observe(seconds)
        log.error("outbox_dispatch_round_failed", error=repr(error), exc_info=error)
