"""`python -m services.payment_service.dispatcher`: the outbox dispatcher process.

Start-up: topics (idempotent; the dev broker forgets them on restart), outbox partitions, then the dispatch loop
(claim → publish → settle, woken by LISTEN outbox_event_new), partition maintenance and the backlog gauges on
timers, and a management server (/health/live, /health/ready, /metrics) on
PAYMENTS_OUTBOX__DISPATCHER_METRICS_PORT (default 9002). SIGTERM: each worker finishes
its batch (bounded by the Kafka delivery timeout), then the producer flushes and the process exits 0.
Several dispatchers may run side by side; leases keep them off each other's rows.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import structlog
import uvloop
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.dispatch_outbox import DispatchOutbox
from payment_application.ports.clock import Clock
from payment_infrastructure.clock import SystemClock
from payment_infrastructure.kafka.admin import ensure_topics
from payment_infrastructure.kafka.producer import KafkaEventPublisher
from payment_infrastructure.observability.logging import configure_logging
from payment_infrastructure.observability.management import create_management_app
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.outbox_metrics import (
    PrometheusDispatchObserver,
    outbox_default_partition_rows,
    outbox_maintenance_failed_total,
    record_pending,
)
from payment_infrastructure.postgres.outbox_notifications import PostgresOutboxNotifications
from payment_infrastructure.postgres.outbox_partitions import (
    ensure_outbox_partitions,
    hold_for_creates,
    prune_outbox_partitions,
    relocate_default_partition_rows,
)
from payment_infrastructure.postgres.outbox_settings import check_lease_outlives_delivery
from payment_infrastructure.postgres.outbox_store import PostgresOutboxStore
from payment_infrastructure.runtime.pacing import Pacing, Worker, every
from payment_infrastructure.server import http_server, run_until_stopped
from services.payment_service.outbox_relay import outbox_relay
from services.payment_service.settings import ServiceSettings

log = structlog.get_logger(__name__)


@dataclass
class OutboxDispatcher:
    """The dispatcher's composition root: every concrete adapter it runs with."""

    settings: ServiceSettings
    clock: Clock
    engine: AsyncEngine
    store: PostgresOutboxStore
    publisher: KafkaEventPublisher
    notifications: PostgresOutboxNotifications
    relay: Worker

    async def maintain_partitions(self) -> None:
        outbox = self.settings.outbox
        try:
            locks = {
                "lock_timeout_ms": outbox.maintenance_lock_timeout_ms,
                "hold_ms": hold_for_creates(self.settings.db.lock_timeout_ms),
            }
            now = self.clock.now()
            await ensure_outbox_partitions(self.engine, now=now, windows_ahead=outbox.windows_ahead, **locks)
            report = await relocate_default_partition_rows(self.engine, now=now, **locks)
            outbox_default_partition_rows.set(report.rows_found)
            await prune_outbox_partitions(
                self.engine, now=now, retention=timedelta(hours=outbox.retention_hours), **locks
            )
        except Exception:
            outbox_maintenance_failed_total.inc()
            raise

    async def refresh_backlog(self) -> None:
        stats = await self.store.pending_stats()
        record_pending(stats.count, stats.oldest_created_at, now=self.clock.now())

    async def run(self, stop: asyncio.Event) -> None:
        outbox = self.settings.outbox
        await ensure_topics(self.settings.kafka)
        try:
            await self.maintain_partitions()
        except Exception:
            # Not fatal: the DEFAULT partition takes every row meanwhile, and the timer below tries again.
            log.exception("outbox_partition_maintenance_failed_at_start")
        await self.publisher.start()
        try:
            await self.notifications.start()
            timers = [
                every("outbox-partition-maintenance", outbox.maintenance_interval_seconds, self.maintain_partitions),
                every("outbox-backlog", outbox.metrics_refresh_seconds, self.refresh_backlog),
            ]
            timer_tasks = [asyncio.create_task(timer(stop)) for timer in timers]
            log.info("outbox_dispatcher_started", workers=outbox.workers, batch_size=outbox.batch_size)
            try:
                await self.relay(stop)
            finally:
                stop.set()
                await asyncio.gather(*timer_tasks, return_exceptions=True)
        finally:
            await self.notifications.stop()
            await self.publisher.stop()
            log.info("outbox_dispatcher_stopped")

    async def check_database(self) -> None:
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def close(self) -> None:
        await self.engine.dispose()


def build_dispatcher(
    settings: ServiceSettings, *, clock: Clock | None = None, publisher: KafkaEventPublisher | None = None
) -> OutboxDispatcher:
    """`publisher` replaces the Kafka publisher (e.g. a decorated one); it is started and stopped here."""
    check_lease_outlives_delivery(settings.outbox, settings.kafka.delivery_timeout_seconds)
    outbox = settings.outbox
    engine = create_engine(settings.db, application_name="payment-outbox-dispatcher")
    store = PostgresOutboxStore(engine)
    publisher = publisher or KafkaEventPublisher.from_settings(
        settings.kafka, client_id=f"{settings.kafka.client_id}-outbox"
    )
    notifications = PostgresOutboxNotifications(settings.db.url, channel=outbox.notify_channel)
    relay = outbox_relay(
        DispatchOutbox(store, publisher, batch_size=outbox.batch_size, lease_seconds=outbox.lease_seconds),
        notifications,
        PrometheusDispatchObserver(),
        Pacing(
            idle_min=outbox.idle_min_wait_seconds,
            idle_max=max(outbox.idle_max_wait_seconds, outbox.idle_min_wait_seconds),
            failure_min=outbox.failure_min_backoff_seconds,
            failure_max=max(outbox.failure_max_backoff_seconds, outbox.failure_min_backoff_seconds),
        ),
        workers=outbox.workers,
    )
    return OutboxDispatcher(
        settings=settings,
        clock=clock or SystemClock(),
        engine=engine,
        store=store,
        publisher=publisher,
        notifications=notifications,
        relay=relay,
    )


async def serve(settings: ServiceSettings) -> None:
    dispatcher = build_dispatcher(settings)
    servers = []
    port = settings.outbox.dispatcher_metrics_port
    if port is not None:
        servers.append(
            http_server(
                create_management_app({"postgres": dispatcher.check_database}),
                host=settings.outbox.dispatcher_metrics_host,
                port=port,
            )
        )
    try:
        await run_until_stopped(servers, [dispatcher.run])
    finally:
        await dispatcher.close()


def main() -> None:
    settings = ServiceSettings()
    configure_logging(
        service="payment-outbox-dispatcher", level=settings.logging.level, json=settings.logging.json_output
    )
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
