"""The Batcher: concurrent calls coalesce into batches of distinct keys, in arrival order, each caller getting its
own outcome. Batches are held open by gates the test releases; every wait is on a condition with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest

from payment_application.errors import DependencyTimeout, DependencyUnavailable
from payment_infrastructure.runtime.batcher import Batcher
from tests.fixtures.ports import wait_until

Item = tuple[str, int]  # (key, value)


class Backend:
    """run_batch: records each batch, waits for its gate, answers value * 10 (or an item's planned exception)."""

    def __init__(self) -> None:
        self.batches: list[list[Item]] = []
        self.gates: list[asyncio.Event] = []
        self.finished: list[list[Item]] = []
        self.failures: dict[int, Exception] = {}  # value -> what that item gets
        self.raise_batch: Exception | None = None

    async def run(self, items: Sequence[Item]) -> list[int | BaseException]:
        gate = asyncio.Event()
        self.batches.append(list(items))
        self.gates.append(gate)
        await gate.wait()
        self.finished.append(list(items))
        if self.raise_batch is not None:
            raise self.raise_batch
        return [self.failures.get(value, value * 10) for _key, value in items]

    async def started(self, count: int) -> None:
        async def enough() -> bool:
            return len(self.batches) >= count

        await wait_until(enough, timeout=5, interval=0.001, what=f"{count} batches started")

    def release(self, n: int) -> None:
        self.gates[n].set()


def a_batcher(backend: Backend, *, sizes: list[int] | None = None, max_batch: int = 32) -> Batcher[str, Item, int]:
    return Batcher(
        backend.run,
        key=lambda item: item[0],
        concurrency=2,
        max_batch=max_batch,
        observe=(sizes.append if sizes is not None else lambda _n: None),
    )


def submit_all(batcher: Batcher[str, Item, int], *items: Item) -> list[asyncio.Task[int]]:
    return [asyncio.create_task(batcher.submit(item)) for item in items]


async def hold_both_slots(batcher: Batcher[str, Item, int], backend: Backend) -> list[asyncio.Task[int]]:
    """Batches 0 and 1, one item each, held open until released."""
    first = submit_all(batcher, ("x", 0))
    await backend.started(1)
    second = submit_all(batcher, ("y", 0))
    await backend.started(2)
    return [*first, *second]


async def test_calls_arriving_together_share_one_batch() -> None:
    backend, sizes = Backend(), list[int]()
    batcher = a_batcher(backend, sizes=sizes)

    calls = submit_all(batcher, ("a", 1), ("b", 2), ("c", 3))
    await backend.started(1)
    backend.release(0)

    assert [await c for c in calls] == [10, 20, 30]
    assert sizes == [3]


async def test_a_lone_call_runs_at_once_as_a_batch_of_one() -> None:
    backend, sizes = Backend(), list[int]()
    batcher = a_batcher(backend, sizes=sizes)

    call = asyncio.create_task(batcher.submit(("a", 1)))
    await backend.started(1)
    backend.release(0)

    assert await call == 10
    assert backend.batches == [[("a", 1)]] and sizes == [1]


async def test_calls_queued_while_both_slots_are_busy_form_the_next_batches_in_arrival_order() -> None:
    backend, sizes = Backend(), list[int]()
    batcher = a_batcher(backend, sizes=sizes, max_batch=3)
    held = await hold_both_slots(batcher, backend)

    waiting = submit_all(batcher, ("c", 3), ("d", 4), ("e", 5), ("f", 6))
    await wait_until(_queued(batcher, 4), timeout=5, interval=0.001, what="all queued")
    assert len(backend.batches) == 2  # no third slot
    backend.release(0)
    await backend.started(3)
    backend.release(1)
    await backend.started(4)
    backend.release(2)
    backend.release(3)

    assert [await t for t in [*held, *waiting]] == [0, 0, 30, 40, 50, 60]
    assert backend.batches == [[("x", 0)], [("y", 0)], [("c", 3), ("d", 4), ("e", 5)], [("f", 6)]]
    assert sizes == [1, 1, 3, 1]


async def test_an_item_whose_key_is_taken_waits_for_a_later_batch_keeping_its_place() -> None:
    backend = Backend()
    batcher = a_batcher(backend)
    busy = await hold_both_slots(batcher, backend)

    queued = submit_all(batcher, ("a", 1), ("b", 2), ("a", 3), ("c", 4), ("a", 5), ("b", 6))
    await wait_until(_queued(batcher, 6), timeout=5, interval=0.001, what="all queued")
    backend.release(0)
    await backend.started(3)
    backend.release(1)
    await busy[1]  # that slot finds only taken keys: it stays free
    backend.release(2)
    await backend.started(4)
    backend.release(3)
    await backend.started(5)
    backend.release(4)

    assert [await t for t in [*busy, *queued]] == [0, 0, 10, 20, 30, 40, 50, 60]
    assert backend.batches[2:] == [[("a", 1), ("b", 2), ("c", 4)], [("a", 3), ("b", 6)], [("a", 5)]]


async def test_no_key_runs_in_two_batches_at_once() -> None:
    backend = Backend()
    batcher = a_batcher(backend)
    first = submit_all(batcher, ("a", 1))
    await backend.started(1)

    later = submit_all(batcher, ("a", 2), ("b", 3))  # a free slot, but "a" is running
    await backend.started(2)
    assert backend.batches[1] == [("b", 3)]
    backend.release(1)
    assert await later[1] == 30
    assert not later[0].done()
    backend.release(0)
    await backend.started(3)
    backend.release(2)

    assert [await first[0], await later[0]] == [10, 20]
    assert backend.batches[2] == [("a", 2)]


async def test_a_caller_cancelled_while_queued_is_dropped() -> None:
    backend = Backend()
    batcher = a_batcher(backend)
    busy = await hold_both_slots(batcher, backend)
    gone, stays = submit_all(batcher, ("a", 1), ("b", 2))
    await wait_until(_queued(batcher, 2), timeout=5, interval=0.001, what="both queued")

    gone.cancel()
    backend.release(0)
    await backend.started(3)
    backend.release(1)
    backend.release(2)

    assert await stays == 20
    assert gone.cancelled()
    assert backend.batches[2] == [("b", 2)]
    await asyncio.gather(*busy)


async def test_a_caller_cancelled_after_its_batch_started_does_not_cancel_the_batch() -> None:
    backend = Backend()
    batcher = a_batcher(backend)
    busy = await hold_both_slots(batcher, backend)
    leaving, staying = submit_all(batcher, ("a", 1), ("b", 2))
    await wait_until(_queued(batcher, 2), timeout=5, interval=0.001, what="both queued")
    backend.release(0)
    await backend.started(3)

    leaving.cancel()
    await wait_until(_done(leaving), timeout=5, interval=0.001, what="the caller gone")
    backend.release(2)

    assert await staying == 20
    assert backend.finished[-1] == [("a", 1), ("b", 2)]  # ran to its end
    backend.release(1)
    await asyncio.gather(*busy)


async def test_a_batch_that_cannot_reach_the_database_fails_all_its_items_and_the_next_batch_runs() -> None:
    backend = Backend()
    batcher = a_batcher(backend)
    backend.raise_batch = DependencyUnavailable("database", "cannot reach the database")
    failing = submit_all(batcher, ("a", 1), ("b", 2))
    await backend.started(1)
    backend.release(0)

    results = await asyncio.gather(*failing, return_exceptions=True)

    assert all(isinstance(r, DependencyUnavailable) for r in results)
    assert len(backend.batches) == 1  # not tried again one by one: each alone would only wait for it again
    backend.raise_batch = None
    after = submit_all(batcher, ("a", 3))
    await backend.started(2)
    backend.release(1)
    assert await after[0] == 30


async def test_each_caller_gets_its_own_items_exception() -> None:
    backend = Backend()
    batcher = a_batcher(backend)
    backend.failures[2] = LookupError("no such order")
    calls = submit_all(batcher, ("a", 1), ("b", 2), ("c", 3))
    await backend.started(1)
    backend.release(0)

    results = await asyncio.gather(*calls, return_exceptions=True)

    assert results[0] == 10 and results[2] == 30
    assert isinstance(results[1], LookupError)


async def test_a_batch_answering_the_wrong_number_of_results_fails_its_items() -> None:
    async def short(items: Sequence[Item]) -> list[int | BaseException]:
        return []

    batcher: Batcher[str, Item, int] = Batcher(short, key=lambda item: item[0])
    calls = submit_all(batcher, ("a", 1), ("b", 2))

    results = await asyncio.gather(*calls, return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in results)


class RefusesAWholeBatch:
    """run_batch as a database runs one statement for many items: one item it cannot take (`bad`) fails the
    statement, so the whole batch, with `error`; alone, every other item succeeds."""

    def __init__(self, bad: int, error: Exception) -> None:
        self.bad = bad
        self.error = error
        self.batches: list[list[Item]] = []
        self.first_batch_may_end = asyncio.Event()
        self.first_batch_may_end.set()

    async def run(self, items: Sequence[Item]) -> list[int | BaseException]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            await self.first_batch_may_end.wait()
        if any(value == self.bad for _key, value in items):
            raise self.error
        return [value * 10 for _key, value in items]


@pytest.mark.parametrize(
    "error",
    [
        ValueError("value out of int32 range"),  # what asyncpg's DataError is
        DependencyTimeout("database", "lock timeout"),  # one row locked by someone else
        RuntimeError("a bug"),
    ],
    ids=type,
)
async def test_a_batch_wide_failure_that_is_not_an_outage_runs_the_items_one_by_one(error: Exception) -> None:
    backend = RefusesAWholeBatch(bad=2, error=error)
    batcher: Batcher[str, Item, int] = Batcher(backend.run, key=lambda item: item[0])

    results = await asyncio.gather(*submit_all(batcher, ("a", 1), ("b", 2), ("c", 3)), return_exceptions=True)

    assert results[0] == 10 and results[2] == 30
    assert results[1] is error
    assert backend.batches == [[("a", 1), ("b", 2), ("c", 3)], [("a", 1)], [("b", 2)], [("c", 3)]]


async def test_an_outage_can_be_named_per_batcher() -> None:
    backend = RefusesAWholeBatch(bad=2, error=ConnectionResetError("gone"))
    batcher: Batcher[str, Item, int] = Batcher(
        backend.run, key=lambda item: item[0], outage=lambda e: isinstance(e, ConnectionError)
    )

    results = await asyncio.gather(*submit_all(batcher, ("a", 1), ("b", 2)), return_exceptions=True)

    assert all(r is backend.error for r in results)
    assert len(backend.batches) == 1


async def test_a_caller_gone_before_the_one_by_one_runs_is_skipped() -> None:
    backend = RefusesAWholeBatch(bad=2, error=ValueError("refused"))
    backend.first_batch_may_end.clear()
    batcher: Batcher[str, Item, int] = Batcher(backend.run, key=lambda item: item[0])
    leaving, bad, staying = submit_all(batcher, ("a", 1), ("b", 2), ("c", 3))
    await wait_until(_started(backend, 1), timeout=5, interval=0.001, what="the batch started")
    leaving.cancel()
    await wait_until(_done(leaving), timeout=5, interval=0.001, what="the caller gone")
    backend.first_batch_may_end.set()

    results = await asyncio.gather(bad, staying, return_exceptions=True)

    assert isinstance(results[0], ValueError) and results[1] == 30
    assert [("a", 1)] not in backend.batches[1:]


def _started(backend: RefusesAWholeBatch, count: int) -> Callable[[], Awaitable[bool]]:
    async def condition() -> bool:
        return len(backend.batches) >= count

    return condition


def test_it_needs_a_slot_and_room_for_an_item() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Batcher(Backend().run, key=lambda item: item[0], concurrency=0)
    with pytest.raises(ValueError, match="at least 1"):
        Batcher(Backend().run, key=lambda item: item[0], max_batch=0)


def _queued(batcher: Batcher[str, Item, int], count: int) -> Callable[[], Awaitable[bool]]:
    async def condition() -> bool:
        return batcher.queued >= count

    return condition


def _done(task: asyncio.Task[int]) -> Callable[[], Awaitable[bool]]:
    async def condition() -> bool:
        return task.done()

    return condition


async def test_drain_waits_for_the_running_batches() -> None:
    backend = Backend()
    batcher = a_batcher(backend)
    calls = await hold_both_slots(batcher, backend)
    draining = asyncio.create_task(batcher.drain(within=30))
    backend.release(0)
    await calls[0]
    assert not draining.done()

    backend.release(1)
    assert await draining is True

    assert all(c.done() for c in calls)
    assert await batcher.drain(within=0) is True  # nothing running: returns at once


async def test_a_drain_that_outlasts_its_bound_cancels_the_running_batches() -> None:
    backend = Backend()
    batcher = a_batcher(backend)
    calls = await hold_both_slots(batcher, backend)

    assert await batcher.drain(within=0.05) is False  # neither batch is ever released

    assert all(c.cancelled() for c in calls)
    assert await batcher.drain(within=0) is True
