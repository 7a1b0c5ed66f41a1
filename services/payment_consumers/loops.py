"""The long-running loops of payment-consumers besides the Kafka consumers: each stops cleanly on `stop`, works
in bounded batches, and logs every failure."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import structlog
from sqlalchemy import text

from payment_infrastructure.postgres.inbox_purge import purge_processed_events
from services.payment_consumers.bootstrap import Container
from services.payment_consumers.metrics import (
    PARKED_ORDER_REQUERY_FAILURES,
    PARKED_ORDERS_REQUERIED,
    PAYMENT_ORDERS_AWAITING_RECONCILIATION,
    PAYMENT_ORDERS_STALE_FOUND,
    PAYMENT_ORDERS_STALE_REDRIVEN,
    STALE_ORDER_SWEEP_FAILURES,
    STATUS_CHECK_DISPATCH_FAILURES,
    STATUS_CHECKS_DISPATCHED,
)

log = structlog.get_logger(__name__)
INBOX_PURGE_INTERVAL_SECONDS = 3_600
RECONCILIATION_GAUGE_INTERVAL_SECONDS = 15
_AWAITING_RECONCILIATION = text("SELECT count(*) FROM payment_orders WHERE status = 'NEEDS_RECONCILIATION'")


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def run_status_check_scheduler(container: Container, stop: asyncio.Event) -> None:
    """Publish due status checks; a full batch loops at once, otherwise it waits one poll interval."""
    settings = container.settings.status_checks
    while not stop.is_set():
        try:
            sent = await container.dispatch_status_checks.dispatch_once(limit=settings.batch_size)
            STATUS_CHECKS_DISPATCHED.inc(sent)
            if sent >= settings.batch_size:
                continue
        except Exception as error:
            STATUS_CHECK_DISPATCH_FAILURES.inc()
            log.error("status_check_dispatch_failed", error=repr(error))
        await _pause(stop, settings.poll_interval_seconds)


async def run_inbox_purge(container: Container, stop: asyncio.Event) -> None:
    retention = timedelta(days=container.settings.process.inbox_retention_days)
    while not stop.is_set():
        try:
            purged = await purge_processed_events(container.engine, before=container.clock.now() - retention)
            if purged:
                log.info("inbox_purged", count=purged)
        except Exception as error:
            log.error("inbox_purge_failed", error=repr(error))
        await _pause(stop, INBOX_PURGE_INTERVAL_SECONDS)


async def run_reconciliation_gauge(container: Container, stop: asyncio.Event) -> None:
    """Keep the alerting gauge true: a count, not an in-memory guess (cheap via a partial index)."""
    while not stop.is_set():
        try:
            async with container.engine.connect() as conn:
                count = (await conn.execute(_AWAITING_RECONCILIATION)).scalar_one()
            PAYMENT_ORDERS_AWAITING_RECONCILIATION.set(count)
        except Exception as error:
            log.warning("reconciliation_gauge_failed", error=repr(error))
        await _pause(stop, RECONCILIATION_GAUGE_INTERVAL_SECONDS)


async def run_stale_order_sweeper(container: Container, stop: asyncio.Event) -> None:
    """Re-drive orders that stopped moving: full batches back to back, then one pause per sweep; a failure waits
    for the next sweep (the orders it claimed come back once the threshold passes their claim)."""
    settings = container.settings.sweeper
    found = 0
    while not stop.is_set():
        try:
            report = await container.sweep_stale_orders.sweep_once(limit=settings.batch_size)
            found += report.found
            for redriven in report.redriven:
                PAYMENT_ORDERS_STALE_REDRIVEN.labels(redriven.stale.order.status.value).inc()
            if report.failed is not None:
                STALE_ORDER_SWEEP_FAILURES.inc()
            elif report.full:
                continue
            PAYMENT_ORDERS_STALE_FOUND.set(found)
        except Exception as error:
            STALE_ORDER_SWEEP_FAILURES.inc()
            log.error("stale_order_sweep_failed", error=repr(error))
        found = 0
        await _pause(stop, settings.interval_seconds)


async def run_parked_order_requery(container: Container, stop: asyncio.Event) -> None:
    """Ask the PSP again about parked orders: full batches back to back, else one poll interval between rounds;
    each order is asked at most once per `requery.every_seconds` (its claim is stamped on the database clock)."""
    settings = container.settings.requery
    while not stop.is_set():
        try:
            report = await container.requery_parked_orders.requery_once(limit=settings.batch_size)
            PARKED_ORDERS_REQUERIED.inc(report.asked)
            if report.failed:
                PARKED_ORDER_REQUERY_FAILURES.inc()
            elif report.full:
                continue
        except Exception as error:
            PARKED_ORDER_REQUERY_FAILURES.inc()
            log.error("parked_order_requery_failed", error=repr(error))
        await _pause(stop, settings.poll_interval_seconds)
