"""The outbox relay as a worker of the runtime: `DispatchOutbox` rounds, paced by the work there is.

A full round is followed at once by another (more is waiting). A partial one may have unblocked the next event of
the same orders, so it is followed by another within `idle_min`, sooner on a wake-up; an empty round waits for a
commit's wake-up (Postgres NOTIFY) or an idle wait growing to `idle_max` (which also bounds how late an expired
lease is noticed). After a wake-up the relay lingers (`linger`) so that commits close together share a round. A
round that failed or could not publish backs off without listening to wake-ups, so a broker that is down is not
hammered. `workers` rounds run side by side so the database and the broker work in parallel.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from payment_application.dispatch_outbox import DispatchOutbox
from payment_application.ports.outbox import NewOutboxRowSignal, OutboxDispatchObserver
from payment_infrastructure.runtime.pacing import BUSY, FAILED, IDLE, Pacing, Round, Worker, paced, pause


def outbox_relay(
    dispatch: DispatchOutbox,
    signal: NewOutboxRowSignal,
    observer: OutboxDispatchObserver,
    pacing: Pacing,
    *,
    workers: int = 1,
    sleep: Callable[[asyncio.Event, float], Awaitable[object]] = pause,
) -> Worker:
    async def relay() -> Round:
        started = time.perf_counter()
        try:
            report = await dispatch.dispatch_batch()
        except Exception as error:
            observer.batch_failed(error, time.perf_counter() - started)
            return FAILED
        observer.batch_done(report, time.perf_counter() - started)
        if report.failures:
            return FAILED
        if report.busy:
            return BUSY
        # A partial batch may have unblocked the next event of the orders it sent: look again soon, not at once.
        return Round(due_in=pacing.idle_min) if report.claimed else IDLE

    return paced("outbox-relay", relay, pacing, wakeup=signal, workers=workers, sleep=sleep)
