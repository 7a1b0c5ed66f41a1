"""The deterministic simulation in `make test`: thousands of seeds of the whole money path under faults.

A failing seed reports itself with its trace; `python -m tests.simulation --seed N` replays it identically.
`PAYMENTS_SIMULATION_SEEDS` changes how many seeds run (default 2,000, in chunks of 200). A store that posts the
ledger entries after the state change commits must fail seeds: the oracle is shown to catch it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

import pytest
import structlog

from payment_domain.ledger import JournalEntry
from tests.fakes_consumers import FakeResultStore, FakeResultTransaction
from tests.simulation import world as world_module
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
        "503 (charged)",
        "answer for",  # an answer lost after the charge
        "caller gives up",
        "on its way until",  # a charge slow to reach the PSP, within the call budget
        "could not ask",
        "retry in place",
        "side by side",  # a consumer batch running several orders of one partition at once
        "answers in one transaction",  # the result applier's batches (apply_many) of several orders
        "CRASH api",
        "(try 2)",  # a client sending a create again after the API died under it
    ):
        assert fault in seen, fault


def _run(seed: int) -> World:
    world = World(seed)
    world.run()
    return world


class _PostsAfterCommit(FakeResultStore):
    """A broken result store: the ledger entries go into a second transaction after the state change commits (a
    crash in between leaves a final order without its entry)."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeResultTransaction]:
        later: list[tuple[Sequence[JournalEntry], datetime]] = []
        async with super().transaction() as tx:

            async def post_after_commit(entries: Sequence[JournalEntry], now: datetime) -> None:
                later.append((entries, now))

            tx.post_entries = post_after_commit  # type: ignore[method-assign]
            yield tx
        for entries, now in later:
            await checkpoint()
            async with super().transaction() as second:
                await second.post_entries(entries, now)


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
