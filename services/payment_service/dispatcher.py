"""`python -m services.payment_service.dispatcher`: the outbox dispatcher process.

Start-up: topics (idempotent; the dev broker forgets them on restart), outbox partitions, then the dispatch loop
(claim → publish → settle, woken by LISTEN outbox_event_new), partition maintenance and the backlog gauges on
timers, and a management server (/health/live, /health/ready, /metrics) on
PAYMENTS_OUTBOX__DISPATCHER_METRICS_PORT (default 9002). SIGTERM: each worker finishes
its batch (bounded by the Kafka delivery timeout), then the producer flushes and the process exits 0.
Several dispatchers may run side by side; leases keep them off each other's rows. The wiring is
`bootstrap.build_dispatcher_container`; this module only runs it.
"""

from __future__ import annotations

import asyncio

import structlog
import uvloop

from payment_infrastructure.environment import settings_from_environment
from payment_infrastructure.observability.logging import configure_logging
from payment_infrastructure.observability.management import create_management_app
from payment_infrastructure.observability.tracing import configure_tracing
from payment_infrastructure.server import http_server, run_until_stopped
from services.payment_service.bootstrap import DispatcherContainer, build_dispatcher_container, dispatcher_workers
from services.payment_service.settings import ServiceSettings

log = structlog.get_logger(__name__)


async def run(dispatcher: DispatcherContainer, stop: asyncio.Event) -> None:
    """Until `stop`: the relay in the foreground, the timers beside it (stopped once the relay has stopped)."""
    outbox = dispatcher.settings.outbox
    await dispatcher.ensure_topics()
    try:
        await dispatcher.maintain_partitions()
    except Exception:
        # Not fatal: the DEFAULT partition takes every row meanwhile, and the timer tries again.
        log.exception("outbox_partition_maintenance_failed_at_start")
    await dispatcher.start()
    try:
        table = dispatcher_workers(dispatcher)
        relay = table.pop("outbox-relay")
        timer_tasks = [asyncio.create_task(timer(stop)) for timer in table.values()]
        log.info("outbox_dispatcher_started", workers=outbox.workers, batch_size=outbox.batch_size)
        try:
            await relay(stop)
        finally:
            stop.set()
            await asyncio.gather(*timer_tasks, return_exceptions=True)
    finally:
        await dispatcher.stop()
        log.info("outbox_dispatcher_stopped")


async def serve(settings: ServiceSettings) -> None:
    dispatcher = build_dispatcher_container(settings)
    servers = []
    port = settings.outbox.dispatcher_metrics_port
    if port is not None:
        servers.append(
            http_server(
                create_management_app({}, dependencies=dispatcher.dependencies),
                host=settings.outbox.dispatcher_metrics_host,
                port=port,
            )
        )

    async def outbox_dispatcher(stop: asyncio.Event) -> None:
        await run(dispatcher, stop)

    try:
        await run_until_stopped(servers, [outbox_dispatcher])
    finally:
        await dispatcher.close()


def main() -> None:
    settings = settings_from_environment(ServiceSettings, deployable="payment-service")
    configure_logging(
        service="payment-outbox-dispatcher", level=settings.logging.level, json=settings.logging.json_output
    )
    configure_tracing("payment-outbox-dispatcher")
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
