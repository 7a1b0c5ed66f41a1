"""Partition maintenance on the real partitioned table: create ahead, move strays out of DEFAULT, prune."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_infrastructure.postgres.outbox_partitions import (
    ensure_outbox_partitions,
    prune_outbox_partitions,
    relocate_default_partition_rows,
)
from tests.integration.outbox.support import NewRow, insert_rows, partition_names, reset_outbox, row_states

NOW = datetime(2026, 3, 1, 10, 47, 12, tzinfo=UTC)


async def _ensure(engine: AsyncEngine, now: datetime, ahead: int) -> list[str]:
    async with engine.begin() as conn:
        return await ensure_outbox_partitions(conn, now=now, windows_ahead=ahead)


async def _bounds(engine: AsyncEngine, name: str) -> str:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = :name"), {"name": name}
        )
        return str(result.scalar_one())


async def _rows_in(engine: AsyncEngine, partition: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {partition}"))).scalar_one())


async def _mark_all_sent(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE outbox_event SET status = 'SENT', sent_at = now()"))


async def test_ensure_creates_the_current_and_next_windows_with_the_original_names(engine: AsyncEngine) -> None:
    await reset_outbox(engine)

    created = await _ensure(engine, NOW, 2)
    created_again = await _ensure(engine, NOW, 2)

    assert created == ["outbox_event_20260301_1030", "outbox_event_20260301_1100", "outbox_event_20260301_1130"]
    assert created_again == []
    assert await _bounds(engine, "outbox_event_20260301_1030") == (
        "FOR VALUES FROM ('2026-03-01 10:30:00+00') TO ('2026-03-01 11:00:00+00')"
    )


async def test_rows_go_to_their_window_and_not_to_default(engine: AsyncEngine) -> None:
    await reset_outbox(engine)
    await _ensure(engine, NOW, 1)

    await insert_rows(engine, [NewRow(topic="t", aggregate_id="1", created_at=NOW)])

    assert await _rows_in(engine, "outbox_event_20260301_1030") == 1
    assert await _rows_in(engine, "outbox_event_default") == 0


async def test_rows_in_the_default_partition_are_moved_into_their_own_new_window(engine: AsyncEngine) -> None:
    await reset_outbox(engine)
    await _ensure(engine, NOW, 1)
    strays = [
        NewRow(topic="t", aggregate_id="1", created_at=NOW - timedelta(hours=3)),
        NewRow(topic="t", aggregate_id="2", created_at=NOW - timedelta(hours=3, minutes=1)),
        NewRow(topic="t", aggregate_id="3", created_at=NOW + timedelta(days=2)),
    ]
    await insert_rows(engine, strays)
    before = await row_states(engine)
    assert await _rows_in(engine, "outbox_event_default") == 3

    report = await relocate_default_partition_rows(engine)
    again = await relocate_default_partition_rows(engine)

    assert (report.rows_found, report.rows_moved) == (3, 3)
    assert sorted(report.partitions_created) == ["outbox_event_20260301_0730", "outbox_event_20260303_1030"]
    assert again.rows_found == 0
    assert await _rows_in(engine, "outbox_event_default") == 0
    assert await _rows_in(engine, "outbox_event_20260301_0730") == 2
    assert await row_states(engine) == before  # same ids, status, leases and attempts


async def test_ensure_moves_default_rows_of_a_window_it_creates(engine: AsyncEngine) -> None:
    await reset_outbox(engine)
    await insert_rows(engine, [NewRow(topic="t", aggregate_id="1", created_at=NOW)])  # no window yet

    created = await _ensure(engine, NOW, 0)

    assert created == ["outbox_event_20260301_1030"]
    assert await _rows_in(engine, "outbox_event_20260301_1030") == 1
    assert await _rows_in(engine, "outbox_event_default") == 0


async def test_prune_drops_expired_windows_without_unsent_rows_and_keeps_the_rest(engine: AsyncEngine) -> None:
    await reset_outbox(engine)
    old = NOW - timedelta(hours=30)
    await _ensure(engine, old, 3)  # 4 windows, 30 hours ago
    await _ensure(engine, NOW, 1)
    await insert_rows(engine, [NewRow(topic="t", aggregate_id="1", created_at=old + timedelta(minutes=1))])
    await _mark_all_sent(engine)
    unsent = NewRow(topic="t", aggregate_id="2", created_at=old + timedelta(minutes=31))
    await insert_rows(engine, [unsent])

    dropped = await prune_outbox_partitions(engine, now=NOW, retention=timedelta(hours=24))

    assert dropped == ["outbox_event_20260228_0430", "outbox_event_20260228_0530", "outbox_event_20260228_0600"]
    assert await partition_names(engine) == {
        "outbox_event_default",
        "outbox_event_20260228_0500",  # holds a NEW row
        "outbox_event_20260301_1030",
        "outbox_event_20260301_1100",
    }
    assert (await row_states(engine))[unsent.event_id].status == "NEW"


async def test_prune_keeps_windows_inside_the_retention(engine: AsyncEngine) -> None:
    await reset_outbox(engine)
    await _ensure(engine, NOW - timedelta(hours=2), 4)

    dropped = await prune_outbox_partitions(engine, now=NOW, retention=timedelta(hours=3))

    assert dropped == []
    assert len(await partition_names(engine)) == 6


async def test_a_window_is_pruned_once_its_last_row_is_sent(engine: AsyncEngine) -> None:
    await reset_outbox(engine)
    old = NOW - timedelta(hours=30)
    await _ensure(engine, old, 0)
    await insert_rows(engine, [NewRow(topic="t", aggregate_id="1", created_at=old)])

    kept = await prune_outbox_partitions(engine, now=NOW, retention=timedelta(hours=24))
    await _mark_all_sent(engine)
    dropped = await prune_outbox_partitions(engine, now=NOW, retention=timedelta(hours=24))

    assert kept == []
    assert dropped == ["outbox_event_20260228_0430"]


async def test_a_new_window_has_the_parents_indexes_and_room_for_hot_updates(engine: AsyncEngine) -> None:
    await reset_outbox(engine)
    await _ensure(engine, NOW, 0)

    async with engine.connect() as conn:
        indexes = (
            (
                await conn.execute(
                    text("SELECT indexdef FROM pg_indexes WHERE tablename = 'outbox_event_20260301_1030' ORDER BY 1")
                )
            )
            .scalars()
            .all()
        )
        options = (
            await conn.execute(text("SELECT reloptions FROM pg_class WHERE relname = 'outbox_event_20260301_1030'"))
        ).scalar_one()

    assert len(indexes) == 3
    assert any("(id, created_at)" in i and "UNIQUE" in i for i in indexes)
    assert any("(created_at, id) WHERE (status = 'NEW'" in i for i in indexes)
    assert any("(aggregate_id, id) WHERE (status = 'NEW'" in i for i in indexes)
    assert options == ["fillfactor=70"]


async def test_creating_windows_does_not_wait_for_payments_being_written(engine: AsyncEngine) -> None:
    await reset_outbox(engine)
    await _ensure(engine, NOW, 0)
    async with engine.connect() as writer:
        transaction = await writer.begin()
        await insert_rows(writer, [NewRow(topic="t", aggregate_id="1", created_at=NOW)])  # not committed yet

        async with engine.begin() as conn:
            created = await ensure_outbox_partitions(conn, now=NOW, windows_ahead=2, lock_timeout_ms=300)

        await transaction.commit()

    assert created == ["outbox_event_20260301_1100", "outbox_event_20260301_1130"]
