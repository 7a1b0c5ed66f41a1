"""One task per assigned partition: records strictly in offset order, a bounded queue, the offset safe to commit.

Records finish in offset order, so "offset + 1 of the highest contiguous finished record" is simply the
offset after the last one finished (`completed`). Stopping abandons the queued records (never started, so
never committed: whoever owns the partition next receives them) and waits, bounded, for the one in hand.
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
    ) -> None:
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
        self._in_hand: ConsumedRecord | None = None
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"consume-{tp.topic}-{tp.partition}")
        self._task.add_done_callback(self._report_crash)

    @property
    def in_flight(self) -> int:
        return len(self._queue) + (self._in_hand is not None)

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
        while True:
            while not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            record = self._queue.popleft()
            self._in_hand = record
            await self._process(record)
            self._in_hand = None
            self.completed = record.offset + 1
            if not self._stopping and self.in_flight <= self._low_water:
                self._on_room(self.tp)

    async def stop(self, grace: float) -> None:
        """Take nothing more, drop the queue, give the record in hand `grace` seconds, then cancel it."""
        self._stopping = True
        self._queue.clear()
        self._wakeup.set()
        _, pending = await asyncio.wait({self._task}, timeout=grace)
        if pending:
            log.warning(
                "partition_drain_timed_out",
                topic=self.tp.topic,
                partition=self.tp.partition,
                offset=self._in_hand.offset if self._in_hand else None,
            )
            await self.abort()

    async def abort(self) -> None:
        """Cancel at once; the record in hand is not completed, so it is not committed."""
        self._stopping = True
        self._queue.clear()
        self._task.cancel()
        # wait() rather than `await task`: a cancellation of the caller itself must still propagate.
        await asyncio.wait({self._task})

    def _report_crash(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("partition_worker_crashed", topic=self.tp.topic, partition=self.tp.partition, exc_info=error)
