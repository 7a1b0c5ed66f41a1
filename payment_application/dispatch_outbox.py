"""Use case: move committed outbox rows to the broker, at least once, in per-order order.

claim (short tx, lease) → publish with no transaction open → mark sent where the lease is still ours, or give
back our own claim on failure. A crash anywhere leaves leased rows that come back when the lease expires, so a
row can be published twice but never lost; consumers recognise the duplicate by its deterministic eventId.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable

from payment_application.ports.outbox import (
    DispatchReport,
    NewOutboxRowSignal,
    OutboxDispatchObserver,
    OutboxRecord,
    OutboxStore,
    PublishFailure,
)
from payment_application.ports.publisher import EventHeaders, EventPublisher, OutboundMessage


def message_of(record: OutboxRecord) -> OutboundMessage:
    return OutboundMessage(
        topic=record.topic,
        key=record.aggregate_id,
        value=record.payload,
        headers=EventHeaders(
            event_id=record.event_id,
            event_type=record.event_type,
            trace_id=record.trace_id,
            parent_event_id=record.parent_event_id,
            aggregate_id=record.aggregate_id,
        ),
    )


class DispatchOutbox:
    """One round: claim a batch, publish it, settle it."""

    def __init__(
        self,
        store: OutboxStore,
        publisher: EventPublisher,
        *,
        batch_size: int,
        lease_seconds: float,
        new_lease_token: Callable[[], uuid.UUID] = uuid.uuid4,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self._store = store
        self._publisher = publisher
        self._batch_size = batch_size
        self._lease_seconds = lease_seconds
        self._new_lease_token = new_lease_token

    async def dispatch_batch(self) -> DispatchReport:
        token = self._new_lease_token()
        claim = await self._store.claim(lease_token=token, limit=self._batch_size, lease_seconds=self._lease_seconds)
        records = list(claim.records)
        if not records:
            return DispatchReport(limit=self._batch_size)
        try:
            outcomes = await self._publisher.publish_batch([message_of(r) for r in records])
        except BaseException:
            # Forced shutdown or a publisher bug: hand the rows back now rather than make them wait for the lease.
            await asyncio.shield(self._store.release(token, records))
            raise
        delivered = [r for r, error in zip(records, outcomes, strict=True) if error is None]
        failures = tuple(
            PublishFailure(record=r, error=error)
            for r, error in zip(records, outcomes, strict=True)
            if error is not None
        )
        marked = await self._store.mark_sent(token, delivered) if delivered else 0
        released = await self._store.release(token, [f.record for f in failures]) if failures else 0
        return DispatchReport(
            limit=self._batch_size,
            claimed=len(records),
            sent=marked,
            lease_conflicts=len(delivered) - marked,
            released=released,
            failures=failures,
        )


class OutboxDispatchLoop:
    """Runs `DispatchOutbox` until stopped, paced by the work there is.

    A round that claimed rows is followed at once by another (a full batch means more is waiting; a partial one
    may have unblocked the next event of the same orders). An empty round sleeps until a commit wakes it or a
    backoff (growing up to `idle_max_wait`, which also bounds how late an expired lease is noticed) passes.
    A failed round backs off without listening to wake-ups, so a broker that is down is not hammered.
    `workers` rounds run side by side so the database and the broker work in parallel.
    """

    def __init__(
        self,
        dispatch: DispatchOutbox,
        signal: NewOutboxRowSignal,
        observer: OutboxDispatchObserver,
        *,
        workers: int = 1,
        idle_min_wait: float = 0.05,
        idle_max_wait: float = 1.0,
        failure_min_backoff: float = 0.1,
        failure_max_backoff: float = 5.0,
        pause: Callable[[asyncio.Event, float], Awaitable[None]] | None = None,
    ) -> None:
        """`pause(stop, seconds)` is the failure backoff: it returns after `seconds` or as soon as stop is set."""
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._dispatch = dispatch
        self._signal = signal
        self._observer = observer
        self._workers = workers
        self._idle_min = idle_min_wait
        self._idle_max = max(idle_max_wait, idle_min_wait)
        self._failure_min = failure_min_backoff
        self._failure_max = max(failure_max_backoff, failure_min_backoff)
        self._pause = pause or _wait_for_stop

    async def run(self, stop: asyncio.Event) -> None:
        """Return once `stop` is set and every in-flight round has settled its batch."""
        async with asyncio.TaskGroup() as group:
            for _ in range(self._workers):
                group.create_task(self._work(stop))

    async def _work(self, stop: asyncio.Event) -> None:
        idle = self._idle_min
        backoff = self._failure_min
        while not stop.is_set():
            self._signal.reset()
            started = time.perf_counter()
            try:
                report = await self._dispatch.dispatch_batch()
            except Exception as error:
                self._observer.batch_failed(error, time.perf_counter() - started)
                await self._pause(stop, backoff)
                backoff = min(backoff * 2, self._failure_max)
                continue
            self._observer.batch_done(report, time.perf_counter() - started)
            if report.failures:
                await self._pause(stop, backoff)
                backoff = min(backoff * 2, self._failure_max)
                continue
            backoff = self._failure_min
            if report.claimed:
                idle = self._idle_min
                continue
            woken = await self._wait_for_rows(stop, idle)
            idle = self._idle_min if woken else min(idle * 2, self._idle_max)

    async def _wait_for_rows(self, stop: asyncio.Event, max_seconds: float) -> bool:
        signal = asyncio.ensure_future(self._signal.wait(max_seconds))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({signal, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            signal.cancel()
            stopped.cancel()
        return signal.done() and not signal.cancelled() and signal.result()


async def _wait_for_stop(stop: asyncio.Event, max_seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max_seconds)
