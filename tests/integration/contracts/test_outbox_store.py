"""OutboxStore: FakeOutboxStore and PostgresOutboxStore (the session database's partitioned outbox, emptied for
each case) pass the same cases. Leases run on the store's clock: the fake's FakeClock, Postgres now() for the real
store, whose short leases a case outlives by polling the database until none is live any more."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.ports.outbox import OutboxRecord, OutboxStore
from payment_domain.events import EventType
from payment_infrastructure.postgres.outbox_partitions import ensure_outbox_partitions
from payment_infrastructure.postgres.outbox_store import PostgresOutboxStore
from tests.fakes import FakeClock
from tests.fakes_outbox import FakeOutboxStore
from tests.fixtures.ports import wait_until
from tests.integration.outbox.support import NewRow, insert_rows, reset_outbox, row_states

LEASE = 30.0
SHORT_LEASE = 0.3
"""Long enough for a claim's transaction to finish inside it, short enough to wait out."""
TOPIC = "contract_outbox_topic"
_LIVE_LEASES = text("SELECT count(*) FROM outbox_event WHERE lease_token IS NOT NULL AND lease_expires_at >= now()")


@dataclass(frozen=True, slots=True)
class Written:
    """A row as the API's transaction wrote it: what a claim must hand back."""

    event_id: str
    event_type: str
    topic: str
    aggregate_id: str
    trace_id: str
    parent_event_id: str
    payload: bytes
    created_at: datetime

    def matches(self, record: OutboxRecord) -> bool:
        return (
            record.event_id,
            record.event_type,
            record.topic,
            record.aggregate_id,
            record.trace_id,
            record.parent_event_id,
            record.payload,
            record.created_at,
        ) == (
            self.event_id,
            self.event_type,
            self.topic,
            self.aggregate_id,
            self.trace_id,
            self.parent_event_id,
            self.payload,
            self.created_at,
        )


class OutboxWorld(Protocol):
    store: OutboxStore

    def now(self) -> datetime:
        """A moment to write rows around (their created_at)."""
        ...

    async def add(self, aggregate_id: str, *, created_at: datetime | None = None) -> Written:
        """Commit one row (ids grow in the order rows are added)."""
        ...

    async def state(self, row: Written) -> tuple[str, uuid.UUID | None]:
        """(status, lease token) of the row."""
        ...

    async def outlive_leases(self) -> None:
        """Return once every lease handed out so far has expired on the store's clock."""
        ...


class FakeWorld:
    def __init__(self) -> None:
        self.clock = FakeClock(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))
        self.fake = FakeOutboxStore(self.clock)
        self.store: OutboxStore = self.fake
        self._ids: dict[str, int] = {}

    def now(self) -> datetime:
        return self.clock.now()

    async def add(self, aggregate_id: str, *, created_at: datetime | None = None) -> Written:
        record = self.fake.add(aggregate_id, topic=TOPIC, created_at=created_at)
        self._ids[record.event_id] = record.id
        return Written(
            event_id=record.event_id,
            event_type=record.event_type,
            topic=record.topic,
            aggregate_id=record.aggregate_id,
            trace_id=record.trace_id,
            parent_event_id=record.parent_event_id,
            payload=record.payload,
            created_at=record.created_at,
        )

    async def state(self, row: Written) -> tuple[str, uuid.UUID | None]:
        row_id = self._ids[row.event_id]
        return self.fake.status(row_id), self.fake.lease_of(row_id)

    async def outlive_leases(self) -> None:
        ends = [r.lease_expires_at for r in self.fake.rows.values() if r.lease_expires_at is not None]
        if ends:
            self.clock.set(max(max(ends) + timedelta(microseconds=1), self.clock.now()))


class PostgresWorld:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.store: OutboxStore = PostgresOutboxStore(engine)
        self._base = datetime.now(UTC) - timedelta(seconds=10)

    def now(self) -> datetime:
        return self._base

    async def add(self, aggregate_id: str, *, created_at: datetime | None = None) -> Written:
        row = NewRow(topic=TOPIC, aggregate_id=aggregate_id, created_at=created_at or self._base)
        await insert_rows(self.engine, [row])
        return Written(
            event_id=row.event_id,
            event_type=EventType.PAYMENT_ORDER_CREATED.value,
            topic=row.topic,
            aggregate_id=row.aggregate_id,
            trace_id=row.trace_id,
            parent_event_id=row.event_id,
            payload=row.payload,
            created_at=row.created_at,
        )

    async def state(self, row: Written) -> tuple[str, uuid.UUID | None]:
        found = (await row_states(self.engine))[row.event_id]
        return found.status, uuid.UUID(found.lease_token) if found.lease_token else None

    async def outlive_leases(self) -> None:
        async def none_live() -> bool:
            async with self.engine.connect() as conn:
                live = await conn.scalar(_LIVE_LEASES)
            return bool(live == 0)

        await wait_until(none_live, timeout=LEASE, interval=0.02, what="every outbox lease to expire")


@pytest.fixture(params=["fake", "postgres"])
def backend(request: pytest.FixtureRequest) -> AsyncEngine | None:
    """None for the fake; the session's migrated database (created only for the real store's cases) otherwise."""
    if request.param == "fake":
        return None
    engine: AsyncEngine = request.getfixturevalue("engine")
    return engine


@pytest.fixture
async def world(backend: AsyncEngine | None) -> OutboxWorld:
    if backend is None:
        return FakeWorld()
    await reset_outbox(backend)
    await ensure_outbox_partitions(backend, now=datetime.now(UTC), windows_ahead=1)
    return PostgresWorld(backend)


async def _rows(world: OutboxWorld, aggregates: list[str], *, step_ms: int = 1) -> list[Written]:
    """One row per aggregate, created `step_ms` apart in list order and written in that order."""
    base = world.now()
    return [
        await world.add(aggregate, created_at=base + timedelta(milliseconds=i * step_ms))
        for i, aggregate in enumerate(aggregates)
    ]


async def test_a_claim_leases_the_oldest_rows_first_and_hands_them_back_as_written(world: OutboxWorld) -> None:
    base = world.now()
    rows = [await world.add(str(1000 + i), created_at=base + timedelta(milliseconds=i)) for i in reversed(range(5))]
    rows.reverse()  # created_at order, the opposite of the order they were written (and of their ids)
    token = uuid.uuid4()

    claim = await world.store.claim(lease_token=token, limit=3, lease_seconds=LEASE)

    assert claim.lease_token == token
    assert [r.event_id for r in claim.records] == [r.event_id for r in rows[:3]]
    assert all(written.matches(record) for written, record in zip(rows, claim.records, strict=False))
    assert [r.publish_attempts for r in claim.records] == [1, 1, 1]
    assert [await world.state(r) for r in rows] == [("NEW", token)] * 3 + [("NEW", None)] * 2


async def test_rows_under_a_live_lease_are_not_claimed_again(world: OutboxWorld) -> None:
    await _rows(world, ["1", "2", "3", "4"])

    first = await world.store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)
    second = await world.store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)

    assert len(first.records) == 4
    assert second.records == []


async def test_an_aggregate_has_one_row_in_flight_and_its_rows_go_out_in_the_order_written(
    world: OutboxWorld,
) -> None:
    first_of_42, other, second_of_42, third_of_42 = await _rows(world, ["42", "43", "42", "42"])

    first = await world.store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)
    while_in_flight = await world.store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)
    assert await world.store.mark_sent(first.lease_token, first.records) == 2
    second = await world.store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)
    assert await world.store.release(second.lease_token, second.records) == 1  # not published: it goes first again
    third = await world.store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)

    assert [r.event_id for r in first.records] == [first_of_42.event_id, other.event_id]
    assert while_in_flight.records == []
    assert [r.event_id for r in second.records] == [second_of_42.event_id]
    assert [(r.event_id, r.publish_attempts) for r in third.records] == [(second_of_42.event_id, 2)]
    assert await world.state(third_of_42) == ("NEW", None)


async def test_the_row_written_first_goes_first_even_when_its_created_at_is_later(world: OutboxWorld) -> None:
    base = world.now()
    written_first = await world.add("7", created_at=base)
    await world.add("7", created_at=base - timedelta(seconds=5))

    claim = await world.store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)

    assert [r.event_id for r in claim.records] == [written_first.event_id]


async def test_an_expired_lease_is_claimed_again_and_counts_another_attempt(world: OutboxWorld) -> None:
    [row] = await _rows(world, ["1"])
    await world.store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=SHORT_LEASE)  # ...and its holder dies

    await world.outlive_leases()
    token = uuid.uuid4()
    again = await world.store.claim(lease_token=token, limit=10, lease_seconds=LEASE)

    assert [(r.event_id, r.publish_attempts) for r in again.records] == [(row.event_id, 2)]
    assert await world.state(row) == ("NEW", token)


async def test_a_holder_whose_rows_were_taken_over_can_neither_mark_nor_release_them(world: OutboxWorld) -> None:
    [row] = await _rows(world, ["1"])
    stale = await world.store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=SHORT_LEASE)
    await world.outlive_leases()
    fresh = await world.store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)

    assert await world.store.release(stale.lease_token, stale.records) == 0
    assert await world.store.mark_sent(stale.lease_token, stale.records) == 0
    assert await world.state(row) == ("NEW", fresh.lease_token)
    assert await world.store.mark_sent(fresh.lease_token, fresh.records) == 1
    assert await world.store.mark_sent(stale.lease_token, stale.records) == 0
    assert await world.store.release(stale.lease_token, stale.records) == 0
    assert await world.state(row) == ("SENT", None)


async def test_a_holder_whose_lease_ran_out_but_was_not_taken_over_still_settles(world: OutboxWorld) -> None:
    [row] = await _rows(world, ["1"])
    slow = await world.store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=SHORT_LEASE)

    await world.outlive_leases()

    assert await world.store.mark_sent(slow.lease_token, slow.records) == 1
    assert await world.state(row) == ("SENT", None)


async def test_mark_sent_settles_only_the_rows_given_and_only_once(world: OutboxWorld) -> None:
    rows = await _rows(world, ["1", "2", "3"])
    claim = await world.store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)

    assert await world.store.mark_sent(claim.lease_token, claim.records[:2]) == 2
    assert await world.store.mark_sent(claim.lease_token, claim.records[:2]) == 0
    assert await world.store.release(claim.lease_token, claim.records[:2]) == 0

    assert [await world.state(r) for r in rows] == [("SENT", None), ("SENT", None), ("NEW", claim.lease_token)]
    assert (await world.store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)).records == []


async def test_released_rows_are_claimable_at_once_and_keep_their_attempt_count(world: OutboxWorld) -> None:
    rows = await _rows(world, ["1", "2", "3"])
    claim = await world.store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)

    assert await world.store.release(claim.lease_token, claim.records) == 3
    assert [await world.state(r) for r in rows] == [("NEW", None)] * 3
    again = await world.store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)

    assert [(r.event_id, r.publish_attempts) for r in again.records] == [(r.event_id, 2) for r in rows]


async def test_sent_rows_are_never_claimed_again(world: OutboxWorld) -> None:
    await _rows(world, ["1", "2"])
    claim = await world.store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=SHORT_LEASE)
    await world.store.mark_sent(claim.lease_token, claim.records)

    await world.outlive_leases()

    assert (await world.store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)).records == []


async def test_settling_no_rows_settles_nothing(world: OutboxWorld) -> None:
    await _rows(world, ["1"])
    claim = await world.store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)

    assert await world.store.mark_sent(claim.lease_token, []) == 0
    assert await world.store.release(claim.lease_token, []) == 0
    assert len(claim.records) == 1


async def test_concurrent_claims_never_share_a_row(world: OutboxWorld) -> None:
    await _rows(world, [str(2000 + i) for i in range(60)])

    claims = await asyncio.gather(
        *(world.store.claim(lease_token=uuid.uuid4(), limit=8, lease_seconds=LEASE) for _ in range(6))
    )

    claimed = [r.event_id for claim in claims for r in claim.records]
    assert len(claimed) == len(set(claimed)) == 48
