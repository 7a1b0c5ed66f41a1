"""Partition maintenance on the real partitioned table: create ahead, move strays out of DEFAULT, prune."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_infrastructure.postgres.outbox_partitions import (
    DefaultPartitionReport,
    ensure_outbox_partitions,
    prune_outbox_partitions,
    relocate_default_partition_rows,
)
from tests.integration.outbox.support import NewRow, insert_rows, partition_names, reset_outbox, row_states

NOW = datetime(2026, 3, 1, 10, 47, 12, tzinfo=UTC)


async def _ensure(engine: AsyncEngine, now: datetime, ahead: int) -> list[str]:
    return await ensure_outbox_partitions(engine, now=now, windows_ahead=ahead)


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

    report = await relocate_default_partition_rows(engine, now=NOW)
    again = await relocate_default_partition_rows(engine, now=NOW)

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

        created = await ensure_outbox_partitions(engine, now=NOW, windows_ahead=2, lock_timeout_ms=300)

        await transaction.commit()

    assert created == ["outbox_event_20260301_1100", "outbox_event_20260301_1130"]


# Maintenance beside writers. A write here stands for a create: it uses the create path's lock_timeout, so any
# lock maintenance queues for in front of it makes it fail, as it made creates fail.
CREATE_LOCK_TIMEOUT_MS = 250


async def _write(engine: AsyncEngine, created_at: datetime) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(f"SET LOCAL lock_timeout = {CREATE_LOCK_TIMEOUT_MS}"))
        await insert_rows(conn, [NewRow(topic="t", aggregate_id="w", created_at=created_at)])


async def _writes_while(engine: AsyncEngine, task: asyncio.Task[Any], created_at: datetime) -> list[str]:
    """Write one row after another for as long as `task` runs (at least once); the failures, as text."""
    failures: list[str] = []
    while True:
        try:
            await _write(engine, created_at)
        except DBAPIError as error:
            failures.append(str(error.orig))
        if task.done():
            return failures


@asynccontextmanager
async def _dispatcher_reading(engine: AsyncEngine) -> AsyncIterator[None]:
    """An open transaction that has read the outbox, as a dispatcher's claim is for a moment: it holds a share
    lock on the table and every partition, DEFAULT included."""
    async with engine.connect() as conn, conn.begin():
        await conn.execute(text("SELECT id FROM outbox_event LIMIT 1"))
        yield


async def test_prune_gives_up_on_a_busy_outbox_rather_than_queue_in_front_of_writes(engine: AsyncEngine) -> None:
    await reset_outbox(engine)
    await _ensure(engine, NOW - timedelta(hours=30), 0)
    await _ensure(engine, NOW, 1)

    async with _dispatcher_reading(engine):
        prune = asyncio.create_task(prune_outbox_partitions(engine, now=NOW, retention=timedelta(hours=24)))
        failures = await _writes_while(engine, prune, NOW)
        (while_busy,) = await asyncio.gather(prune, return_exceptions=True)
    once_free = await prune_outbox_partitions(engine, now=NOW, retention=timedelta(hours=24))

    assert failures == []
    assert while_busy == []
    assert once_free == ["outbox_event_20260228_0430"]


async def test_creating_windows_never_makes_a_write_bound_for_default_wait(engine: AsyncEngine) -> None:
    await reset_outbox(engine)
    beyond_every_window = NOW + timedelta(days=2)  # lands in DEFAULT, as every create does while its window is missing

    async with _dispatcher_reading(engine):
        ensure = asyncio.create_task(_ensure(engine, NOW, 1))
        failures = await _writes_while(engine, ensure, beyond_every_window)
        (while_busy,) = await asyncio.gather(ensure, return_exceptions=True)
    once_free = await _ensure(engine, NOW, 1)

    assert failures == []
    assert while_busy == []
    assert once_free == ["outbox_event_20260301_1030", "outbox_event_20260301_1100"]


async def test_moving_strays_out_of_default_never_makes_a_write_wait(engine: AsyncEngine) -> None:
    await reset_outbox(engine)
    await _ensure(engine, NOW, 1)
    await insert_rows(engine, [NewRow(topic="t", aggregate_id="1", created_at=NOW - timedelta(hours=3))])

    async with _dispatcher_reading(engine):
        relocate = asyncio.create_task(relocate_default_partition_rows(engine, now=NOW))
        failures = await _writes_while(engine, relocate, NOW)
        (while_busy,) = await asyncio.gather(relocate, return_exceptions=True)
    once_free = await relocate_default_partition_rows(engine, now=NOW)

    assert failures == []
    assert isinstance(while_busy, DefaultPartitionReport) and while_busy.rows_moved == 0
    assert (once_free.rows_found, once_free.rows_moved) == (1, 1)
    assert await _rows_in(engine, "outbox_event_default") == 0


async def test_a_window_left_detached_by_a_crash_is_dropped_by_the_next_prune(engine: AsyncEngine) -> None:
    await reset_outbox(engine)
    await _ensure(engine, NOW - timedelta(hours=30), 0)
    await _ensure(engine, NOW, 0)
    async with engine.begin() as conn:  # detached, then the process died before its DROP
        await conn.execute(text("ALTER TABLE outbox_event DETACH PARTITION outbox_event_20260228_0430"))
        await conn.execute(text("ALTER TABLE outbox_event DETACH PARTITION outbox_event_20260301_1030"))

    await prune_outbox_partitions(engine, now=NOW, retention=timedelta(hours=24))

    assert await _table_exists(engine, "outbox_event_20260228_0430") is False
    assert await _table_exists(engine, "outbox_event_20260301_1030") is True  # not expired: not prune's to drop


async def test_a_detach_left_pending_is_finalised_and_its_window_dropped(engine: AsyncEngine) -> None:
    await reset_outbox(engine)
    await _ensure(engine, NOW - timedelta(hours=30), 0)
    await _ensure(engine, NOW, 0)
    await _interrupt_a_concurrent_detach(engine, "outbox_event_20260228_0430")
    assert await _detach_pending(engine) == ["outbox_event_20260228_0430"]

    dropped = await prune_outbox_partitions(engine, now=NOW, retention=timedelta(hours=24))

    assert dropped == ["outbox_event_20260228_0430"]
    assert await _detach_pending(engine) == []
    assert await _table_exists(engine, "outbox_event_20260228_0430") is False


async def _interrupt_a_concurrent_detach(engine: AsyncEngine, name: str) -> None:
    """DETACH ... CONCURRENTLY cancelled while it waits for the table's users: the partition stays "detach
    pending". Postgres refuses that command while DEFAULT exists, so DEFAULT steps out for it and comes back."""
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE outbox_event DETACH PARTITION outbox_event_default"))
    async with engine.connect() as user, user.begin():
        await user.execute(text("SELECT id FROM outbox_event LIMIT 1"))
        async with engine.connect() as detacher:
            autocommit = await detacher.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("SET statement_timeout = 300"))
            with pytest.raises(DBAPIError, match="statement timeout"):
                await autocommit.execute(text(f"ALTER TABLE outbox_event DETACH PARTITION {name} CONCURRENTLY"))
            await autocommit.execute(text("RESET statement_timeout"))
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE outbox_event ATTACH PARTITION outbox_event_default DEFAULT"))


async def _detach_pending(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'outbox_event'::regclass AND i.inhdetachpending"
            )
        )
        return [row[0] for row in result.all()]


async def _table_exists(engine: AsyncEngine, name: str) -> bool:
    async with engine.connect() as conn:
        return bool((await conn.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name})).scalar())


async def test_a_move_that_would_hold_default_too_long_while_creates_land_there_is_left_undone(
    engine: AsyncEngine,
) -> None:
    await reset_outbox(engine)
    # No window around NOW: creates are landing in DEFAULT, so DEFAULT may be held only for `hold_ms`.
    await insert_rows(engine, [NewRow(topic="t", aggregate_id=str(i), created_at=NOW) for i in range(5_000)])

    report = await relocate_default_partition_rows(engine, now=NOW, hold_ms=1)

    assert (report.rows_found, report.rows_moved, report.partitions_created) == (5_000, 0, [])
    assert await _rows_in(engine, "outbox_event_default") == 5_000
    assert await _table_exists(engine, "outbox_event_20260301_1030") is False
