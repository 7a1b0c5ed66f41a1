"""One task per assigned partition: records in offset order per key, a bounded queue, the offset safe to commit.

The worker takes what is queued as one batch (at most `batch_size`) and runs the records of each key (a
paymentOrderId) one after another in offset order, different keys side by side: one order's events never
overtake each other, while a partition's orders no longer wait in line behind one PSP call or one commit.
Records without a key make one chain of their own. `completed` follows the batch's finished prefix: it is
offset + 1 of the highest record finished with every record before it finished too, so a commit never skips a
record still running. The next batch starts when every record of this one is done. Stopping abandons the
queued records (never started, so never committed: whoever owns the partition next receives them) and waits,
bounded, for the batch in hand.
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
        self._in_hand: list[ConsumedRecord] = []
        self._finished: set[int] = set()  # offsets of the batch in hand that are done
        self._prefix = 0  # how many of the batch in hand, from its start, are done
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
        while True:
            while not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            take = min(len(self._queue), self._batch_size)
            self._in_hand = [self._queue.popleft() for _ in range(take)]
            self._finished = set()
            self._prefix = 0
            await self._run_batch(self._in_hand)
            self._in_hand = []
            if not self._stopping and self.in_flight <= self._low_water:
                self._on_room(self.tp)

    async def _run_batch(self, batch: list[ConsumedRecord]) -> None:
        chains: dict[str | None, list[ConsumedRecord]] = {}
        for record in batch:
            chains.setdefault(record.key, []).append(record)
        if len(chains) == 1:
            await self._run_chain(batch)
            return
        # A failing chain (a bug: `process` handles every failure of a record itself) takes the others with it.
        async with asyncio.TaskGroup() as group:
            for chain in chains.values():
                group.create_task(self._run_chain(chain))

    async def _run_chain(self, chain: list[ConsumedRecord]) -> None:
        for record in chain:
            await self._process(record)
            self._finish(record.offset)

    def _finish(self, offset: int) -> None:
        self._finished.add(offset)
        batch = self._in_hand
        while self._prefix < len(batch) and batch[self._prefix].offset in self._finished:
            self._prefix += 1
            self.completed = batch[self._prefix - 1].offset + 1

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
