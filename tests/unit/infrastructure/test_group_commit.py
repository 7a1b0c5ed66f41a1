"""GroupCommit's promises, with a fake connection: who is written with whom, and who hears about which failure.
(Its Postgres use is covered end to end in tests/integration/api/test_group_commit.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
from prometheus_client import REGISTRY

from payment_application.errors import DependencyUnavailable, WriteOutcomeUnknown
from payment_infrastructure.postgres.group_commit import GroupCommit
from tests.fixtures.ports import wait_until


class FakeDatabase:
    """Records each batch; `gate` holds connections back while cleared."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.refuse: Exception | None = None
        self.fail_batch: Exception | None = None
        self.stall = False  # a write that never finishes (its statement sent, no answer)
        self.writing = asyncio.Event()

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[str]:
        await self.gate.wait()
        if self.refuse is not None:
            raise self.refuse
        yield "conn"

    async def write(self, _conn: str, items: Sequence[str]) -> Sequence[str | BaseException]:
        self.writing.set()
        if self.stall:
            await asyncio.Event().wait()
        if self.fail_batch is not None:
            raise self.fail_batch
        self.batches.append(list(items))
        return [ValueError(f"bad {i}") if i.startswith("bad") else f"wrote {i}" for i in items]


def group(db: FakeDatabase, *, timeout: float = 5.0) -> GroupCommit[str, str, str]:
    return GroupCommit(
        connect=db.connect,
        write=db.write,
        writers=1,
        max_batch=8,
        queue_timeout_seconds=timeout,
        conflict_key=lambda item: item.split(":")[0] if ":" in item else None,
    )


async def _until_queued(writes: GroupCommit[str, str, str], count: int) -> None:
    async def queued() -> bool:
        return writes.queued == count

    await wait_until(queued, timeout=5, interval=0.001, what=f"{count} items queued")


async def test_items_queued_while_the_writer_waits_share_one_batch_up_to_the_limit() -> None:
    db = FakeDatabase()
    writes = group(db)
    db.gate.clear()
    tasks = [asyncio.create_task(writes.submit(f"p{n}")) for n in range(10)]
    await _until_queued(writes, 10)  # the writer is up, waiting for a connection, with nothing taken yet
    db.gate.set()
    assert await asyncio.gather(*tasks) == [f"wrote p{n}" for n in range(10)]
    assert db.batches == [[f"p{n}" for n in range(8)], ["p8", "p9"]]
    await writes.close()


async def test_the_time_each_item_waited_for_a_writer_is_observed() -> None:
    db = FakeDatabase()
    writes = group(db)
    before = REGISTRY.get_sample_value("payment_create_queue_wait_seconds_count") or 0.0
    db.gate.clear()
    tasks = [asyncio.create_task(writes.submit(f"p{n}")) for n in range(3)]
    await _until_queued(writes, 3)
    db.gate.set()
    await asyncio.gather(*tasks)
    assert REGISTRY.get_sample_value("payment_create_queue_wait_seconds_count") == before + 3
    await writes.close()


async def test_items_with_one_conflict_key_never_share_a_batch_and_keep_their_order() -> None:
    db = FakeDatabase()
    writes = group(db)
    db.gate.clear()
    tasks = [asyncio.create_task(writes.submit(i)) for i in ("k:1", "a", "k:2", "b", "k:3")]
    await _until_queued(writes, 5)
    db.gate.set()
    await asyncio.gather(*tasks)
    assert db.batches == [["k:1", "a", "b"], ["k:2"], ["k:3"]]
    await writes.close()


async def test_an_item_failure_reaches_only_its_own_caller() -> None:
    db = FakeDatabase()
    writes = group(db)
    db.gate.clear()
    good, bad = asyncio.create_task(writes.submit("good")), asyncio.create_task(writes.submit("bad"))
    await _until_queued(writes, 2)
    db.gate.set()
    assert await good == "wrote good"
    with pytest.raises(ValueError, match="bad bad"):
        await bad
    await writes.close()


async def test_a_failed_batch_fails_each_of_its_items_and_the_writer_carries_on() -> None:
    db = FakeDatabase()
    writes = group(db)
    db.fail_batch = DependencyUnavailable("database", "statement failed")
    with pytest.raises(DependencyUnavailable):
        await writes.submit("first")
    db.fail_batch = None
    assert await writes.submit("second") == "wrote second"
    assert db.batches == [["second"]]
    await writes.close()


async def test_a_refused_connection_fails_the_waiting_items_at_once_not_after_the_timeout() -> None:
    db = FakeDatabase()
    writes = group(db, timeout=30)
    db.refuse = DependencyUnavailable("database", "cannot reach the database")
    async with asyncio.timeout(2):
        with pytest.raises(DependencyUnavailable, match="cannot reach"):
            await writes.submit("p")
    assert db.batches == []
    await writes.close()


async def test_an_item_nobody_took_in_time_is_withdrawn_and_never_written() -> None:
    db = FakeDatabase()
    writes = group(db, timeout=0.05)
    db.gate.clear()
    with pytest.raises(DependencyUnavailable, match="pool exhausted"):
        await writes.submit("late")
    assert writes.queued == 0
    db.gate.set()
    assert await writes.submit("next") == "wrote next"
    assert db.batches == [["next"]]
    await writes.close()


async def test_a_caller_cancelled_before_its_item_was_taken_writes_nothing() -> None:
    db = FakeDatabase()
    writes = group(db)
    db.gate.clear()
    first = asyncio.create_task(writes.submit("first"))
    cancelled = asyncio.create_task(writes.submit("cancelled"))
    await _until_queued(writes, 2)
    cancelled.cancel()
    db.gate.set()
    assert await first == "wrote first"
    assert db.batches == [["first"]]
    await writes.close()


async def test_close_writes_what_is_queued_then_refuses_new_items() -> None:
    db = FakeDatabase()
    writes = group(db)
    db.gate.clear()
    tasks = [asyncio.create_task(writes.submit(f"p{n}")) for n in range(3)]
    await _until_queued(writes, 3)
    closing = asyncio.create_task(writes.close())
    db.gate.set()
    await closing
    assert await asyncio.gather(*tasks) == ["wrote p0", "wrote p1", "wrote p2"]
    with pytest.raises(DependencyUnavailable, match="shutting down"):
        await writes.submit("after")


async def test_a_write_cancelled_in_flight_tells_its_callers_the_outcome_is_unknown() -> None:
    db = FakeDatabase()
    db.stall = True
    writes = group(db)
    in_flight = asyncio.create_task(writes.submit("p"))
    await asyncio.wait_for(db.writing.wait(), timeout=5)
    await writes.close(timeout_seconds=0.05)  # gives up on the stalled writer and cancels it
    async with asyncio.timeout(2):
        with pytest.raises(WriteOutcomeUnknown):
            await in_flight
