"""Coalescing: concurrent calls that arrive while earlier ones run are handed on together, one batch for many.

Built for work whose cost is mostly per call, not per item (a database transaction). No call waits for a batch to
fill: a free slot takes whatever is queued, so at low load each call runs alone, and batches grow only while every
slot is busy, which is when the saving matters. The queue has no bound of its own: callers bound what they have in
flight (the consumer runtime, its concurrent records).

Guarantees:
- items run in arrival order; a batch never holds two items with the same key, and no key is in two running
  batches at once: an item whose key is taken waits, keeping its place, for a later batch;
- each caller gets its own item's result or exception. A batch that raises fails all its items with that error
  only when the error is shared by all of them (`outage`: by default, the database cannot be reached, which each
  alone would only wait for again); any other batch-wide error (a value the statement refuses, a lock timeout on
  one row, a bug) runs the batch's items again one by one, so each caller's outcome is its own item's and one bad
  item cannot fail its neighbours;
- a caller cancelled while its item is queued withdraws it (it never runs); one cancelled after its batch started
  does not cancel the batch: its neighbours must not depend on who is still listening.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from payment_application.errors import DependencyUnavailable

log = structlog.get_logger(__name__)

Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")
Result = TypeVar("Result")

RunBatch = Callable[[Sequence[Item]], Awaitable[Sequence[Result | BaseException]]]


def unreachable(error: Exception) -> bool:
    """The default `outage`: a backing service could not be had at all (nothing ran), the same for every item."""
    return isinstance(error, DependencyUnavailable)


@dataclass(eq=False, slots=True)
class _Pending(Generic[Key, Item, Result]):
    item: Item
    key: Key
    future: asyncio.Future[Result]


class Batcher(Generic[Key, Item, Result]):
    """Up to `concurrency` batches running at once, each of up to `max_batch` items.

    `run_batch(items)` returns one result or exception per item, in order. `observe(size)` hears every batch's
    size (a metric). `outage(error)` says whether a batch-wide error is every item's own (then all get it);
    otherwise the items run again alone, each in a batch of one."""

    def __init__(
        self,
        run_batch: RunBatch[Item, Result],
        *,
        key: Callable[[Item], Key],
        concurrency: int = 2,
        max_batch: int = 32,
        observe: Callable[[int], None] = lambda _size: None,
        outage: Callable[[Exception], bool] = unreachable,
    ) -> None:
        if concurrency < 1 or max_batch < 1:
            raise ValueError("concurrency and max_batch must be at least 1")
        self._run_batch = run_batch
        self._key = key
        self._concurrency = concurrency
        self._max_batch = max_batch
        self._observe = observe
        self._outage = outage
        self._queue: deque[_Pending[Key, Item, Result]] = deque()
        self._busy_keys: set[Key] = set()
        self._runners: set[asyncio.Task[None]] = set()

    @property
    def queued(self) -> int:
        """Items waiting for a batch (withdrawn ones may still be counted until a batch skips them)."""
        return len(self._queue)

    async def drain(self, within: float) -> bool:
        """Wait up to `within` seconds for the running batches (once callers stopped submitting), so none is cut off
        at shutdown; past that, cancel them (their callers are gone, and what they left undone is redone on
        redelivery). True if they all finished."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._runners:
            _, pending = await asyncio.wait(set(self._runners), timeout=max(deadline - loop.time(), 0))
            if pending:
                log.warning("batcher_drain_timed_out", batches=len(pending), seconds=within)
                for runner in pending:
                    runner.cancel()
                await asyncio.wait(pending)
                return False
        return True

    async def submit(self, item: Item) -> Result:
        pending: _Pending[Key, Item, Result] = _Pending(
            item, self._key(item), asyncio.get_running_loop().create_future()
        )
        self._queue.append(pending)
        self._fill()
        # Cancelling this await cancels the future: a queued item is then skipped, a running one's result unread.
        return await pending.future

    def _fill(self) -> None:
        """Start runners for free slots while something queued could be taken. A runner takes its batch when it
        first runs, so calls arriving in the same tick share it."""
        while len(self._runners) < self._concurrency and self._takeable():
            # A fresh context: a runner must not carry the log context (trace id) of the call that started it.
            runner = asyncio.create_task(self._runner(), name="batcher-runner", context=contextvars.Context())
            self._runners.add(runner)

    def _takeable(self) -> bool:
        return any(not p.future.done() and p.key not in self._busy_keys for p in self._queue)

    async def _runner(self) -> None:
        """Batch after batch while there is work; the slot frees in the same step that finds none."""
        me = asyncio.current_task()
        assert me is not None
        try:
            while batch := self._take():
                self._fill()  # more than one batch's worth waits: a free slot takes the rest
                await self._run(batch)
        finally:
            self._runners.discard(me)

    def _take(self) -> list[_Pending[Key, Item, Result]]:
        """Up to `max_batch` live items in arrival order, their keys distinct and free; the rest stay in place."""
        batch: list[_Pending[Key, Item, Result]] = []
        left: deque[_Pending[Key, Item, Result]] = deque()
        while self._queue:
            pending = self._queue.popleft()
            if pending.future.done():
                continue  # withdrawn by its caller
            if len(batch) < self._max_batch and pending.key not in self._busy_keys:
                self._busy_keys.add(pending.key)
                batch.append(pending)
            else:
                left.append(pending)
        self._queue = left
        return batch

    async def _run(self, batch: list[_Pending[Key, Item, Result]]) -> None:
        self._observe(len(batch))
        try:
            results = await self._results_of(batch)
        except asyncio.CancelledError:
            for pending in batch:
                pending.future.cancel()
            raise
        finally:
            self._busy_keys.difference_update(p.key for p in batch)
        for pending, result in zip(batch, results, strict=True):
            if pending.future.done():
                continue  # its caller went away
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)

    async def _results_of(self, batch: list[_Pending[Key, Item, Result]]) -> Sequence[Result | BaseException]:
        """The batch's results; after a batch-wide error that is not an outage, each item's own, run alone."""
        try:
            return await self._checked([p.item for p in batch])
        except Exception as error:
            if len(batch) == 1 or self._outage(error):
                log.warning("batch_failed", items=len(batch), error=repr(error))
                return [error] * len(batch)
            log.warning("batch_failed_running_items_one_by_one", items=len(batch), error=repr(error))
        results: list[Result | BaseException] = []
        for pending in batch:
            if pending.future.done():  # its caller went away: nobody reads it
                results.append(asyncio.CancelledError())
                continue
            try:
                (result,) = await self._checked([pending.item])
            except Exception as error:
                result = error
            results.append(result)
        return results

    async def _checked(self, items: list[Item]) -> Sequence[Result | BaseException]:
        results = await self._run_batch(items)
        if len(results) != len(items):
            raise RuntimeError(f"run_batch returned {len(results)} results for {len(items)} items")
        return results
