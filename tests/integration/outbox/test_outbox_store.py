"""PostgresOutboxStore against the migrated schema: leases, per-aggregate order, stale holders."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from payment_infrastructure.postgres.outbox_store import PostgresOutboxStore
from tests.integration.outbox.support import NewRow, expire_leases, insert_rows, row_states

LEASE = 30.0


def _rows(n: int, *, topic: str = "t", start: datetime | None = None) -> list[NewRow]:
    base = start or datetime.now(UTC) - timedelta(seconds=10)
    return [
        NewRow(topic=topic, aggregate_id=str(1000 + i), created_at=base + timedelta(milliseconds=i)) for i in range(n)
    ]


async def test_claim_leases_the_oldest_rows_and_counts_the_attempt(outbox: AsyncEngine) -> None:
    rows = _rows(5)
    await insert_rows(outbox, list(reversed(rows)))  # ids in the opposite order of created_at
    store = PostgresOutboxStore(outbox)
    token = uuid.uuid4()

    claim = await store.claim(lease_token=token, limit=3, lease_seconds=LEASE)

    assert [r.event_id for r in claim.records] == [r.event_id for r in rows[:3]]
    assert claim.records[0].payload == rows[0].payload
    assert claim.records[0].trace_id == rows[0].trace_id
    states = await row_states(outbox)
    assert {states[r.event_id].lease_token for r in rows[:3]} == {str(token)}
    assert {states[r.event_id].publish_attempts for r in rows[:3]} == {1}
    assert {states[r.event_id].lease_token for r in rows[3:]} == {None}


async def test_rows_under_a_live_lease_are_not_claimed_again(outbox: AsyncEngine) -> None:
    await insert_rows(outbox, _rows(4))
    store = PostgresOutboxStore(outbox)

    first = await store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)
    second = await store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)

    assert len(first.records) == 4
    assert second.records == []


async def test_only_the_oldest_unsent_row_of_an_aggregate_is_claimable(outbox: AsyncEngine) -> None:
    base = datetime.now(UTC) - timedelta(seconds=10)
    events = [
        NewRow(topic="t", aggregate_id="42", seq=i, created_at=base + timedelta(milliseconds=i)) for i in range(3)
    ]
    other = NewRow(topic="t", aggregate_id="43", created_at=base)
    for row in [*events, other]:
        await insert_rows(outbox, [row])
    store = PostgresOutboxStore(outbox)

    first = await store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)
    while_in_flight = await store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)
    await store.mark_sent(first.lease_token, first.records)
    after_sent = await store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)

    assert sorted(r.event_id for r in first.records) == sorted([events[0].event_id, other.event_id])
    assert while_in_flight.records == []
    assert [r.event_id for r in after_sent.records] == [events[1].event_id]


async def test_an_earlier_row_of_the_aggregate_blocks_later_ones_even_when_created_later(outbox: AsyncEngine) -> None:
    now = datetime.now(UTC)
    written_first = NewRow(topic="t", aggregate_id="7", seq=0, created_at=now)
    written_second = NewRow(topic="t", aggregate_id="7", seq=1, created_at=now - timedelta(seconds=5))
    await insert_rows(outbox, [written_first])
    await insert_rows(outbox, [written_second])
    store = PostgresOutboxStore(outbox)

    claim = await store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)

    assert [r.event_id for r in claim.records] == [written_first.event_id]


async def test_an_expired_lease_is_reclaimed_by_another_dispatcher(outbox: AsyncEngine) -> None:
    [row] = _rows(1)
    await insert_rows(outbox, [row])
    store = PostgresOutboxStore(outbox)
    await store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)

    await expire_leases(outbox)
    token = uuid.uuid4()
    reclaimed = await store.claim(lease_token=token, limit=10, lease_seconds=LEASE)

    assert [r.event_id for r in reclaimed.records] == [row.event_id]
    state = (await row_states(outbox))[row.event_id]
    assert (state.lease_token, state.publish_attempts) == (str(token), 2)


async def test_a_stale_lease_holder_cannot_mark_or_release_rows_taken_over(outbox: AsyncEngine) -> None:
    [row] = _rows(1)
    await insert_rows(outbox, [row])
    store = PostgresOutboxStore(outbox)
    stale = await store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)
    await expire_leases(outbox)
    fresh = await store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)

    released_by_stale = await store.release(stale.lease_token, stale.records)
    marked_by_stale = await store.mark_sent(stale.lease_token, stale.records)
    state_while_fresh_holds = (await row_states(outbox))[row.event_id]
    marked_by_fresh = await store.mark_sent(fresh.lease_token, fresh.records)
    marked_by_stale_after = await store.mark_sent(stale.lease_token, stale.records)
    released_by_stale_after = await store.release(stale.lease_token, stale.records)

    assert (released_by_stale, marked_by_stale) == (0, 0)
    assert (state_while_fresh_holds.status, state_while_fresh_holds.lease_token) == ("NEW", str(fresh.lease_token))
    assert marked_by_fresh == 1
    assert (marked_by_stale_after, released_by_stale_after) == (0, 0)
    final = (await row_states(outbox))[row.event_id]
    assert (final.status, final.lease_token) == ("SENT", None)


async def test_release_returns_rows_to_the_pool_at_once(outbox: AsyncEngine) -> None:
    await insert_rows(outbox, _rows(3))
    store = PostgresOutboxStore(outbox)
    claim = await store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)

    released = await store.release(claim.lease_token, claim.records)
    again = await store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)

    assert released == 3
    assert len(again.records) == 3


async def test_rows_committed_out_of_id_order_are_all_claimed(outbox: AsyncEngine) -> None:
    early, late = _rows(2)
    store = PostgresOutboxStore(outbox)
    async with outbox.connect() as slow:
        transaction = await slow.begin()
        [early_id] = await insert_rows(slow, [early])  # takes the smaller id, commits last
        [late_id] = await insert_rows(outbox, [late])
        first = await store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)
        await store.mark_sent(first.lease_token, first.records)
        await transaction.commit()
    second = await store.claim(lease_token=uuid.uuid4(), limit=10, lease_seconds=LEASE)

    assert early_id < late_id
    assert [r.event_id for r in first.records] == [late.event_id]
    assert [r.event_id for r in second.records] == [early.event_id]


async def test_concurrent_claims_never_share_a_row(outbox: AsyncEngine) -> None:
    rows = _rows(600)
    await insert_rows(outbox, rows)
    store = PostgresOutboxStore(outbox)

    claims = await asyncio.gather(
        *(store.claim(lease_token=uuid.uuid4(), limit=50, lease_seconds=LEASE) for _ in range(8))
    )
    claimed = [r.event_id for claim in claims for r in claim.records]

    assert len(claimed) == len(set(claimed))
    assert len(claimed) == 400
    states = await row_states(outbox)
    for claim in claims:
        assert {states[r.event_id].lease_token for r in claim.records} <= {str(claim.lease_token)}


async def test_pending_stats_count_every_unsent_row(outbox: AsyncEngine) -> None:
    rows = _rows(5)
    await insert_rows(outbox, rows)
    store = PostgresOutboxStore(outbox)
    claim = await store.claim(lease_token=uuid.uuid4(), limit=2, lease_seconds=LEASE)
    await store.mark_sent(claim.lease_token, claim.records)

    stats = await store.pending_stats()

    assert stats.count == 3
    assert stats.oldest_created_at == rows[2].created_at
