"""Group commit: concurrent writes that arrive while the connections are busy are written together, one
transaction for many, instead of one transaction each.

Most of a small write's cost, in Postgres and in the driver, is per statement and per commit, not per row: at
saturation a batch of eight payments costs about a quarter of eight single writes. No write waits for a batch
to fill: a writer that is free takes whatever is queued (often just one item), so at low load this is the
plain path, and batches only grow while every writer is busy, which is exactly when the saving matters. The queue
has no bound of its own: its callers bound how many items they have in flight (the API admits a bounded number of
creates per process and refuses the rest at once).

Guarantees the callers rely on:
- an item is written in exactly one transaction or not at all; the write function decides how a failed batch
  is retried per item, so one bad item cannot fail its neighbours;
- an item that waited longer than ``queue_timeout`` without being taken is withdrawn and fails with
  ``DependencyUnavailable``: it was never sent, so nothing of it was written (the same promise as a pool
  timeout);
- items that share a conflict key (the same idempotency key) never share a batch, so one statement never
  claims the same key twice;
- a caller that gives up after its item was taken does not cancel the write: the batch's other items (and the
  caller's own idempotency record) must not depend on who is still listening;
- a write cancelled in flight (``close`` giving up on it) fails its items with ``WriteOutcomeUnknown``: it may
  have committed.
Which items form a batch and what a failed write means for each are `runtime.coalescing.Coalescer`'s decisions
(keys not exclusive across batches, every batch-wide error each item's own); this module runs them on asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog
from prometheus_client import Histogram

from payment_application.errors import DependencyUnavailable, WriteOutcomeUnknown
from payment_infrastructure.runtime.batcher import answer
from payment_infrastructure.runtime.coalescing import Coalescer

log = structlog.get_logger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")
Conn = TypeVar("Conn")

BATCH_SIZE = Histogram(
    "payment_create_batch_size",
    "Payments written per database transaction by the group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
QUEUE_WAIT = Histogram(
    "payment_create_queue_wait_seconds",
    "How long a create waited in the group commit's queue before a writer took it",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

Connect = Callable[[], AbstractAsyncContextManager[Conn]]
WriteBatch = Callable[[Conn, Sequence[Item]], Awaitable[Sequence[Result | BaseException]]]


@dataclass(eq=False, slots=True)
class _Pending(Generic[Item, Result]):
    item: Item
    key: Hashable | None  # the conflict key
    future: asyncio.Future[Result]
    queued_at: float
    taken: bool = field(default=False)
    expiry: asyncio.TimerHandle | None = field(default=None)


class GroupCommit(Generic[Item, Result, Conn]):
    """`writers` tasks, each taking up to `max_batch` queued items per transaction.

    `write(conn, items)` returns one result or exception per item, in order; an exception it raises fails the
    whole batch. `connect()` checks a connection out; it is entered before items are taken, so a batch keeps
    growing while its writer waits for a connection.
    """

    def __init__(
        self,
        *,
        connect: Connect[Conn],
        write: WriteBatch[Conn, Item, Result],
        writers: int,
        max_batch: int,
        queue_timeout_seconds: float,
        conflict_key: Callable[[Item], Hashable | None] = lambda _item: None,
    ) -> None:
        if writers < 1 or max_batch < 1:
            raise ValueError("writers and max_batch must be at least 1")
        # The writers are the slots; a write's failure is every item's own (the write function retries per item).
        self._coalescer: Coalescer[_Pending[Item, Result]] = Coalescer(
            max_batch=max_batch, slots=writers, exclusive=False, outage=lambda _error: True
        )
        self._connect = connect
        self._write = write
        self._writers = writers
        self._queue_timeout = queue_timeout_seconds
        self._conflict_key = conflict_key
        self._idle: deque[asyncio.Future[None]] = deque()  # one per writer waiting for work
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    @property
    def queued(self) -> int:
        """Items waiting for a writer (taken ones not counted)."""
        return self._coalescer.queued

    async def submit(self, item: Item) -> Result:
        if self._closing:
            raise DependencyUnavailable("database", "shutting down")
        self._start()
        loop = asyncio.get_running_loop()
        pending: _Pending[Item, Result] = _Pending(
            item, self._conflict_key(item), loop.create_future(), time.perf_counter()
        )
        pending.expiry = loop.call_later(self._queue_timeout, self._expire, pending)
        self._coalescer.add(pending)
        self._wake_one()
        # A caller cancelled while its item waits cancels the future, and writers skip done futures; once taken,
        # the write goes on regardless and its result is simply not read.
        return await pending.future

    def _expire(self, pending: _Pending[Item, Result]) -> None:
        if pending.taken or pending.future.done():
            return
        self._coalescer.withdraw(pending)
        pending.future.set_exception(DependencyUnavailable("database", "connection pool exhausted"))

    async def close(self, *, timeout_seconds: float = 5.0) -> None:
        """Let the writers finish what is queued, then stop them."""
        self._closing = True
        while self._idle:
            self._wake_one()
        if not self._tasks:
            return
        _, still_running = await asyncio.wait(self._tasks, timeout=timeout_seconds)
        for task in still_running:
            task.cancel()
        for task in still_running:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def _start(self) -> None:
        if not self._tasks:
            # A fresh context: the writers must not carry the log context (trace id) of the request that started them.
            self._tasks = [
                asyncio.create_task(self._run(), name=f"group-commit-writer-{n}", context=contextvars.Context())
                for n in range(self._writers)
            ]

    def _wake_one(self) -> None:
        """One idle writer per arrival, not all of them: a woken writer checks a connection out."""
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._coalescer.queued:
                if self._closing:
                    return
                waiter = loop.create_future()
                self._idle.append(waiter)
                await waiter
            batch: list[_Pending[Item, Result]] = []
            try:
                async with self._connect() as conn:
                    batch = self._take()
                    if self._coalescer.queued:
                        self._wake_one()  # more than one batch waits: another writer takes the rest
                    if batch:
                        await self._write_batch(conn, batch)
            except Exception as error:
                # The connection could not be had (or was lost): fail what was taken, or, if nothing was taken
                # yet, a batch of what waits, so a database that refuses connections answers at once instead of
                # leaving callers to time out (and this loop to spin).
                failed = batch or self._take()
                for pending in failed:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                if failed:
                    log.warning("group_commit_batch_failed", items=len(failed), error=repr(error))

    def _take(self) -> list[_Pending[Item, Result]]:
        """Up to `max_batch` live items in arrival order; an item whose conflict key is already in the batch
        stays queued, in place, for the next one."""
        batch = self._coalescer.take()
        now = time.perf_counter()
        for pending in batch:
            pending.taken = True
            if pending.expiry is not None:
                pending.expiry.cancel()
            QUEUE_WAIT.observe(now - pending.queued_at)
        return batch

    async def _write_batch(self, conn: Conn, batch: list[_Pending[Item, Result]]) -> None:
        BATCH_SIZE.observe(len(batch))
        started = time.perf_counter()

        def write(entries: list[_Pending[Item, Result]]) -> Awaitable[Sequence[Result | BaseException]]:
            return self._write(conn, [p.item for p in entries])

        try:
            results = await self._coalescer.results(batch, write)
        except asyncio.CancelledError:
            # Stopped mid-write (close gave up waiting): the statement may have committed, and its callers must
            # hear that rather than wait forever.
            unknown = WriteOutcomeUnknown("database", "the write was cancelled in flight (shutting down)")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(unknown)
            raise
        answer(batch, results)
        elapsed = time.perf_counter() - started
        if elapsed > 0.25:
            log.warning("group_commit_slow_batch", items=len(batch), seconds=round(elapsed, 3))
