"""The sliding window's rules on their own, with no asyncio: what may start, what finishing frees, what may be
committed. `PartitionWorker` and the simulation both run this class."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payment_infrastructure.runtime.keyed_window import KeyedWindow


@dataclass(frozen=True)
class Rec:
    offset: int
    key: str | None


def window(size: int, capacity: int = 100) -> KeyedWindow[Rec]:
    return KeyedWindow(size=size, capacity=capacity, key=lambda r: r.key)


def recs(*keys: str | None, first: int = 0) -> list[Rec]:
    return [Rec(first + i, key) for i, key in enumerate(keys)]


def offsets(records: list[Rec]) -> list[int]:
    return [r.offset for r in records]


def test_the_first_record_of_each_key_starts_the_others_wait_behind_their_key() -> None:
    w = window(10)
    a0, b1, a2, c3 = recs("a", "b", "a", "c")
    assert w.offer([a0, b1, a2, c3]) == 4
    assert offsets(w.take()) == [0, 1, 3]
    assert w.finish(b1) == []
    assert w.completed is None  # 1 is done, 0 before it is not
    assert offsets(w.finish(a0)) == [2]  # a's next record starts only now
    assert w.completed == 2
    w.finish(c3)
    assert w.completed == 2  # 2 still runs
    w.finish(a2)
    assert w.completed == 4


def test_at_most_size_records_are_in_hand_and_a_finish_takes_the_next_at_once() -> None:
    w = window(2)
    slow, b, c, d = recs("slow", "b", "c", "d")
    w.offer([slow, b, c, d])
    assert offsets(w.take()) == [0, 1]
    assert offsets(w.finish(b)) == [2]  # the window slides past the slow record
    assert offsets(w.finish(c)) == [3]
    w.finish(d)
    assert w.completed is None  # but nothing past the slow one may be committed
    assert w.finish(slow) == []
    assert w.completed == 4


def test_a_record_waiting_behind_its_key_takes_a_place_in_the_window() -> None:
    w = window(2)
    a0, a1, b2 = recs("a", "a", "b")
    w.offer([a0, a1, b2])
    assert offsets(w.take()) == [0]  # 1 is in hand behind 0, so b has no room yet
    assert offsets(w.finish(a0)) == [1, 2]


def test_records_without_a_key_run_one_after_another() -> None:
    w = window(5)
    n0, n1 = recs(None, None)
    w.offer([n0, n1])
    assert offsets(w.take()) == [0]
    assert offsets(w.finish(n0)) == [1]


def test_offer_takes_what_the_capacity_allows_and_counts_a_refetch_as_taken() -> None:
    w = window(1, capacity=3)
    records = recs("a", "b", "c", "d", "e", first=10)
    assert w.offer(records) == 3
    assert (w.room, w.in_flight, w.first_offset) == (0, 3, 10)
    assert w.offer(records[3:]) == 0
    started = w.take()
    w.finish(started[0])
    assert w.room == 1
    assert w.offer(records) == 4  # 10..12 again (a re-fetch) are not queued twice; 13 fits, 14 does not
    assert w.in_flight == 3


def test_it_wants_more_once_down_to_half_its_capacity() -> None:
    w = window(4, capacity=4)
    records = recs("a", "b", "c", "d")
    w.offer(records)
    w.take()
    w.finish(records[0])
    assert not w.wants_more  # 3 in flight, the low-water mark is 2
    w.finish(records[1])
    assert w.wants_more


def test_stop_drops_the_queue_and_starts_nothing_more() -> None:
    w = window(1)
    a0, a1, b2 = recs("a", "a", "b")
    w.offer([a0, a1, b2])
    w.take()
    w.stop()
    assert (w.room, w.queued, w.wants_more) == (0, 0, False)
    assert w.finish(a0) == []  # a1 waits behind a0 and is abandoned with the queue
    assert w.completed == 1
    assert w.offer(recs("c", first=3)) == 0


def test_the_window_has_room_for_at_least_one_record() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        window(0)


@st.composite
def runs(draw: st.DrawFn) -> tuple[int, int, list[Rec], st.DataObject]:
    size = draw(st.integers(1, 5))
    capacity = draw(st.integers(1, 12))
    keys = draw(st.lists(st.sampled_from(["a", "b", "c", "d", None]), min_size=1, max_size=30))
    first = draw(st.integers(0, 1_000))
    return size, capacity, recs(*keys, first=first), draw(st.data())


@settings(max_examples=400, deadline=None)
@given(runs())
def test_for_any_interleaving_key_order_the_window_size_and_the_finished_prefix_hold(
    run: tuple[int, int, list[Rec], st.DataObject],
) -> None:
    """Fetches of any size (re-fetching from the last taken offset), finishes in any order, a stop at any point:
    one key's records start in offset order, each after the one before it finished; no more than `size` are in
    hand unfinished; `completed` never passes a record that has not finished, and only moves forward."""
    size, capacity, records, data = run
    may_stop = data.draw(st.booleans())
    w = window(size, capacity)
    fetched = 0  # index of the next record to fetch
    running: list[Rec] = []
    started: list[Rec] = []
    finished: set[int] = set()
    previous_completed: int | None = None

    def started_now(ready: list[Rec]) -> None:
        assert not (ready and w.stopping), "a record started after the stop"
        for record in ready:
            assert record not in started
            elders = [r for r in records if r.key == record.key and r.offset < record.offset]
            assert all(r.offset in finished for r in elders), "a key's record started before its elder finished"
            started.append(record)
            running.append(record)

    while True:
        choices = ["finish"] if running else []
        if fetched < len(records) and not w.stopping:
            choices.append("fetch")
        if may_stop and not w.stopping:
            choices.append("stop")
        if not choices:
            break
        action = data.draw(st.sampled_from(choices))
        if action == "fetch":
            back = data.draw(st.integers(0, fetched))  # a fetch may start behind what was taken: a re-fetch
            amount = data.draw(st.integers(1, 6))
            taken = w.offer(records[fetched - back : fetched - back + amount])
            fetched = max(fetched, fetched - back + taken)
            started_now(w.take())
        elif action == "finish":
            record = running.pop(data.draw(st.integers(0, len(running) - 1)))
            finished.add(record.offset)
            started_now(w.finish(record))
        else:
            w.stop()
        assert len({r.key for r in running}) == len(running), "two records of one key ran at once"
        assert len(running) <= size
        assert w.in_flight - w.queued - len([o for o in finished if w.completed is None or o >= w.completed]) <= size
        if w.completed is not None:
            assert all(r.offset in finished for r in records if r.offset < w.completed)
            assert previous_completed is None or w.completed >= previous_completed
            previous_completed = w.completed

    if not w.stopping:  # no stop: every record ran, and the whole of it may be committed
        assert fetched == len(records)
        assert {r.offset for r in started} == {r.offset for r in records[:fetched]}
        assert w.completed == records[fetched - 1].offset + 1
