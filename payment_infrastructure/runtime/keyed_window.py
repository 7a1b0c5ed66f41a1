"""A partition's sliding window, as bookkeeping only: which record may start now, and the offset safe to commit.

Records are queued in offset order (up to `capacity` not yet finished), and up to `size` of them are in hand at
once: each key's records one after another in offset order, different keys side by side. Finishing a record frees
its place at once, so the next queued one starts without waiting for the rest of the window. `completed` follows
the finished prefix, so a commit never skips a record still running. Stopping drops the queue and starts nothing
more. No asyncio and no clock: `PartitionWorker` runs it on tasks, the simulation (`tests/simulation`) on its
seeded scheduler, so both run the same rules.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, Protocol, TypeVar


class Offset(Protocol):
    @property
    def offset(self) -> int: ...


R = TypeVar("R", bound=Offset)


class KeyedWindow(Generic[R]):
    def __init__(self, *, size: int, capacity: int, key: Callable[[R], Hashable]) -> None:
        if size < 1:
            raise ValueError("the window size (batch_size) must be at least 1")
        self.size = size
        self.capacity = capacity
        self.completed: int | None = None
        """Offset after the last record of the finished prefix: what may be committed."""
        self.first_offset: int | None = None
        """The offset of the first record ever queued."""
        self._key = key
        self._low_water = capacity // 2
        self._queue: deque[R] = deque()
        self._next_offset: int | None = None
        # In hand: started, or waiting behind a record of their own key, in offset order; the finished prefix leaves.
        self._in_hand: deque[R] = deque()
        self._finished: set[int] = set()  # offsets in hand that are done
        # A key is here while one of its records runs; the deque holds its records waiting behind that one.
        self._waiting_behind: dict[Hashable, deque[R]] = {}
        self._stopping = False

    @property
    def in_flight(self) -> int:
        """Queued or in hand: taken from the broker and not yet part of the finished prefix."""
        return len(self._queue) + len(self._in_hand)

    @property
    def queued(self) -> int:
        """Taken from the broker, not yet in hand."""
        return len(self._queue)

    @property
    def room(self) -> int:
        return 0 if self._stopping else max(self.capacity - self.in_flight, 0)

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def wants_more(self) -> bool:
        """Down to the low-water mark (half the capacity): a fetch paused for want of room may resume."""
        return not self._stopping and self.in_flight <= self._low_water

    @property
    def oldest_in_hand(self) -> int | None:
        """The offset the finished prefix waits for, if any."""
        return self._in_hand[0].offset if self._in_hand else None

    def offer(self, records: Sequence[R]) -> int:
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
        return taken

    def take(self) -> list[R]:
        """Move queued records into the window while it has room; return those that may start now (the others wait
        behind a running record of their own key)."""
        startable: list[R] = []
        # Room is counted in records not yet finished (a finished one waits in hand only for its elders).
        while self._queue and len(self._in_hand) - len(self._finished) < self.size and not self._stopping:
            record = self._queue.popleft()
            self._in_hand.append(record)
            behind = self._waiting_behind.get(self._key(record))
            if behind is None:
                self._waiting_behind[self._key(record)] = deque()
                startable.append(record)
            else:
                behind.append(record)
        return startable

    def finish(self, record: R) -> list[R]:
        """`record` (one that was started) is done: move the finished prefix; return what may start now, its key's
        next record first, then what the freed room takes from the queue."""
        self._finished.add(record.offset)
        while self._in_hand and self._in_hand[0].offset in self._finished:
            done = self._in_hand.popleft()
            self._finished.discard(done.offset)
            self.completed = done.offset + 1
        startable: list[R] = []
        key = self._key(record)
        behind = self._waiting_behind[key]
        if behind and not self._stopping:
            startable.append(behind.popleft())
        elif not behind:
            del self._waiting_behind[key]
        return startable + self.take()

    def stop(self) -> None:
        """Take nothing more and drop the queue: those records never started, so they are never committed (whoever
        owns the partition next receives them). Records waiting behind their key do not start either."""
        self._stopping = True
        self._queue.clear()
