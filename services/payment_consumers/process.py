"""The payment-consumers process (`python -m services.payment_consumers`): the Kafka workers, the retry dispatcher,
the status-check scheduler, the stale-order sweeper, the re-query of parked orders, and the management server on
:9001, in one asyncio process. Which parts run is configurable (PAYMENTS_PROCESS__WORKERS), so they can also be
split into separate deployments; the sweeper and the re-query run in every process (PAYMENTS_SWEEPER__ENABLED and
PAYMENTS_REQUERY__ENABLED turn them off), their claims never overlap."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
import uvloop

from payment_infrastructure.kafka.admin import ensure_topics
from payment_infrastructure.kafka.consumer import PartitionOrderedConsumer
from payment_infrastructure.observability.logging import configure_logging
from payment_infrastructure.observability.management import ReadinessCheck, create_management_app
from payment_infrastructure.server import http_server, run_until_stopped
from services.payment_consumers.bootstrap import Container, build_container
from services.payment_consumers.groups import GROUPS
from services.payment_consumers.handlers import (
    Handler,
    enqueuer_handler,
    psp_call_handler,
    result_handler,
    status_check_handler,
)
from services.payment_consumers.loops import (
    run_inbox_purge,
    run_parked_order_requery,
    run_reconciliation_gauge,
    run_stale_order_sweeper,
    run_status_check_scheduler,
)
from services.payment_consumers.retry_dispatcher import run_retry_dispatcher
from services.payment_consumers.settings import ConsumersSettings, Worker

log = structlog.get_logger(__name__)
Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def handlers(container: Container) -> dict[Worker, Handler]:
    return {
        Worker.ENQUEUER: enqueuer_handler(container.enqueue),
        Worker.PSP_CALL_EXECUTOR: psp_call_handler(container.execute),
        Worker.RESULT_APPLIER: result_handler(container.apply),
        Worker.STATUS_CHECK_EXECUTOR: status_check_handler(container.check_status),
    }


def build_consumers(container: Container) -> list[PartitionOrderedConsumer]:
    settings = container.settings
    by_worker = handlers(container)
    return [
        PartitionOrderedConsumer(
            settings.kafka,
            settings.consumer,
            group_id=GROUPS[worker][0],
            topics=[GROUPS[worker][1].value],
            handler=by_worker[worker],
            dead_letters=container.dead_letters,
            name=worker.value,
        )
        for worker in settings.process.workers
        if worker in GROUPS
    ]


def build_loops(container: Container, consumers: list[PartitionOrderedConsumer]) -> list[Loop]:
    settings = container.settings
    loops: list[Loop] = [c.run for c in consumers]
    if Worker.RETRY_DISPATCHER in settings.process.workers:
        loops.append(
            functools.partial(run_retry_dispatcher, container.retry_queue, container.publisher, settings.retry)
        )
    if Worker.STATUS_CHECK_SCHEDULER in settings.process.workers:
        loops.append(functools.partial(run_status_check_scheduler, container))
    loops += [functools.partial(run_inbox_purge, container), functools.partial(run_reconciliation_gauge, container)]
    if settings.sweeper.enabled:
        loops.append(functools.partial(run_stale_order_sweeper, container))
    if settings.requery.enabled:
        loops.append(functools.partial(run_parked_order_requery, container))
    return loops


def readiness(container: Container, consumers: list[PartitionOrderedConsumer]) -> dict[str, ReadinessCheck]:
    async def postgres() -> None:
        async with container.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def redis() -> None:
        await container.redis.ping()

    async def kafka_consumers() -> None:
        unhealthy = [c.group_id for c in consumers if not c.healthy]
        if unhealthy:
            raise RuntimeError(f"not consuming: {', '.join(unhealthy)}")

    return {"postgres": postgres, "redis": redis, "consumers": kafka_consumers}


async def serve(
    settings: ConsumersSettings, *, container: Container | None = None, stop: asyncio.Event | None = None
) -> None:
    container = container or build_container(settings)
    try:
        await ensure_topics(settings.kafka)
        await container.start()
        consumers = build_consumers(container)
        management = http_server(
            create_management_app(readiness(container, consumers)),
            host=settings.process.management_host,
            port=settings.process.management_port,
        )
        log.info("payment_consumers_starting", workers=[w.value for w in settings.process.workers])
        await run_until_stopped([management], build_loops(container, consumers), stop=stop)
    finally:
        await container.close()
        log.info("payment_consumers_stopped")


def main() -> None:
    settings = ConsumersSettings()
    configure_logging(service="payment-consumers", level=settings.logging.level, json=settings.logging.json_output)
    uvloop.run(serve(settings))
