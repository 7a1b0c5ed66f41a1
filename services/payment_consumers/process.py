"""The payment-consumers process (`python -m services.payment_consumers`): the Kafka workers, the retry dispatcher,
the status-check scheduler, the stale-order and stale-refund sweepers, the re-query of parked orders and refunds,
and the management server on :9001, in one asyncio process. Which parts run is configurable
(PAYMENTS_PROCESS__WORKERS), so they can also be split into separate deployments; the sweepers and the re-queries
run in every process (PAYMENTS_SWEEPER__ENABLED and PAYMENTS_REQUERY__ENABLED turn them off), their claims never
overlap."""

from __future__ import annotations

import asyncio

import structlog
import uvloop

from payment_infrastructure.environment import settings_from_environment
from payment_infrastructure.observability.logging import configure_logging
from payment_infrastructure.observability.management import create_management_app
from payment_infrastructure.observability.tracing import configure_tracing
from payment_infrastructure.server import ShutdownWatchdog, http_server, run_until_stopped
from services.payment_consumers.bootstrap import (
    Container,
    build_container,
    kafka_workers,
    liveness,
    readiness,
    workers,
)
from services.payment_consumers.settings import ConsumersSettings

log = structlog.get_logger(__name__)


async def serve(
    settings: ConsumersSettings, *, container: Container | None = None, stop: asyncio.Event | None = None
) -> None:
    container = container or build_container(settings)
    watchdog = ShutdownWatchdog(settings.process.shutdown_timeout_seconds)
    try:
        await container.start()
        consumers = kafka_workers(container)
        table = workers(container, consumers)
        management = http_server(
            create_management_app(
                readiness(consumers), dependencies=container.dependencies, liveness=liveness(consumers)
            ),
            host=settings.process.management_host,
            port=settings.process.management_port,
        )
        log.info("payment_consumers_starting", workers=sorted(table))
        await run_until_stopped([management], list(table.values()), stop=stop, watchdog=watchdog)
    finally:
        watchdog.arm()  # (a failed start stops too: its close is bounded the same way)
        try:
            await container.close()
        finally:
            watchdog.disarm()
        log.info("payment_consumers_stopped")


def main() -> None:
    settings = settings_from_environment(ConsumersSettings, deployable="payment-consumers")
    configure_logging(service="payment-consumers", level=settings.logging.level, json=settings.logging.json_output)
    configure_tracing("payment-consumers")
    uvloop.run(serve(settings))
