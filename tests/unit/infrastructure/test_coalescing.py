"""The coalescing rules on their own, with no asyncio: which queued items form the next batch, and what each item's
outcome is after its batch. `Batcher`, `GroupCommit` and the simulation all run this class."""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payment_application.errors import DependencyUnavailable
from payment_infrastructure.runtime.batcher import unreachable
from payment_infrastructure.runtime.coalescing import Coalescer, Withdrawn


@dataclass(eq=False)
class Answer:
    settled: bool = False

    def done(self) -> bool:
        return self.settled


@dataclass(eq=False)
class Entry:
    n: int
    key: str | None
    future: Answer = field(default_factory=Answer)

    def __repr__(self) -> str:
        return f"{self.key}{self.n}"


def coalescer(*, max_batch: int = 32, slots: int = 2, exclusive: bool = True) -> Coalescer[Entry]:
    return Coalescer(max_batch=max_batch, slots=slots, exclusive=exclusive, outage=unreachable)


def queue(c: Coalescer[Entry], *keys: str | None) -> list[Entry]:
    entries = [Entry(n, key) for n, key in enumerate(keys)]
    for entry in entries:
        c.add(entry)
    return entries


def ns(batch: Sequence[Entry]) -> list[int]:
    return [e.n for e in batch]


def run_to_end(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Drive a coroutine that never suspends: no event loop is needed."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the coroutine suspended")


def test_a_batch_takes_up_to_max_batch_items_in_arrival_order() -> None:
    c = coalescer(max_batch=3)
    queue(c, "a", "b", "c", "d", "e")
    assert ns(c.take()) == [0, 1, 2]
    assert ns(c.take()) == [3, 4]
    assert c.take() == [] and c.queued == 0


def test_an_item_whose_key_is_in_the_batch_keeps_its_place_for_a_later_one() -> None:
    c = coalescer(exclusive=False)
    queue(c, "k", "a", "k", "b", "k")
    assert ns(c.take()) == [0, 1, 3]
    assert ns(c.take()) == [2]
    assert ns(c.take()) == [4]


def test_with_exclusive_keys_no_key_is_in_two_running_batches() -> None:
    c = coalescer()
    queue(c, "a", "b")
    first = c.take()
    queue(c, "a", "c", "b")
    assert [e.key for e in c.take()] == ["c"]  # "a" and "b" are held by the first batch
    assert not c.takeable()
    c.finish(first)
    assert c.takeable()
    assert [e.key for e in c.take()] == ["a", "b"]


def test_without_exclusive_keys_a_key_in_a_running_batch_may_be_taken_again() -> None:
    c = coalescer(exclusive=False)
    queue(c, "a")
    c.take()
    c.add(Entry(1, "a"))
    assert ns(c.take()) == [1]


def test_an_item_without_a_key_conflicts_with_nothing() -> None:
    c = coalescer()
    queue(c, None, None, None)
    assert ns(c.take()) == [0, 1, 2]


def test_an_answered_item_is_skipped_and_a_withdrawn_one_leaves_the_queue_at_once() -> None:
    c = coalescer()
    gone, timed_out, stays = queue(c, "a", "b", "c")
    gone.future.settled = True
    c.withdraw(timed_out)
    assert c.queued == 2  # the answered one is counted until a batch skips it
    assert c.take() == [stays]


def test_a_slot_opens_only_while_one_is_free_and_something_can_be_taken() -> None:
    c = coalescer(slots=2)
    assert not c.can_start()
    queue(c, "a", "a")
    assert c.can_start()
    c.open_slot()
    first = c.take()
    assert not c.can_start()  # the other "a" waits for the running one
    c.finish(first)
    assert c.can_start()
    c.open_slot()
    c.take()
    c.add(Entry(9, "b"))
    assert not c.can_start()  # both slots held
    c.close_slot()
    assert c.can_start()


def test_it_needs_a_slot_and_room_for_an_item() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        coalescer(slots=0)
    with pytest.raises(ValueError, match="at least 1"):
        coalescer(max_batch=0)


class Backend:
    """A batch run that records what it was given: `refuse` fails any batch holding that item, `outcome` maps items
    to their own results."""

    def __init__(self, *, refuse: int | None = None, error: Exception | None = None, short: bool = False) -> None:
        self.calls: list[list[int]] = []
        self.refuse = refuse
        self.error = error or ValueError("refused")
        self.short = short

    async def run(self, entries: list[Entry]) -> Sequence[int | BaseException]:
        self.calls.append(ns(entries))
        if self.short:
            return []
        if any(e.n == self.refuse for e in entries):
            raise self.error
        return [LookupError(e.n) if e.key == "bad" else e.n * 10 for e in entries]


def test_each_item_gets_its_own_result_or_exception() -> None:
    c, backend = coalescer(), Backend()
    batch = queue(c, "a", "bad", "c")
    results = run_to_end(c.results(batch, backend.run))
    assert results[0] == 0 and results[2] == 20 and isinstance(results[1], LookupError)
    assert backend.calls == [[0, 1, 2]]


def test_a_batch_wide_error_that_is_not_an_outage_runs_the_items_one_by_one() -> None:
    c, backend = coalescer(), Backend(refuse=1)
    batch = queue(c, "a", "b", "c")
    results = run_to_end(c.results(batch, backend.run))
    assert results[0] == 0 and results[2] == 20 and results[1] is backend.error
    assert backend.calls == [[0, 1, 2], [0], [1], [2]]


def test_an_outage_fails_every_item_with_it_and_nothing_runs_again() -> None:
    c, backend = coalescer(), Backend(refuse=1, error=DependencyUnavailable("database", "down"))
    batch = queue(c, "a", "b")
    assert run_to_end(c.results(batch, backend.run)) == [backend.error] * 2
    assert backend.calls == [[0, 1]]
    assert c.fails_all(1, ValueError("a batch of one"))  # alone, an item's error is its own


def test_an_item_whose_caller_went_away_is_not_run_again_alone() -> None:
    c, backend = coalescer(), Backend(refuse=2)
    batch = queue(c, "a", "b", "c")
    batch[0].future.settled = True
    results = run_to_end(c.results(batch, backend.run))
    assert isinstance(results[0], Withdrawn) and results[1] == 10 and results[2] is backend.error
    assert backend.calls == [[0, 1, 2], [1], [2]]


def test_a_run_answering_the_wrong_number_of_results_fails_its_items() -> None:
    everything_fails = Coalescer[Entry](max_batch=8, slots=1, exclusive=False, outage=lambda _e: True)
    backend = Backend(short=True)
    batch = queue(everything_fails, "a", "b")
    results = run_to_end(everything_fails.results(batch, backend.run))
    assert all(isinstance(r, RuntimeError) for r in results) and backend.calls == [[0, 1]]


@st.composite
def runs(draw: st.DrawFn) -> tuple[int, int, bool, list[str | None], st.DataObject]:
    max_batch = draw(st.integers(1, 4))
    slots = draw(st.integers(1, 3))
    exclusive = draw(st.booleans())
    keys = draw(st.lists(st.sampled_from(["a", "b", "c", "d", None]), min_size=1, max_size=30))
    return max_batch, slots, exclusive, keys, draw(st.data())


@settings(max_examples=400, deadline=None)
@given(runs())
def test_for_any_interleaving_batches_keep_arrival_order_distinct_keys_and_their_slots(
    run: tuple[int, int, bool, list[str | None], st.DataObject],
) -> None:
    """Submits, batch starts, finishes in any order and callers withdrawing at any point: every batch is exactly
    the first `max_batch` unanswered queued items whose keys are free (none twice in it and, with exclusive keys,
    none in a running batch); no more than `slots` run; a withdrawn item never runs; and once all is finished,
    every item not withdrawn ran exactly once."""
    max_batch, slots, exclusive, keys, data = run
    c = coalescer(max_batch=max_batch, slots=slots, exclusive=exclusive)
    entries = [Entry(n, key) for n, key in enumerate(keys)]
    submitted = 0
    waiting: list[Entry] = []  # the model's queue: submitted, not taken, not withdrawn
    running: list[list[Entry]] = []
    ran: list[Entry] = []
    withdrawn: set[int] = set()

    def start() -> None:
        c.open_slot()
        batch = c.take()
        held = {e.key for b in running for e in b} if exclusive else set()
        expected: list[Entry] = []
        for entry in waiting:
            if len(expected) < max_batch and (entry.key is None or entry.key not in held):
                expected.append(entry)
                if entry.key is not None:
                    held.add(entry.key)
        assert batch == expected
        assert batch, "a slot opened with nothing to take"
        for entry in batch:
            waiting.remove(entry)
        running.append(batch)
        ran.extend(batch)

    while True:
        choices = []
        if submitted < len(entries):
            choices.append("submit")
        if c.can_start():
            choices.append("start")
        if running:
            choices.append("finish")
        if waiting:
            choices.append("withdraw")
        if not choices:
            break
        action = data.draw(st.sampled_from(choices))
        if action == "submit":
            c.add(entries[submitted])
            waiting.append(entries[submitted])
            submitted += 1
        elif action == "start":
            start()
        elif action == "finish":
            batch = running.pop(data.draw(st.integers(0, len(running) - 1)))
            c.finish(batch)
            c.close_slot()
        else:
            entry = waiting.pop(data.draw(st.integers(0, len(waiting) - 1)))
            entry.future.settled = True
            withdrawn.add(entry.n)
        assert len(running) == c.running <= slots
        assert c.takeable() == any(
            not exclusive or e.key is None or e.key not in {r.key for b in running for r in b} for e in waiting
        )
        for batch in running:
            batch_keys = [e.key for e in batch if e.key is not None]
            assert len(batch_keys) == len(set(batch_keys)), "a key twice in one batch"
        if exclusive:
            held_keys = [e.key for b in running for e in b if e.key is not None]
            assert len(held_keys) == len(set(held_keys)), "a key in two running batches"

    assert not waiting
    assert sorted(e.n for e in ran) == [n for n in range(len(entries)) if n not in withdrawn]
