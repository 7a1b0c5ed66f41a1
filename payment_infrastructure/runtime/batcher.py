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
Those decisions are `coalescing.Coalescer`'s (the simulation runs the same class); this module runs it on asyncio.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import structlog

from payment_application.errors import DependencyUnavailable
from payment_infrastructure.runtime.coalescing import Coalescer

log = structlog.get_logger(__name__)

Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")
Result = TypeVar("Result")

RunBatch = Callable[[Sequence[Item]], Awaitable[Sequence[Result | BaseException]]]


def unreachable(error: Exception) -> bool:
    """The default `outage`: a backing service could not be had at all (nothing ran), the same for every item."""
    return isinstance(error, DependencyUnavailable)


class _Answered(Protocol[Result]):
    @property
    def future(self) -> asyncio.Future[Result]: ...


def answer(batch: Sequence[_Answered[Result]], results: Sequence[Result | BaseException]) -> None:
    """Each caller still listening hears its own item's outcome."""
    for pending, result in zip(batch, results, strict=True):
        if pending.future.done():
            continue  # its caller went away
        if isinstance(result, BaseException):
            pending.future.set_exception(result)
        else:
            pending.future.set_result(result)


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
        self._coalescer: Coalescer[_Pending[Key, Item, Result]] = Coalescer(
            max_batch=max_batch, slots=concurrency, exclusive=True, outage=outage
        )
        self._run_batch = run_batch
        self._key = key
        self._observe = observe
        self._runners: set[asyncio.Task[None]] = set()

    @property
    def queued(self) -> int:
        """Items waiting for a batch (withdrawn ones may still be counted until a batch skips them)."""
        return self._coalescer.queued

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
        self._coalescer.add(pending)
        self._fill()
        # Cancelling this await cancels the future: a queued item is then skipped, a running one's result unread.
        return await pending.future

    def _fill(self) -> None:
        """Start runners for free slots while something queued could be taken. A runner takes its batch when it
        first runs, so calls arriving in the same tick share it."""
        coalescer = self._coalescer
        while coalescer.can_start():
            coalescer.open_slot()
            # A fresh context: a runner must not carry the log context (trace id) of the call that started it.
            runner = asyncio.create_task(self._runner(), name="batcher-runner", context=contextvars.Context())
            self._runners.add(runner)

    async def _runner(self) -> None:
        """Batch after batch while there is work; the slot frees in the same step that finds none."""
        me = asyncio.current_task()
        assert me is not None
        try:
            while batch := self._coalescer.take():
                self._fill()  # more than one batch's worth waits: a free slot takes the rest
                await self._run(batch)
        finally:
            self._runners.discard(me)
            self._coalescer.close_slot()

    async def _run(self, batch: list[_Pending[Key, Item, Result]]) -> None:
        self._observe(len(batch))
        try:
            results = await self._coalescer.results(batch, self._items_run)
        except asyncio.CancelledError:
            for pending in batch:
                pending.future.cancel()
            raise
        finally:
            self._coalescer.finish(batch)
        answer(batch, results)

    def _items_run(self, batch: list[_Pending[Key, Item, Result]]) -> Awaitable[Sequence[Result | BaseException]]:
        return self._run_batch([p.item for p in batch])
