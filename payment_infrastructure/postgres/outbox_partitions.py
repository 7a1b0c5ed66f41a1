"""30-minute range partitions of outbox_event: create ahead, move strays out of DEFAULT, drop expired windows.

Windows are aligned to :00/:30 UTC and named `outbox_event_YYYYMMDD_HHMM` after their start (the original's
names); bounds are [start, start + 30 min). Old windows go by DETACH + DROP (no DELETE, no vacuum debt), and
only when they hold no unsent row. Every structural change takes a transaction-scoped advisory lock and SHARE UPDATE
EXCLUSIVE on the table (neither conflicts with reading or writing rows), so the API and any number of dispatchers
can run maintenance at once.

Maintenance must never make a create fail. A create holds ROW EXCLUSIVE on outbox_event and on the window it
writes to (DEFAULT when its window is missing) and gives up on a lock after the pool's lock_timeout (250 ms). The
locks that conflict with it are ACCESS EXCLUSIVE on the table (DETACH) and on DEFAULT (ATTACH, moving strays), and
they are taken so that no create ever waits long for them:
* only with NOWAIT. A request that waited would stand in the lock queue, and every create after it would queue
  behind it for as long as it waited. If anyone holds or awaits a conflicting lock, maintenance lets go, tries again
  a few times, then leaves the step to its next run;
* held under a statement_timeout of `hold_ms` (kept below the create path's lock_timeout) while a create could be
  waiting for them. DEFAULT is the exception once every window around `now` exists: no create writes there then,
  and moving a backlog of strays may take longer (`MOVE_TIMEOUT_MS`), holding up only the dispatcher.

DETACH ... CONCURRENTLY would need only SHARE UPDATE EXCLUSIVE on the table, but Postgres refuses it while a DEFAULT
partition exists, and DEFAULT is what keeps a create from failing when its window is missing. So a window is
detached under a short ACCESS EXCLUSIVE lock, then dropped in a transaction of its own (a detached table locks
nothing of the parent). A window left detached by a crash in between is dropped by the next prune; one left
"detach pending" by an interrupted DETACH CONCURRENTLY (run by hand) is finalised, which needs no exclusive lock on
the table.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import structlog
from sqlalchemy import TextClause, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from payment_infrastructure.postgres.errors import LOCK_NOT_AVAILABLE, QUERY_CANCELED, sqlstate_of
from payment_infrastructure.postgres.outbox_metrics import outbox_maintenance_deferred_total

log = structlog.get_logger(__name__)

WINDOW = timedelta(minutes=30)
PARENT = "outbox_event"
DEFAULT_PARTITION = "outbox_event_default"
# Free room in every page: the claim update (lease columns only) then stays on its page as a HOT update, with no
# new entries in the three indexes; measured ~15% less Postgres CPU per dispatched row.
FILLFACTOR = 70
# Longest hold of a lock a create may be waiting for: `hold_for_creates` of the create path's default lock_timeout.
HOLD_MS = 125
# Longest hold of DEFAULT while no create can be writing there: moving strays may take a while.
MOVE_TIMEOUT_MS = 60_000
# NOWAIT tries per step before it is left to the next run, and the pause between them.
LOCK_ATTEMPTS = 10
LOCK_RETRY_PAUSE_SECONDS = 0.05
# A create is stamped by its API host's clock: a window this close to `now` may be receiving rows.
_CLOCK_SKEW = timedelta(minutes=5)
_NAME = re.compile(r"^outbox_event_(\d{8})_(\d{4})$")
# Arbitrary constant shared by every process doing outbox partition maintenance.
_ADVISORY_LOCK_KEY = 7_245_031_190_482_117_001

_PARTITIONS = text(
    """
    SELECT c.relname, i.inhdetachpending FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = CAST(:parent AS regclass)
    """
)
# Window tables that are no partition: detached by a prune that died before its DROP.
_DETACHED = text(
    r"""
    SELECT relname FROM pg_class
    WHERE relkind = 'r' AND NOT relispartition AND relname ~ '^outbox_event_\d{8}_\d{4}$'
      AND relnamespace = CAST(current_schema() AS regnamespace)
    """
)
_LOCK = text("SELECT set_config('lock_timeout', :lock_ms, true), pg_advisory_xact_lock(:key)")
_SHARE_PARENT = text(f"LOCK TABLE ONLY {PARENT} IN SHARE UPDATE EXCLUSIVE MODE")
_HOLD_TIMEOUT = text("SELECT set_config('statement_timeout', :ms, true)")
_DEFAULT_WINDOWS = text(
    f"""
    SELECT date_bin(INTERVAL '30 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS start, count(*)
    FROM {DEFAULT_PARTITION} GROUP BY 1 ORDER BY 1
    """
)

T = TypeVar("T")


class _Busy(Exception):
    """A lock that creates could queue behind is held or awaited by someone else right now."""


def hold_for_creates(create_lock_timeout_ms: int) -> int:
    """How long maintenance may hold a lock a create could be waiting for: half the create path's lock_timeout, so
    a create queued behind it keeps room for the holder's commit."""
    return max(1, create_lock_timeout_ms // 2)


def window_start(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("partition windows need a timezone-aware instant")
    utc = moment.astimezone(UTC)
    return utc.replace(minute=0 if utc.minute < 30 else 30, second=0, microsecond=0)


def partition_name(start: datetime) -> str:
    return f"{PARENT}_{window_start(start):%Y%m%d_%H%M}"


def window_of(name: str) -> datetime | None:
    """The window start a partition name stands for; None for DEFAULT or anything not ours."""
    match = _NAME.match(name)
    if match is None:
        return None
    return datetime.strptime(match.group(1) + match.group(2), "%Y%m%d%H%M").replace(tzinfo=UTC)


async def ensure_outbox_partitions(
    engine: AsyncEngine,
    *,
    now: datetime,
    windows_ahead: int,
    lock_timeout_ms: int = 2_000,
    hold_ms: int = HOLD_MS,
) -> list[str]:
    """Make sure the current window and the next `windows_ahead` exist; return the names created. Each window is
    created in a transaction of its own; one that cannot be created now without making writers wait is left for the
    next run."""
    first = window_start(now)
    wanted = [first + WINDOW * i for i in range(windows_ahead + 1)]
    async with engine.connect() as conn:
        existing = await _partition_names(conn)
    created = []
    for start in wanted:
        if partition_name(start) in existing:
            continue
        step = functools.partial(_create_window_alone, engine, start, now, lock_timeout_ms, hold_ms)
        if await _retrying(step, "create", partition_name(start)) is not None:
            created.append(partition_name(start))
    if created:
        log.info("outbox_partitions_created", partitions=created)
    return created


@dataclass(frozen=True, slots=True)
class DefaultPartitionReport:
    rows_found: int
    rows_moved: int = 0
    partitions_created: list[str] = field(default_factory=list)


async def relocate_default_partition_rows(
    engine: AsyncEngine, *, now: datetime, lock_timeout_ms: int = 2_000, hold_ms: int = HOLD_MS
) -> DefaultPartitionReport:
    """Move rows that landed in DEFAULT (their window was missing) into their own, newly created, window."""
    async with engine.connect() as conn:
        windows = [(row[0], int(row[1])) for row in (await conn.execute(_DEFAULT_WINDOWS)).all()]
    found = sum(count for _, count in windows)
    if not found:
        return DefaultPartitionReport(rows_found=0)
    moved = 0
    created: list[str] = []
    for start, _count in windows:
        step = functools.partial(_create_window_alone, engine, start, now, lock_timeout_ms, hold_ms)
        rows = await _retrying(step, "move", partition_name(start))
        if rows is not None:
            moved += rows
            created.append(partition_name(start))
    log.warning("outbox_default_partition_rows_moved", rows_found=found, rows_moved=moved, partitions=created)
    return DefaultPartitionReport(rows_found=found, rows_moved=moved, partitions_created=created)


async def prune_outbox_partitions(
    engine: AsyncEngine,
    *,
    now: datetime,
    retention: timedelta,
    lock_timeout_ms: int = 2_000,
    hold_ms: int = HOLD_MS,
) -> list[str]:
    """DETACH + DROP windows that ended before `now - retention` and hold no unsent row; return the dropped.

    Also drops expired windows a crash left detached, and finalises detaches left pending. A window whose lock is
    busy is left for the next run."""
    cutoff = now - retention
    async with engine.connect() as conn:
        rows = (await conn.execute(_PARTITIONS, {"parent": PARENT})).all()
        partitions: dict[str, bool] = {row[0]: bool(row[1]) for row in rows}  # name: detach pending
        detached = set((await conn.execute(_DETACHED)).scalars().all())
    dropped: list[str] = []
    for name in sorted(set(partitions) | detached):
        start = window_of(name)
        if start is None or start + WINDOW > cutoff:
            continue
        if await _has_unsent_rows(engine, name):
            log.warning("outbox_partition_kept_with_unsent_rows", partition=name)
            continue
        if name in partitions:
            if partitions[name]:
                now_detached = await _finalize_detach(engine, name, lock_timeout_ms)
            else:
                detach = functools.partial(_detach, engine, name, lock_timeout_ms, hold_ms)
                now_detached = bool(await _retrying(detach, "prune", name))
            if not now_detached:
                continue
        if await _drop_detached(engine, name, lock_timeout_ms):
            dropped.append(name)
    if dropped:
        log.info("outbox_partitions_dropped", partitions=dropped)
    return dropped


async def _has_unsent_rows(engine: AsyncEngine, name: str) -> bool:
    async with engine.connect() as conn:
        return bool((await conn.execute(_unsent(name))).scalar())


def _unsent(name: str) -> TextClause:
    return text(f"SELECT EXISTS (SELECT 1 FROM {name} WHERE status = 'NEW')")


async def _detach(engine: AsyncEngine, name: str, lock_timeout_ms: int, hold_ms: int) -> bool:
    """Detach one window under a NOWAIT, `hold_ms`-bounded ACCESS EXCLUSIVE lock; False if it is no longer ours to
    detach or kept an unsent row. Raises _Busy when the locks are not free."""
    async with engine.begin() as conn:
        await _lock(conn, lock_timeout_ms)
        if name not in await _partition_names(conn):
            return False  # another process pruned it meanwhile
        # DETACH locks the table, DEFAULT (its bounds widen) and the window, in that order: take all three at once.
        await _exclusively(conn, f"ONLY {PARENT}, ONLY {DEFAULT_PARTITION}, ONLY {name}", hold_ms)
        if (await conn.execute(_unsent(name))).scalar():  # a row may have come in since the check without the lock
            log.warning("outbox_partition_kept_with_unsent_rows", partition=name)
            return False
        await conn.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {name}"))
    return True


async def _finalize_detach(engine: AsyncEngine, name: str, lock_timeout_ms: int) -> bool:
    """Complete a DETACH CONCURRENTLY that was interrupted. FINALIZE locks the table only in SHARE UPDATE EXCLUSIVE
    mode (and the window, which no query can reach any more, exclusively), so it never holds up a create."""
    try:
        async with engine.begin() as conn:
            await _lock(conn, lock_timeout_ms)
            await conn.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {name} FINALIZE"))
    except DBAPIError as error:
        log.warning("outbox_partition_finalize_failed", partition=name, error=str(error.orig))
        return False
    log.warning("outbox_partition_pending_detach_finalized", partition=name)
    return True


async def _drop_detached(engine: AsyncEngine, name: str, lock_timeout_ms: int) -> bool:
    """DROP a detached window: it locks only that table, which no query reaches any more. A failure leaves it for the
    next prune."""
    try:
        async with engine.begin() as conn:
            await _advisory_lock(conn, lock_timeout_ms)
            still_detached = name in set((await conn.execute(_DETACHED)).scalars().all())
            if still_detached:
                await conn.execute(text(f"DROP TABLE {name}"))
    except DBAPIError as error:
        log.warning("outbox_partition_drop_failed", partition=name, error=str(error.orig))
        return False
    return still_detached


async def _partition_names(conn: AsyncConnection) -> set[str]:
    return {row[0] for row in (await conn.execute(_PARTITIONS, {"parent": PARENT})).all()}


async def _advisory_lock(conn: AsyncConnection, lock_timeout_ms: int) -> None:
    """One maintenance step at a time across processes; `lock_timeout_ms` bounds every wait of the transaction."""
    await conn.execute(_LOCK, {"key": _ADVISORY_LOCK_KEY, "lock_ms": str(lock_timeout_ms)})


async def _lock(conn: AsyncConnection, lock_timeout_ms: int) -> None:
    """The maintenance lock, and no ATTACH or DETACH by anyone else meanwhile (the set of windows holds still)."""
    await _advisory_lock(conn, lock_timeout_ms)
    await conn.execute(_SHARE_PARENT)


async def _exclusively(conn: AsyncConnection, tables: str, hold_ms: int) -> None:
    """ACCESS EXCLUSIVE on `tables` if that needs no wait, else _Busy; from then on (the locks last until commit)
    every statement of the transaction runs under a `hold_ms` statement_timeout."""
    try:
        async with conn.begin_nested():
            await conn.execute(text(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE NOWAIT"))
    except DBAPIError as error:
        if sqlstate_of(error) == LOCK_NOT_AVAILABLE:
            raise _Busy(tables) from error
        raise
    await conn.execute(_HOLD_TIMEOUT, {"ms": str(hold_ms)})


def _hold_budget(existing: set[str], now: datetime, hold_ms: int) -> int:
    """How long DEFAULT may be held: `hold_ms` while a create could be writing to it (a window around `now` is
    missing), longer otherwise. Called under the maintenance lock, so `existing` cannot change meanwhile."""
    near = {partition_name(now + offset) for offset in (-_CLOCK_SKEW, timedelta(0), _CLOCK_SKEW)}
    return MOVE_TIMEOUT_MS if near <= existing else hold_ms


async def _retrying(step: Callable[[], Awaitable[T]], kind: str, partition: str) -> T | None:
    """Run `step` until it finds its locks free, LOCK_ATTEMPTS times at most; None if it never did, or if it took
    longer than it may hold them (the step's transaction is rolled back: nothing changed)."""
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            return await step()
        except _Busy:
            if attempt < LOCK_ATTEMPTS:
                await asyncio.sleep(LOCK_RETRY_PAUSE_SECONDS)
        except DBAPIError as error:
            if sqlstate_of(error) != QUERY_CANCELED:
                raise
            outbox_maintenance_deferred_total.labels(step=kind, reason="slow").inc()
            log.warning("outbox_partition_step_too_slow", step=kind, partition=partition)
            return None
    outbox_maintenance_deferred_total.labels(step=kind, reason="busy").inc()
    log.info("outbox_partition_step_deferred_busy", step=kind, partition=partition, attempts=LOCK_ATTEMPTS)
    return None


async def _create_window_alone(
    engine: AsyncEngine, start: datetime, now: datetime, lock_timeout_ms: int, hold_ms: int
) -> int | None:
    """One window, in its own transaction (the locks it takes end with it); None if another process created it."""
    async with engine.begin() as conn:
        await _lock(conn, lock_timeout_ms)
        existing = await _partition_names(conn)
        if partition_name(start) in existing:
            return None
        return await _create_window(conn, start, _hold_budget(existing, now, hold_ms))


async def _create_window(conn: AsyncConnection, start: datetime, hold_ms: int) -> int:
    """Create one window and ATTACH it, its rows sitting in DEFAULT moved in first; return the rows moved.

    ATTACH locks the table only in SHARE UPDATE EXCLUSIVE mode, so creates keep writing to every other window
    meanwhile; it needs DEFAULT exclusively (it checks DEFAULT holds no row of the window), taken NOWAIT."""
    start = window_start(start)
    end = start + WINDOW
    name = partition_name(start)
    await conn.execute(
        text(
            f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
            f"WITH (fillfactor = {FILLFACTOR})"
        )
    )
    await _exclusively(conn, f"ONLY {DEFAULT_PARTITION}", hold_ms)
    result = await conn.execute(
        text(
            f"""
            WITH moved AS (
                DELETE FROM {DEFAULT_PARTITION} WHERE created_at >= :lo AND created_at < :hi RETURNING *
            )
            INSERT INTO {name} SELECT * FROM moved
            """
        ),
        {"lo": start, "hi": end},
    )
    values = f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    await conn.execute(text(f"ALTER TABLE {PARENT} ATTACH PARTITION {name} {values}"))
    return int(result.rowcount)
