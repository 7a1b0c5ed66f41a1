"""The deterministic simulation in `make test`: thousands of seeds of the whole money path under faults.

A failing seed reports itself with its trace; `python -m tests.simulation --seed N` replays it identically.
`PAYMENTS_SIMULATION_SEEDS` changes how many seeds run (default 2,000, in chunks of 200). Broken stores must fail
seeds, so the oracles are shown to catch them: ledger entries posted after the state change commits (charges and
refunds), a refund limit that forgets the refunds still in flight; and so must a broken consumer window (a commit
past a record still running, an order's records side by side) and a broken result coalescer (a payment twice in
one batch, or in two running batches).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import pytest
import structlog

from payment_domain.ledger import JournalEntry
from payment_infrastructure.runtime.coalescing import Coalescer
from payment_infrastructure.runtime.keyed_window import KeyedWindow
from tests import fakes_refunds
from tests.fakes_consumers import FakeResultStore, FakeResultTransaction
from tests.fakes_refunds import FakeRefundStore, FakeRefundTransaction
from tests.simulation import batches as batches_module
from tests.simulation import partitions as partitions_module
from tests.simulation import refunds as refunds_module
from tests.simulation import world as world_module
from tests.simulation.broker import Record
from tests.simulation.refund_invariants import check_refunds
from tests.simulation.scheduler import checkpoint
from tests.simulation.world import SimulationFailed, World

SEEDS = int(os.environ.get("PAYMENTS_SIMULATION_SEEDS", "2000"))
CHUNK = 200
TRACE_TAIL = 120


@pytest.fixture(autouse=True)
def quiet_logs() -> object:
    """The use cases log every step; thousands of runs would drown the report (and cost half the time)."""
    previous = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    yield
    structlog.configure(**previous)


@pytest.mark.parametrize("first", range(0, SEEDS, CHUNK), ids=lambda first: f"seeds-{first}")
def test_no_seed_breaks_an_invariant(first: int) -> None:
    for seed in range(first, min(first + CHUNK, SEEDS)):
        world = World(seed)
        try:
            world.run()
        except SimulationFailed as failure:
            trace = "\n".join(world.trace_lines[-TRACE_TAIL:])
            pytest.fail(
                f"seed {seed}: {failure}\n--- last {TRACE_TAIL} lines of its trace ---\n{trace}\n"
                f"replay: .venv/bin/python -m tests.simulation --seed {seed}",
                pytrace=False,
            )


def test_a_seed_replays_identically() -> None:
    first, second = World(1234), World(1234)
    first.run()
    second.run()
    assert first.trace_lines == second.trace_lines
    assert first.psp.ledger == second.psp.ledger
    assert first.psp.refunds == second.psp.refunds
    assert len(first.trace_lines) > 50  # the run did something worth comparing


def test_the_faults_happen() -> None:
    """A simulation whose faults never fire proves nothing: across a few seeds, every kind shows up."""
    seen = "\n".join(line for seed in range(40) for line in _run(seed).trace_lines)
    for fault in (
        "CRASH",
        "REBALANCE",
        "REDIS lost everything",
        "CLOCK of",
        "broker lost",
        "broker wrote",
        "twice",
        "ack timed out",
        "refused on our side",
        "with 503, nothing recorded",
        "with 429, nothing recorded",
        "then answered 503",  # charged, and the answer says it was not
        "503 (charged)",
        "answer for",  # an answer lost after the charge
        "caller gives up",
        "on its way until",  # a charge slow to reach the PSP, within the call budget
        "could not ask",
        "retry in place",
        "side by side",  # a partition's window running several orders at once
        "its partitions revoked",  # a rebalance that lets the records in hand finish
        "drained and committed",
        "drain timed out",  # ... and one whose records in hand outlast the drain, abandoned uncommitted
        "the member is gone",  # a rebalance that drops the member's windows where they stand
        "answers in one transaction",  # the result applier's batches (apply_many) of several orders
        "orders in one statement",  # the executor's coalesced claims
        "CRASH api",
        "(try 2)",  # a client sending a create again after the API died under it
        "not refundable yet",  # a refund racing its order's charge
        "exceeds what is left",  # refunds of one order racing each other for what is left
        "again while the first is in flight",
        "replayed as refund-",
        "PSP paid back refund",
        "PSP slow on refund",  # a refund the PSP makes after the caller gave up
        "refunder dead-letters",
        "refund sweeper re-drives",
        "refund re-query asks again about",
    ):
        assert fault in seen, fault


def _run(seed: int) -> World:
    world = World(seed)
    world.run()
    return world


_Tx = TypeVar("_Tx", FakeResultTransaction, FakeRefundTransaction)


@asynccontextmanager
async def _entries_after_commit(open_transaction: Callable[[], AbstractAsyncContextManager[_Tx]]) -> AsyncIterator[_Tx]:
    """A broken store's transaction: the ledger entries go into a second transaction after the state change commits
    (a crash in between leaves a final order or refund without its entry)."""
    later: list[tuple[Sequence[JournalEntry], datetime]] = []
    async with open_transaction() as tx:

        async def post_after_commit(entries: Sequence[JournalEntry], now: datetime) -> None:
            later.append((entries, now))

        tx.post_entries = post_after_commit  # type: ignore[method-assign]
        yield tx
    for entries, now in later:
        await checkpoint()
        async with open_transaction() as second:
            await second.post_entries(entries, now)


class _PostsAfterCommit(FakeResultStore):
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeResultTransaction]:
        async with _entries_after_commit(super().transaction) as tx:
            yield tx


def test_the_ledger_oracle_fails_seeds_when_entries_are_posted_outside_the_state_changes_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(world_module, "FakeResultStore", _PostsAfterCommit)
    failures = []
    for seed in range(300):
        try:
            World(seed).run()
        except SimulationFailed as failure:
            failures.append(str(failure))
    assert any("SUCCESSFUL_FINAL with charge entries []" in f for f in failures), len(failures)


class _RefundEntryAfterCommit(FakeRefundStore):
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeRefundTransaction]:
        async with _entries_after_commit(super().transaction) as tx:
            yield tx


class _LimitOnConfirmedOnly(FakeRefundTransaction):
    """A broken refund limit: it counts only the refunds the PSP confirmed, and no database CHECK backs it."""

    def _refunded_of(self, order_id: int) -> int:
        return sum(
            r.refund.amount.value
            for r in self._refunds()
            if r.refund.payment_order_id.value == order_id and r.refund.status.value == "SUCCEEDED"
        )

    def _raise_refunded(self, order_id: int, by: int) -> None:
        self._refunded[order_id] = self._refunded.get(order_id, 0) + by


def _failures(seeds: int) -> list[str]:
    failures = []
    for seed in range(seeds):
        world = World(seed)
        try:
            world.run()
        except SimulationFailed as failure:
            failures.append(str(failure))
            for task in world.scheduler.tasks:  # the run stopped mid-flight: its tasks end here
                task.coro.close()
    return failures


def test_the_refund_oracle_fails_seeds_when_a_refund_entry_is_posted_outside_its_settling_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(refunds_module, "FakeRefundStore", _RefundEntryAfterCommit)
    failures = _failures(300)
    assert any("SUCCEEDED, paid back 1 times, refund entries []" in f for f in failures), failures[:3]


def test_the_refund_oracle_fails_seeds_when_the_limit_forgets_refunds_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run stops at the first refund the domain cannot post (more than is still charged): the PSP has paid it
    back by then, and the refund oracle, asked about that world, says so."""
    monkeypatch.setattr(fakes_refunds, "FakeRefundTransaction", _LimitOnConfirmedOnly)
    found = []
    for seed in range(20):  # more than half the seeds fail this way
        world = World(seed)
        try:
            world.run()
        except SimulationFailed:
            problems, _ = check_refunds(world.refunds.tables, world.refunds.asks, world.psp)
            found += [p for p in problems if "at the PSP, charged" in p]
            for task in world.scheduler.tasks:  # the run stopped mid-flight: its tasks end here
                task.coro.close()
    assert found


class _CommitsPastRunning(KeyedWindow[Record]):
    """A broken window: its committable offset jumps to whatever finished last, over records still running."""

    def finish(self, record: Record) -> list[Record]:
        ready = super().finish(record)
        self.completed = max(self.completed or 0, record.offset + 1)
        return ready


class _NoOrderPerKey(KeyedWindow[Record]):
    """A broken window: every record is a key of its own, so one order's records run side by side."""

    def __init__(self, *, size: int, capacity: int, key: Callable[[Record], Hashable]) -> None:
        super().__init__(size=size, capacity=capacity, key=lambda record: record.offset)


@pytest.mark.parametrize(
    ("broken", "symptom"),
    [(_CommitsPastRunning, "past unhandled"), (_NoOrderPerKey, "out of turn")],
    ids=["commit-past-a-running-record", "an-orders-records-side-by-side"],
)
def test_the_delivery_oracles_fail_seeds_when_the_consumer_window_is_broken(
    monkeypatch: pytest.MonkeyPatch, broken: type[KeyedWindow[Record]], symptom: str
) -> None:
    """The money invariants alone pass such a window (idempotent handlers, the sweeper): the oracles on the window
    itself must not."""
    monkeypatch.setattr(partitions_module, "KeyedWindow", broken)
    failures = _failures(20)
    assert any(symptom in f for f in failures), failures[:3]


class _PaymentTwiceInABatch(Coalescer[Any]):
    """A broken coalescer: a batch also takes the next queued answer of a payment it already holds."""

    def take(self) -> list[Any]:
        batch = super().take()
        keys = {entry.key for entry in batch}
        for entry in self._queue:
            if entry.key in keys and not entry.future.done():
                self._queue.remove(entry)
                return [*batch, entry]
        return batch


class _KeysFreeAcrossBatches(Coalescer[Any]):
    """A broken coalescer: a payment a running batch holds may be taken by the other slot's batch."""

    def __init__(self, *, max_batch: int, slots: int, exclusive: bool, outage: Callable[[Exception], bool]) -> None:
        super().__init__(max_batch=max_batch, slots=slots, exclusive=False, outage=outage)


@pytest.mark.parametrize(
    "broken", [_PaymentTwiceInABatch, _KeysFreeAcrossBatches], ids=["a-key-twice-in-a-batch", "a-key-in-two-batches"]
)
def test_the_coalescer_oracle_fails_seeds_when_the_result_coalescer_is_broken(
    monkeypatch: pytest.MonkeyPatch, broken: type[Coalescer[Any]]
) -> None:
    """The money invariants alone pass such a coalescer (apply_many splits what it cannot apply whole, and the
    payment's row locks serialise the rest): the oracle on the batches themselves must not. (The executor's claims
    run the same class, but one order's claims never meet in its queue: see tests/simulation/batches.py.)"""
    monkeypatch.setattr(batches_module, "Coalescer", broken)
    failures = _failures(20)
    assert any("applier took a batch of" in f for f in failures), failures[:3]
