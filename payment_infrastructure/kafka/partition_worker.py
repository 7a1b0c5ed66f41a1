"""One task per assigned partition: records in offset order per key, a bounded queue, the offset safe to commit.

The worker keeps up to `batch_size` records in hand, runs the records of each key (a paymentOrderId) one after
another in offset order and different keys side by side: one order's events never overtake each other, while a
partition's orders do not wait in line behind one PSP call or one commit. The window slides: as soon as a record
finishes, the next queued one starts (after the records of its own key), so one call that waits out its 500 ms
timeout holds up only its own order, not the fifteen records that came with it. Records without a key make one
chain of their own. `completed` follows the finished prefix: offset + 1 of the highest record finished with every
record before it finished too, so a commit never skips a record still running. Stopping abandons the queued
records (never started, so never committed: whoever owns the partition next receives them) and waits, bounded,
for the records in hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog
from aiokafka import TopicPartition

from payment_infrastructure.kafka.records import ConsumedRecord
from payment_infrastructure.runtime.keyed_window import KeyedWindow

log = structlog.get_logger(__name__)


class PartitionWorker:
    """The asyncio half of a partition: tasks, wake-ups, stop and abort; `KeyedWindow` makes every decision."""

    def __init__(
        self,
        tp: TopicPartition,
        process: Callable[[ConsumedRecord], Awaitable[None]],
        *,
        capacity: int,
        on_room: Callable[[TopicPartition], None],
        batch_size: int = 1,
    ) -> None:
        self._window: KeyedWindow[ConsumedRecord] = KeyedWindow(
            size=batch_size, capacity=capacity, key=lambda record: record.key
        )
        self.tp = tp
        self.capacity = capacity
        self.committed: int | None = None
        """The last offset this member committed for the partition."""
        self._process = process
        self._on_room = on_room
        self._running: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"consume-{tp.topic}-{tp.partition}")
        self._task.add_done_callback(self._report_crash)

    @property
    def completed(self) -> int | None:
        """Offset after the last record finished (handled or dead-lettered): what may be committed."""
        return self._window.completed

    @property
    def first_offset(self) -> int | None:
        return self._window.first_offset

    @property
    def in_flight(self) -> int:
        return self._window.in_flight

    @property
    def room(self) -> int:
        return self._window.room

    @property
    def failed(self) -> bool:
        """The task died of something other than cancellation (a bug): the partition no longer moves."""
        return self._task.done() and not self._task.cancelled() and self._task.exception() is not None

    def commit_candidate(self) -> int | None:
        """The offset to commit, if it moved past what was committed."""
        completed = self.completed
        if completed is None or (self.committed is not None and completed <= self.committed):
            return None
        return completed

    def offer(self, records: Sequence[ConsumedRecord]) -> int:
        """Queue as many as there is room for, in order; return how many were taken (the caller re-fetches the rest).

        A record below the next expected offset is already queued or done (a re-fetch) and counts as taken.
        """
        taken = self._window.offer(records)
        if self._window.queued:
            self._wakeup.set()
        return taken

    async def _run(self) -> None:
        try:
            while True:
                for record in self._window.take():
                    self._start(record)
                if self._failure is not None:
                    raise self._failure
                if self._window.stopping and not self._running:
                    # Nothing in hand, or only records waiting behind a key: never started, so never committed.
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
        finally:
            for task in self._running:
                task.cancel()
            if self._running:
                await asyncio.wait(self._running)

    def _start(self, record: ConsumedRecord) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(self._process(record))
        self._running.add(task)
        task.add_done_callback(lambda done: self._done(record, done))

    def _done(self, record: ConsumedRecord, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if task.cancelled():
            return
        if (error := task.exception()) is not None:  # a bug: `process` handles every failure of a record itself
            self._failure = self._failure or error
            self._wakeup.set()
            return
        for ready in self._window.finish(record):
            self._start(ready)
        self._wakeup.set()
        if self._window.wants_more:
            self._on_room(self.tp)

    async def stop(self, grace: float) -> None:
        """Take nothing more, drop the queue, give the batch in hand `grace` seconds, then cancel it."""
        self._window.stop()
        self._wakeup.set()
        _, pending = await asyncio.wait({self._task}, timeout=grace)
        if pending:
            log.warning(
                "partition_drain_timed_out",
                topic=self.tp.topic,
                partition=self.tp.partition,
                offset=self._window.oldest_in_hand,
            )
            await self.abort()

    async def abort(self) -> None:
        """Cancel at once; the batch in hand is not completed, so it is not committed."""
        self._window.stop()
        self._task.cancel()
        # wait() rather than `await task`: a cancellation of the caller itself must still propagate.
        await asyncio.wait({self._task})

    def _report_crash(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("partition_worker_crashed", topic=self.tp.topic, partition=self.tp.partition, exc_info=error)
