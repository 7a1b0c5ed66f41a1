"""A partition's records in hand: one key's records run one after another in offset order, different keys side by
side, at most `batch_size` in hand, the next one taken as soon as one finishes, and the offset moves only past the
finished prefix."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from payment_infrastructure.kafka.partition_worker import PartitionWorker
from payment_infrastructure.kafka.records import ConsumedRecord
from tests.fixtures.ports import until

TP = TopicPartition("payment_order_psp_call_requested_topic", 2)


def record(offset: int, key: str | None) -> ConsumedRecord:
    return ConsumedRecord(TP.topic, TP.partition, offset, key, b"{}", {}, 0)


class Gated:
    """A handler whose records wait for their own gate; notes when each starts and ends."""

    def __init__(self) -> None:
        self.gates: dict[int, asyncio.Event] = {}
        self.log: list[str] = []
        self.started: dict[int, asyncio.Event] = {}

    def gate(self, offset: int) -> asyncio.Event:
        return self.gates.setdefault(offset, asyncio.Event())

    def started_event(self, offset: int) -> asyncio.Event:
        return self.started.setdefault(offset, asyncio.Event())

    async def __call__(self, rec: ConsumedRecord) -> None:
        self.log.append(f"start {rec.offset}")
        self.started_event(rec.offset).set()
        await self.gate(rec.offset).wait()
        self.log.append(f"end {rec.offset}")


async def within(event: asyncio.Event, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        await event.wait()


async def test_different_keys_run_side_by_side_and_one_keys_records_in_offset_order() -> None:
    handler = Gated()
    worker = PartitionWorker(TP, handler, capacity=10, on_room=lambda _tp: None, batch_size=10)
    worker.offer([record(10, "a"), record(11, "b"), record(12, "a"), record(13, "c")])

    for offset in (10, 11, 13):  # the first record of each key starts without waiting for another key
        await within(handler.started_event(offset))
    assert "start 12" not in handler.log  # a's second record waits for a's first

    handler.gate(11).set()
    handler.gate(13).set()
    handler.gate(12).set()
    await until(lambda: {"end 11", "end 13"} <= set(handler.log))
    assert worker.completed is None  # b and c are done, but a's records are not: nothing may be committed
    assert "start 12" not in handler.log

    handler.gate(10).set()
    await until(lambda: worker.completed is not None)
    assert worker.completed == 14
    assert handler.log.index("end 10") < handler.log.index("start 12")
    await worker.stop(1.0)


async def test_the_committable_offset_follows_the_finished_prefix_of_the_batch() -> None:
    handler = Gated()
    worker = PartitionWorker(TP, handler, capacity=10, on_room=lambda _tp: None, batch_size=10)
    worker.offer([record(0, "a"), record(1, "b"), record(2, "c")])
    for offset in (0, 1, 2):
        await within(handler.started_event(offset))

    handler.gate(2).set()
    await until(lambda: "end 2" in handler.log)
    assert worker.completed is None  # offset 2 is done, but 0 and 1 before it are not
    handler.gate(0).set()
    await until(lambda: worker.completed == 1)
    assert worker.commit_candidate() == 1  # offset 0 may be committed while 1 still runs
    handler.gate(1).set()
    await until(lambda: worker.completed == 3)
    await worker.stop(1.0)


async def test_records_without_a_key_run_one_after_another() -> None:
    handler = Gated()
    worker = PartitionWorker(TP, handler, capacity=10, on_room=lambda _tp: None, batch_size=10)
    worker.offer([record(0, None), record(1, None)])

    await within(handler.started_event(0))
    await asyncio.sleep(0)
    assert "start 1" not in handler.log
    handler.gate(0).set()
    handler.gate(1).set()
    await within(handler.started_event(1))
    await worker.stop(1.0)
    assert worker.completed == 2


async def test_a_batch_is_at_most_batch_size_records() -> None:
    handler = Gated()
    worker = PartitionWorker(TP, handler, capacity=10, on_room=lambda _tp: None, batch_size=2)
    worker.offer([record(0, "a"), record(1, "b"), record(2, "c")])

    await within(handler.started_event(0))
    await within(handler.started_event(1))
    await asyncio.sleep(0)
    assert "start 2" not in handler.log  # the third record waits for room
    handler.gate(0).set()
    handler.gate(1).set()
    handler.gate(2).set()
    await within(handler.started_event(2))
    await worker.stop(1.0)
    assert worker.completed == 3


async def test_a_slow_record_holds_up_only_its_own_key_the_others_successors_start_as_room_frees() -> None:
    """NORMAL's timeouts: one call waits out 500 ms while its neighbours answer in 100; the window slides past it
    (and the committable offset waits for it)."""
    handler = Gated()
    worker = PartitionWorker(TP, handler, capacity=10, on_room=lambda _tp: None, batch_size=2)
    worker.offer([record(0, "slow"), record(1, "b"), record(2, "c"), record(3, "d"), record(4, "slow")])
    await within(handler.started_event(0))
    await within(handler.started_event(1))
    handler.gate(1).set()
    await within(handler.started_event(2))  # 1 finished: 2 starts at once, while 0 still runs
    handler.gate(2).set()
    await within(handler.started_event(3))
    handler.gate(3).set()
    await until(lambda: "end 3" in handler.log)
    assert worker.completed is None  # 0 is not done: nothing past it may be committed
    assert "start 4" not in handler.log  # the slow key's next record waits for its first
    handler.gate(0).set()
    await within(handler.started_event(4))
    assert worker.completed == 4
    handler.gate(4).set()
    await until(lambda: worker.completed == 5)
    await worker.stop(1.0)


async def test_an_aborted_batch_is_not_completed_even_where_some_of_it_finished() -> None:
    handler = Gated()
    worker = PartitionWorker(TP, handler, capacity=10, on_room=lambda _tp: None, batch_size=10)
    worker.offer([record(5, "a"), record(6, "b")])
    await within(handler.started_event(5))
    await within(handler.started_event(6))
    handler.gate(6).set()
    await until(lambda: "end 6" in handler.log)

    await worker.abort()

    assert worker.completed is None
    assert worker.commit_candidate() is None


async def test_stop_gives_the_batch_in_hand_its_grace_and_drops_the_queue() -> None:
    handler = Gated()
    worker = PartitionWorker(TP, handler, capacity=10, on_room=lambda _tp: None, batch_size=2)
    worker.offer([record(0, "a"), record(1, "b"), record(2, "c")])
    await within(handler.started_event(0))
    await within(handler.started_event(1))

    stopping = asyncio.create_task(worker.stop(5.0))
    await asyncio.sleep(0)
    handler.gate(0).set()
    handler.gate(1).set()
    await stopping

    assert worker.completed == 2
    assert "start 2" not in handler.log


async def test_a_batch_has_at_least_one_record() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        PartitionWorker(TP, Gated(), capacity=1, on_room=lambda _tp: None, batch_size=0)
