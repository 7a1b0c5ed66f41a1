"""Coalescing as bookkeeping only: which queued items form the next batch, and what each item's outcome is.

Items queue in arrival order. A batch takes up to `max_batch` of them in that order, skipping answered ones
(withdrawn by their caller, or timed out) and any whose key is in the batch already or, with `exclusive` keys, in a
running batch; a skipped item keeps its place for a later batch. At most `slots` batches run at once. After a
batch-wide error every item gets it if it is an `outage` (or the batch held one item); otherwise `results` runs each
item again alone. No asyncio and no clock: `Batcher` and `GroupCommit` run it on asyncio, the simulation
(`tests/simulation/batches.py`) on its seeded scheduler, so all three run the same rules.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, Protocol, TypeVar

import structlog

log = structlog.get_logger(__name__)


class Answer(Protocol):
    def done(self) -> bool: ...


class Queued(Protocol):
    """What the coalescer needs of an item: its key (None: it conflicts with nothing) and its caller's answer,
    which is done once the caller has withdrawn it or has its outcome (an asyncio future, in production)."""

    @property
    def key(self) -> Hashable | None: ...

    @property
    def future(self) -> Answer: ...


E = TypeVar("E", bound=Queued)
Result = TypeVar("Result")
RunEntries = Callable[[list[E]], Awaitable[Sequence[Result | BaseException]]]


class Withdrawn(Exception):
    """The outcome of an item not run again alone because its caller had gone (nobody reads it)."""


class Coalescer(Generic[E]):
    def __init__(self, *, max_batch: int, slots: int, exclusive: bool, outage: Callable[[Exception], bool]) -> None:
        if slots < 1 or max_batch < 1:
            raise ValueError("the slots (concurrency) and max_batch must be at least 1")
        self.max_batch = max_batch
        self.slots = slots
        self.exclusive = exclusive
        self.running = 0
        """Slots held (by a batch running, or by a runner about to take one)."""
        self._outage = outage
        self._queue: deque[E] = deque()
        self._busy: set[Hashable] = set()  # with exclusive keys: the keys of the running batches

    @property
    def queued(self) -> int:
        """Items waiting for a batch (answered ones may be counted until a batch skips them)."""
        return len(self._queue)

    def add(self, entry: E) -> None:
        self._queue.append(entry)

    def withdraw(self, entry: E) -> None:
        """Take a queued item out at once (an answered one is skipped anyway, but still counted as queued)."""
        self._queue.remove(entry)

    def takeable(self) -> bool:
        """Something queued could form a batch now (slots aside)."""
        busy = self._busy
        return any(not e.future.done() and e.key not in busy for e in self._queue)

    def can_start(self) -> bool:
        return self.running < self.slots and self.takeable()

    def open_slot(self) -> None:
        self.running += 1

    def close_slot(self) -> None:
        self.running -= 1

    def take(self) -> list[E]:
        """The next batch: up to `max_batch` unanswered items in arrival order with distinct keys, none of them (with
        exclusive keys) in a running batch; their keys are held until `finish`. The rest stay queued, in place."""
        batch: list[E] = []
        deferred: list[E] = []
        busy = self._busy if self.exclusive else set()
        queue = self._queue
        while queue and len(batch) < self.max_batch:
            entry = queue.popleft()
            if entry.future.done():
                continue  # withdrawn by its caller, or timed out
            key = entry.key
            if key is not None:
                if key in busy:
                    deferred.append(entry)
                    continue
                busy.add(key)
            batch.append(entry)
        queue.extendleft(reversed(deferred))
        return batch

    def finish(self, batch: Sequence[E]) -> None:
        """`batch` ended (answered, failed or cancelled): its keys are free for the next batches."""
        if self.exclusive:
            self._busy.difference_update(e.key for e in batch)

    def fails_all(self, size: int, error: Exception) -> bool:
        """A batch-wide error is every item's own outcome (an outage, or a batch of one); else each runs alone."""
        return size == 1 or self._outage(error)

    async def results(self, batch: list[E], run: RunEntries[E, Result]) -> Sequence[Result | BaseException]:
        """One outcome per item of `batch`, in order: `run(batch)`'s, or after a batch-wide error either that error
        for all (`fails_all`) or each item's own from running it alone (an item whose caller is gone is not run:
        `Withdrawn`). Awaits only `run`, so any event loop (or the simulation's scheduler) can drive it."""
        try:
            return _checked(await run(batch), len(batch))
        except Exception as error:
            if self.fails_all(len(batch), error):
                log.warning("batch_failed", items=len(batch), error=repr(error))
                return [error] * len(batch)
            log.warning("batch_failed_running_items_one_by_one", items=len(batch), error=repr(error))
        results: list[Result | BaseException] = []
        for entry in batch:
            if entry.future.done():  # its caller went away: nobody reads it
                results.append(Withdrawn())
                continue
            try:
                (result,) = _checked(await run([entry]), 1)
            except Exception as error:
                result = error
            results.append(result)
        return results


def _checked(results: Sequence[Result | BaseException], size: int) -> Sequence[Result | BaseException]:
    if len(results) != size:
        raise RuntimeError(f"a batch returned {len(results)} results for {size} items")
    return results
