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
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import structlog
from aiokafka import TopicPartition

from payment_infrastructure.kafka.records import ConsumedRecord

log = structlog.get_logger(__name__)


class PartitionWorker:
    def __init__(
        self,
        tp: TopicPartition,
        process: Callable[[ConsumedRecord], Awaitable[None]],
        *,
        capacity: int,
        on_room: Callable[[TopicPartition], None],
        batch_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.tp = tp
        self.capacity = capacity
        self.completed: int | None = None
        """Offset after the last record finished (handled or dead-lettered): what may be committed."""
        self.committed: int | None = None
        """The last offset this member committed for the partition."""
        self.first_offset: int | None = None
        self._process = process
        self._on_room = on_room
        self._low_water = capacity // 2
        self._queue: deque[ConsumedRecord] = deque()
        self._next_offset: int | None = None
        self._batch_size = batch_size
        # In hand: started, or waiting behind a record of their own key, in offset order; the finished prefix leaves.
        self._in_hand: deque[ConsumedRecord] = deque()
        self._finished: set[int] = set()  # offsets in hand that are done
        self._running: set[asyncio.Task[None]] = set()
        self._waiting_behind: dict[str | None, deque[ConsumedRecord]] = {}  # key -> its records not yet started
        self._failure: BaseException | None = None
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"consume-{tp.topic}-{tp.partition}")
        self._task.add_done_callback(self._report_crash)

    @property
    def in_flight(self) -> int:
        return len(self._queue) + len(self._in_hand)

    @property
    def room(self) -> int:
        return 0 if self._stopping else max(self.capacity - self.in_flight, 0)

    @property
    def failed(self) -> bool:
        """The task died of something other than cancellation (a bug): the partition no longer moves."""
        return self._task.done() and not self._task.cancelled() and self._task.exception() is not None

    def commit_candidate(self) -> int | None:
        """The offset to commit, if it moved past what was committed."""
        if self.completed is None or (self.committed is not None and self.completed <= self.committed):
            return None
        return self.completed

    def offer(self, records: Sequence[ConsumedRecord]) -> int:
        """Queue as many as there is room for, in order; return how many were taken (the caller re-fetches the rest).

        A record below the next expected offset is already queued or done (a re-fetch) and counts as taken.
        """
        taken = 0
        for record in records:
            if self._next_offset is not None and record.offset < self._next_offset:
                taken += 1
                continue
            if self.room == 0:
                break
            if self.first_offset is None:
                self.first_offset = record.offset
            self._queue.append(record)
            self._next_offset = record.offset + 1
            taken += 1
        if self._queue:
            self._wakeup.set()
        return taken

    async def _run(self) -> None:
        try:
            while True:
                # Room is counted in records not yet finished (a finished one waits in hand only for its elders).
                while (
                    self._queue and len(self._in_hand) - len(self._finished) < self._batch_size and not self._stopping
                ):
                    self._take(self._queue.popleft())
                if self._failure is not None:
                    raise self._failure
                if self._stopping and not self._running:
                    # Nothing in hand, or only records waiting behind a key: never started, so never committed.
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
        finally:
            for task in self._running:
                task.cancel()
            if self._running:
                await asyncio.wait(self._running)

    def _take(self, record: ConsumedRecord) -> None:
        self._in_hand.append(record)
        behind = self._waiting_behind.get(record.key)
        if behind is None:
            self._waiting_behind[record.key] = deque()
            self._start(record)
        else:
            behind.append(record)

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
        self._finish(record.offset)
        behind = self._waiting_behind[record.key]
        if behind and not self._stopping:
            self._start(behind.popleft())
        elif not behind:
            del self._waiting_behind[record.key]
        self._wakeup.set()
        if not self._stopping and self.in_flight <= self._low_water:
            self._on_room(self.tp)

    def _finish(self, offset: int) -> None:
        self._finished.add(offset)
        while self._in_hand and self._in_hand[0].offset in self._finished:
            done = self._in_hand.popleft()
            self._finished.discard(done.offset)
            self.completed = done.offset + 1

    async def stop(self, grace: float) -> None:
        """Take nothing more, drop the queue, give the batch in hand `grace` seconds, then cancel it."""
        self._stopping = True
        self._queue.clear()
        self._wakeup.set()
        _, pending = await asyncio.wait({self._task}, timeout=grace)
        if pending:
            log.warning(
                "partition_drain_timed_out",
                topic=self.tp.topic,
                partition=self.tp.partition,
                offset=self._in_hand[0].offset if self._in_hand else None,
            )
            await self.abort()

    async def abort(self) -> None:
        """Cancel at once; the batch in hand is not completed, so it is not committed."""
        self._stopping = True
        self._queue.clear()
        self._task.cancel()
        # wait() rather than `await task`: a cancellation of the caller itself must still propagate.
        await asyncio.wait({self._task})

    def _report_crash(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("partition_worker_crashed", topic=self.tp.topic, partition=self.tp.partition, exc_info=error)
