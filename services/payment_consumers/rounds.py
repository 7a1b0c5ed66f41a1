"""payment-consumers' background work as rounds of the runtime's paced loops, with their metrics and logs.

Each function turns a use case into a round: it reports whether it found work (go again at once), failed (back
off) or found none (wait). `bootstrap.workers` puts them in the process's table of workers. Nothing here knows a
concrete adapter: database work arrives as the use case or as a plain function.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog

from payment_application.dispatch_status_checks import DispatchStatusChecks
from payment_application.ports.clock import Clock
from payment_application.redrive_refunds import RedriveRefunds
from payment_application.redrive_stale_orders import RedriveStaleOrders
from payment_application.requery_parked_orders import RequeryParkedOrders
from payment_infrastructure.runtime.pacing import BUSY, FAILED, IDLE, Round, busy_if
from services.payment_consumers.metrics import (
    PARKED_ORDER_REQUERY_FAILURES,
    PARKED_ORDERS_REQUERIED,
    PAYMENT_ORDERS_AWAITING_RECONCILIATION,
    PAYMENT_ORDERS_STALE_FOUND,
    PAYMENT_ORDERS_STALE_REDRIVEN,
    REFUND_REDRIVE_FAILURES,
    REFUNDS_REDRIVEN,
    REFUNDS_STALE,
    STALE_ORDER_SWEEP_FAILURES,
    STATUS_CHECK_DISPATCH_FAILURES,
    STATUS_CHECKS_DISPATCHED,
)

log = structlog.get_logger(__name__)
RoundFn = Callable[[], Awaitable[Round]]


def status_checks(dispatch: DispatchStatusChecks, *, batch_size: int) -> RoundFn:
    """Publish due status checks; a full batch means more are due, a failed publish means wait (the broker may
    be down; the failed checks come back once their lease runs out)."""

    async def round_() -> Round:
        try:
            report = await dispatch.dispatch_batch(limit=batch_size)
        except Exception as error:
            STATUS_CHECK_DISPATCH_FAILURES.inc()
            log.error("status_check_dispatch_failed", error=repr(error))
            return FAILED
        STATUS_CHECKS_DISPATCHED.inc(len(report.published))
        if report.failures:
            return FAILED
        return busy_if(report.busy)

    return round_


def stale_order_sweep(sweep: RedriveStaleOrders, *, batch_size: int) -> RoundFn:
    """Re-drive orders that stopped moving. A sweep is full rounds back to back; the gauge shows what the whole
    sweep found. A failed re-drive ends the sweep (its orders come back once the threshold passes their claim)."""
    found = 0

    async def round_() -> Round:
        nonlocal found
        try:
            report = await sweep.sweep_once(limit=batch_size)
        except Exception as error:
            STALE_ORDER_SWEEP_FAILURES.inc()
            log.error("stale_order_sweep_failed", error=repr(error))
            found = 0
            return FAILED
        found += report.found
        for redriven in report.redriven:
            PAYMENT_ORDERS_STALE_REDRIVEN.labels(redriven.stale.order.status.value).inc()
        if report.failed is not None:
            STALE_ORDER_SWEEP_FAILURES.inc()
            found = 0
            return FAILED
        if report.full:
            return BUSY
        PAYMENT_ORDERS_STALE_FOUND.set(found)
        found = 0
        return IDLE

    return round_


def parked_order_requery(requery: RequeryParkedOrders, *, batch_size: int) -> RoundFn:
    """Ask the PSP again about parked orders; each is asked at most once per interval (the claim says when)."""

    async def round_() -> Round:
        try:
            report = await requery.requery_once(limit=batch_size)
        except Exception as error:
            PARKED_ORDER_REQUERY_FAILURES.inc()
            log.error("parked_order_requery_failed", error=repr(error))
            return FAILED
        PARKED_ORDERS_REQUERIED.inc(len(report.published))
        if report.failures:
            PARKED_ORDER_REQUERY_FAILURES.inc()
            return FAILED
        return busy_if(report.busy)

    return round_


def refund_redrive(redrive: RedriveRefunds, *, reason: str, batch_size: int) -> RoundFn:
    """Send the requests of unsettled refunds again (stale or parked, by `reason`); a failed send ends the round
    (its refunds come back once their claim runs out)."""

    async def round_() -> Round:
        try:
            report = await redrive.run_once(limit=batch_size)
        except Exception as error:
            REFUND_REDRIVE_FAILURES.labels(reason).inc()
            log.error("refund_redrive_round_failed", reason=reason, error=repr(error))
            return FAILED
        REFUNDS_REDRIVEN.labels(reason).inc(len(report.published))
        if report.failures:
            REFUND_REDRIVE_FAILURES.labels(reason).inc()
            return FAILED
        return busy_if(report.busy)

    return round_


def inbox_purge(
    purge: Callable[[datetime], Awaitable[int]], *, clock: Clock, retention: timedelta
) -> Callable[[], Awaitable[None]]:
    async def work() -> None:
        purged = await purge(clock.now() - retention)
        if purged:
            log.info("inbox_purged", count=purged)

    return work


def reconciliation_gauge(count_parked: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[None]]:
    """Keep the alerting gauge true: a count from the database, not an in-memory guess."""

    async def work() -> None:
        PAYMENT_ORDERS_AWAITING_RECONCILIATION.set(await count_parked())

    return work


def stale_refund_gauge(count_stale: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[None]]:
    """REQUESTED refunds that stopped moving, counted by the database (the alert reads it)."""

    async def work() -> None:
        REFUNDS_STALE.set(await count_stale())

    return work
