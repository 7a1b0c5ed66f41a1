"""The consumer groups of the simulation: each partition runs the product's own sliding window (`KeyedWindow`, the
one `PartitionWorker` runs on asyncio) on the seeded scheduler.

Per group and partition: fetches of a random size from the log (paused when the window is full, resumed at its
low-water mark, as the real consumer pauses and resumes the partition), each record the window lets start run as a
scheduler task (retried in place on a connection error or a timeout, as the real record processor does with a
dependency failure), and on its finish whatever the window lets start next. A commit takes the window's
`completed`. A crash closes the group's tasks where they stand and drops its windows: the next member starts from
the committed offsets. A rebalance is either such a loss of the member, or a revocation as the real consumer
runs it: the windows stop (the queue dropped, nothing more started), the records in hand finish, or are abandoned
at the drain's deadline, then the finished prefix is committed and the windows dropped.
Two oracles watch the window itself, since idempotent handlers and the stale-order sweeper mask most of what a
broken one would do to the money: an order's records start one at a time in offset order (per member), and no
commit passes a record that was never handled to its end.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from payment_infrastructure.runtime.keyed_window import KeyedWindow
from tests.simulation.broker import PARTITIONS, Record, SimBroker
from tests.simulation.scheduler import Scheduler, SimulationFailed, checkpoint

WINDOW_SIZE = 4  # records of a partition in hand at once (`CONSUMER__BATCH_SIZE`, 16 by default)
CAPACITY = 8  # records fetched and not yet finished (`CONSUMER__MAX_IN_FLIGHT_PER_PARTITION`, 50)
FETCH_MAX = 4  # records one fetch returns at most (`CONSUMER__MAX_POLL_RECORDS`, 200)
IN_PLACE_TRIES = 200
DRAIN_MS = 1_000  # a revoked partition's records in hand get this long (`CONSUMER__DRAIN_TIMEOUT_SECONDS`, 10)


def _window() -> KeyedWindow[Record]:
    return KeyedWindow(size=WINDOW_SIZE, capacity=CAPACITY, key=lambda record: record.envelope.aggregate_id)


@dataclass
class Lane:
    """One group on one partition: its committed offset and, for the member holding it, its window."""

    partition: int
    log: list[Record]  # the partition's log (the broker appends to this list)
    committed: int = 0
    fetched: int = 0  # the next offset to fetch
    paused: bool = False
    drain_until: int | None = None  # revoked: the deadline of its records in hand
    window: KeyedWindow[Record] = field(default_factory=_window)
    running: dict[str, int] = field(default_factory=dict)  # order -> its offset being handled
    started: dict[str, int] = field(default_factory=dict)  # order -> the last offset of it started by this member
    handled: set[int] = field(default_factory=set)  # offsets handled to their end, by any member

    @property
    def position(self) -> int:
        """What a commit takes: the window's finished prefix."""
        completed = self.window.completed
        return self.committed if completed is None else completed

    def drop(self) -> None:
        self.window = _window()
        self.fetched = self.committed
        self.paused = False
        self.drain_until = None
        self.running.clear()
        self.started.clear()


@dataclass
class SimGroup:
    name: str
    topic: str
    handle: Callable[[Record], Awaitable[object]]
    scheduler: Scheduler
    broker: SimBroker
    random: random.Random
    trace: Callable[[str], None]
    now_ms: Callable[[], int]
    lanes: list[Lane] = field(init=False)

    def __post_init__(self) -> None:
        self.lanes = [Lane(p, self.broker.log(self.topic, p)) for p in range(PARTITIONS)]

    def add_actions(self, actions: list[tuple[float, Callable[[], None]]]) -> None:
        """What the group may do next (looked at on every step of the world, so kept cheap)."""
        for lane in self.lanes:
            if lane.drain_until is not None:
                if lane.drain_until <= self.now_ms():
                    actions.append((2.0, lambda lane=lane: self._drain_timed_out(lane)))  # type: ignore[misc]
            elif not lane.paused and lane.fetched < len(lane.log):
                actions.append((5.0, lambda lane=lane: self.fetch(lane)))  # type: ignore[misc]
            completed = lane.window.completed
            if completed is not None and lane.committed < completed:
                actions.append((2.0, lambda lane=lane: self.commit(lane)))  # type: ignore[misc]

    def fetch(self, lane: Lane) -> None:
        """One poll: what the window has room for is queued; the rest is fetched again once it has room."""
        records = lane.log[lane.fetched : lane.fetched + self.random.randint(1, FETCH_MAX)]
        taken = lane.window.offer(records)
        lane.fetched += taken
        if taken < len(records) or lane.window.room == 0:
            lane.paused = True
        self._start(lane, lane.window.take())

    def commit(self, lane: Lane) -> None:
        unhandled = [o for o in range(lane.committed, lane.position) if o not in lane.handled]
        if unhandled:
            raise SimulationFailed(f"{self.name}/{lane.partition} commits {lane.position} past unhandled {unhandled}")
        lane.committed = lane.position

    def drop(self) -> None:
        """The member is gone (a crash, a rebalance): its records in hand stop where they stand, uncommitted."""
        self.scheduler.kill(self.name)
        for lane in self.lanes:
            lane.drop()

    def revoke(self) -> None:
        """A rebalance takes the partitions away cleanly: each window stops; once its records in hand are done (or
        abandoned at the deadline), what finished is committed and the window dropped."""
        for lane in self.lanes:
            if lane.drain_until is None:
                lane.window.stop()
                lane.drain_until = self.now_ms() + DRAIN_MS
                self._drained(lane, waited=False)

    def _drained(self, lane: Lane, *, waited: bool = True) -> None:
        if lane.drain_until is not None and not lane.running:
            self.commit(lane)
            if waited:
                self.trace(f"{self.name}/{lane.partition} drained and committed {lane.committed}")
            lane.drop()

    def _drain_timed_out(self, lane: Lane) -> None:
        killed = self.scheduler.kill_named(f"{self.name}/{lane.partition}")
        self.commit(lane)
        self.trace(
            f"{self.name}/{lane.partition} drain timed out ({len(killed)} abandoned), committed {lane.committed}"
        )
        lane.drop()

    def settled(self) -> bool:
        return all(lane.committed >= len(lane.log) for lane in self.lanes)

    def _start(self, lane: Lane, records: list[Record]) -> None:
        name = f"{self.name}/{lane.partition}"
        window = lane.window
        for record in records:
            order = record.envelope.aggregate_id
            if order in lane.running or lane.started.get(order, -1) >= record.offset:
                raise SimulationFailed(
                    f"{name} starts offset {record.offset} of order {order} out of turn "
                    f"(running {lane.running.get(order)}, last started {lane.started.get(order)})"
                )
            if lane.running:
                others = f"{len(lane.running)} other order{'s' if len(lane.running) > 1 else ''}"
                oldest = window.oldest_in_hand
                self.trace(f"{name} offset {record.offset} starts side by side with {others} (oldest in hand {oldest})")
            lane.running[order] = record.offset
            lane.started[order] = record.offset

            def done(_value: object, error: BaseException | None, record: Record = record) -> None:
                if error is not None:
                    raise SimulationFailed(f"{name} cannot process offset {record.offset}: {error!r}") from error
                if lane.window is not window:
                    raise SimulationFailed(f"{name} offset {record.offset} finished in a window already dropped")
                del lane.running[record.envelope.aggregate_id]
                lane.handled.add(record.offset)
                self._start(lane, window.finish(record))
                if window.wants_more:
                    lane.paused = False
                self._drained(lane)

            self.scheduler.spawn(name, self.name, self._run(name, record), done)

    async def _run(self, name: str, record: Record) -> None:
        failures = 0
        while True:
            try:
                await self.handle(record)
                return
            except (ConnectionError, TimeoutError) as error:
                failures += 1
                self.trace(f"{name} offset {record.offset} failed ({type(error).__name__}: {error}); retry in place")
                if failures > IN_PLACE_TRIES:
                    raise SimulationFailed(f"{name} offset {record.offset} cannot be processed") from error
                await checkpoint()
