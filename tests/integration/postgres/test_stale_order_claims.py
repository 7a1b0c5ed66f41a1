"""PostgresStaleOrderClaims against the migrated schema (a database of this module's own): what counts as a sign
of progress, the claim stamp, SKIP LOCKED between sweepers and against the result applier, the partial index, and
one clock, the database's, whatever the sweeper's own. The database's clock cannot be moved: time passes for an
order by moving its data into the past (`shift_back`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.ports.stale_orders import StaleOrder
from payment_application.redrive_stale_orders import RedriveStaleOrders
from payment_domain.status import PaymentOrderStatus
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.settings import DatabaseSettings
from payment_infrastructure.postgres.stale_orders import CLAIM_STALE_SQL, NOT_IN_FLIGHT, PostgresStaleOrderClaims
from tests.fakes import FakeClock
from tests.fakes_consumers import FakeEventSink
from tests.fakes_retry import FakeRetryQueue
from tests.fixtures.database import migrated_database
from tests.integration.api.helpers import dsn, fetch
from tests.integration.postgres.order_rows import StoredOrder, insert_orders, order_row, shift_back

STALE_AFTER = timedelta(minutes=10)
HOUR = timedelta(hours=1)
MARGIN = timedelta(seconds=5)
"""Far more than a case takes between writing its data and claiming: the database's clock moves meanwhile."""


@pytest.fixture(scope="module")
async def sweep_database() -> AsyncIterator[str]:
    async with migrated_database() as url:
        yield url


@pytest.fixture(scope="module")
async def sweep_engine(sweep_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(url=sweep_database, pool_size=8), application_name="sweeper-tests")
    yield engine
    await engine.dispose()


@dataclass
class Db:
    url: str
    engine: AsyncEngine
    now: datetime  # the database's clock as the case began: its data is written around it

    @property
    def claims(self) -> PostgresStaleOrderClaims:
        return PostgresStaleOrderClaims(self.engine, statement_timeout_ms=2_000)

    async def claim(self, *, limit: int = 50) -> list[StaleOrder]:
        return await self.claims.claim_stale(stale_after=STALE_AFTER, limit=limit)

    async def clock(self) -> datetime:
        (row,) = await fetch(self.url, "SELECT now() AS now")
        now: datetime = row["now"]
        return now

    async def pass_time(self, delta: timedelta) -> None:
        await shift_back(self.url, delta)

    async def execute(self, statement: str, *args: object) -> None:
        conn = await asyncpg.connect(dsn(self.url))
        try:
            await conn.execute(statement, *args)
        finally:
            await conn.close()


@pytest.fixture
async def db(sweep_database: str, sweep_engine: AsyncEngine) -> Db:
    async with sweep_engine.begin() as conn:
        await conn.execute(
            text(
                "TRUNCATE refunds, payment_order_status_checks, payment_orders, payments, outbox_event, "
                "processed_events"
            )
        )
        now = await conn.scalar(text("SELECT now()"))
    return Db(sweep_database, sweep_engine, now)


def ids(claimed: list[StaleOrder]) -> list[int]:
    return [s.order.payment_order_id.value for s in claimed]


async def test_an_order_quiet_for_longer_than_the_threshold_is_claimed_with_its_payments_trace(db: Db) -> None:
    await insert_orders(db.url, [StoredOrder(1, db.now - HOUR, "PSP_UNAVAILABLE_TRANSIENT", retry_count=2)])

    (stale,) = await db.claim()

    assert (stale.order.payment_order_id.value, stale.order.status, stale.order.retry_count) == (
        1,
        PaymentOrderStatus.PSP_UNAVAILABLE_TRANSIENT,
        2,
    )
    assert (stale.trace_id, stale.status_check_number, stale.order.updated_at) == ("trace-1", 0, db.now - HOUR)
    assert db.now <= (await order_row(db.url, 1))["swept_at"] <= await db.clock(), "stamped with the database's now"


async def test_a_claimed_order_is_not_claimed_again_until_the_threshold_passes_its_claim(db: Db) -> None:
    await insert_orders(db.url, [StoredOrder(1, db.now - HOUR)])

    first = await db.claim()
    await db.pass_time(STALE_AFTER - MARGIN)
    within = await db.claim()
    await db.pass_time(2 * MARGIN)
    after = await db.claim()

    assert (ids(first), ids(within), ids(after)) == ([1], [], [1])


@pytest.mark.parametrize("skew", [HOUR, -HOUR], ids=["sweeper-ahead", "sweeper-behind"])
async def test_staleness_and_the_claim_are_judged_on_the_databases_clock_whatever_the_sweepers(
    db: Db, skew: timedelta
) -> None:
    await insert_orders(
        db.url, [StoredOrder(1, db.now - timedelta(minutes=5)), StoredOrder(2, db.now - timedelta(minutes=30))]
    )
    sweeper = RedriveStaleOrders(
        orders=db.claims,
        events=FakeEventSink(),
        retries=FakeRetryQueue(),
        clock=FakeClock(db.now + skew),  # a consumers host whose clock is an hour off
        stale_after=STALE_AFTER,
    )

    first = await sweeper.sweep_once(limit=10)
    swept_at = (await order_row(db.url, 2))["swept_at"]
    again = await sweeper.sweep_once(limit=10)

    assert [r.stale.order.payment_order_id.value for r in first.redriven] == [2], "quiet 30 minutes, not 5"
    assert swept_at is not None and db.now <= swept_at <= await db.clock(), "claimed at the database's now"
    assert again.found == 0, "the claim holds for a whole threshold"


# --- signs of progress ------------------------------------------------------------------------------------------


async def _quiet_order(db: Db, **fields: object) -> None:
    await insert_orders(db.url, [StoredOrder(1, db.now - HOUR, **fields)])  # type: ignore[arg-type]


async def _psp_claim(db: Db, expires_at: datetime) -> None:
    await _quiet_order(db)
    await db.execute("UPDATE payment_orders SET psp_claim_token = 'psp/0/7', psp_claim_expires_at = $1", expires_at)


async def _created_event(db: Db, status: str) -> None:
    await _quiet_order(db)
    await db.execute(
        """
        INSERT INTO outbox_event (event_id, event_type, topic, aggregate_id, trace_id, parent_event_id, payload,
                                  status, created_at)
        VALUES (gen_random_uuid(), 'payment_order_created', 'payment_order_created_topic', '1', 'trace-1',
                gen_random_uuid(), '{}', $1, $2)
        """,
        status,
        db.now - HOUR,
    )


async def _check(db: Db, *, attempt: int, status: str, scheduled_at: datetime, updated_at: datetime) -> None:
    """Order 1 waits for check 2 of attempt 1; the check row is for `attempt`."""
    await _quiet_order(db, status="PENDING_STATUS_CHECK_LATER", retry_count=1, status_check_number=2)
    await db.execute(
        """
        INSERT INTO payment_order_status_checks (payment_order_id, attempt, check_number, scheduled_at, status,
                                                 trace_id, created_at, updated_at)
        VALUES (1, $1, 2, $2, $3, 'trace-1', $4, $4)
        """,
        attempt,
        scheduled_at,
        status,
        updated_at,
    )


async def _moved_lately(db: Db) -> None:
    await insert_orders(db.url, [StoredOrder(1, db.now - timedelta(minutes=5))])


async def _psp_call_in_flight(db: Db) -> None:
    await _psp_claim(db, db.now + timedelta(seconds=20))


async def _psp_call_claimed_lately(db: Db) -> None:
    await _psp_claim(db, db.now - timedelta(minutes=2))


async def _psp_call_claimed_long_ago(db: Db) -> None:
    await _psp_claim(db, db.now - HOUR)


async def _created_event_still_in_the_outbox(db: Db) -> None:
    await _created_event(db, "NEW")


async def _created_event_sent(db: Db) -> None:
    await _created_event(db, "SENT")


async def _check_scheduled(db: Db) -> None:
    await _check(db, attempt=1, status="SCHEDULED", scheduled_at=db.now + HOUR, updated_at=db.now - HOUR)


async def _check_overdue(db: Db) -> None:
    await _check(db, attempt=1, status="SCHEDULED", scheduled_at=db.now - HOUR, updated_at=db.now - 2 * HOUR)


async def _check_published_lately(db: Db) -> None:
    await _check(
        db, attempt=1, status="PUBLISHED", scheduled_at=db.now - HOUR, updated_at=db.now - timedelta(minutes=2)
    )


async def _check_published_long_ago(db: Db) -> None:
    await _check(db, attempt=1, status="PUBLISHED", scheduled_at=db.now - HOUR, updated_at=db.now - HOUR)


async def _check_of_an_earlier_attempt_scheduled(db: Db) -> None:
    await _check(db, attempt=0, status="SCHEDULED", scheduled_at=db.now + HOUR, updated_at=db.now - HOUR)


# case -> (setup, claimed?)
SIGNS: dict[str, tuple[Callable[[Db], Awaitable[None]], bool]] = {
    "moved lately": (_moved_lately, False),
    "a psp call in flight": (_psp_call_in_flight, False),
    "a psp call claimed lately": (_psp_call_claimed_lately, False),
    "a psp call claimed long ago": (_psp_call_claimed_long_ago, True),
    "its created event still in the outbox": (_created_event_still_in_the_outbox, False),
    "its created event sent long ago": (_created_event_sent, True),
    "its status check scheduled": (_check_scheduled, False),
    "its status check overdue, the scheduler's to send": (_check_overdue, False),
    "its status check published lately": (_check_published_lately, False),
    "its status check published long ago, never answered": (_check_published_long_ago, True),
    "only a check of an earlier attempt scheduled": (_check_of_an_earlier_attempt_scheduled, True),
}


@pytest.mark.parametrize("case", list(SIGNS))
async def test_what_counts_as_a_sign_of_progress(db: Db, case: str) -> None:
    setup, swept = SIGNS[case]
    await setup(db)

    claimed = await db.claim()

    assert ids(claimed) == ([1] if swept else [])
    assert ((await order_row(db.url, 1))["swept_at"] is not None) is swept


@pytest.mark.parametrize("status", NOT_IN_FLIGHT)
async def test_settled_and_parked_orders_are_never_claimed(db: Db, status: str) -> None:
    await insert_orders(db.url, [StoredOrder(1, db.now - 24 * HOUR, status, retry_count=2, status_check_number=5)])

    assert await db.claim() == []


# --- bounded, oldest first, never shared ------------------------------------------------------------------------


async def test_a_round_is_bounded_and_takes_the_oldest_first(db: Db) -> None:
    await insert_orders(db.url, [StoredOrder(i, db.now - HOUR - timedelta(seconds=i)) for i in range(1, 8)])

    rounds = [ids(await db.claim(limit=3)) for _ in range(4)]

    assert rounds == [[7, 6, 5], [4, 3, 2], [1], []]


async def test_an_order_the_result_applier_holds_is_skipped_not_waited_for(db: Db) -> None:
    await insert_orders(db.url, [StoredOrder(1, db.now - 2 * HOUR), StoredOrder(2, db.now - HOUR)])
    applier = await asyncpg.connect(dsn(db.url))
    try:
        transaction = applier.transaction()
        await transaction.start()
        await applier.execute("SELECT 1 FROM payment_orders WHERE payment_order_id = 1 FOR UPDATE")
        while_held = await asyncio.wait_for(db.claim(), timeout=5)
        await transaction.rollback()
    finally:
        await applier.close()
    once_released = await db.claim()

    assert (ids(while_held), ids(once_released)) == ([2], [1])


async def test_concurrent_sweepers_split_the_stale_orders_without_overlap(db: Db) -> None:
    orders = [StoredOrder(i, db.now - HOUR - timedelta(milliseconds=i)) for i in range(1, 301)]
    await insert_orders(db.url, orders)

    async def sweeper() -> list[int]:
        taken: list[int] = []
        while batch := ids(await db.claim(limit=15)):
            taken += batch
        return taken

    shares = await asyncio.gather(*(sweeper() for _ in range(6)))

    everything = [order_id for share in shares for order_id in share]
    assert sorted(everything) == list(range(1, 301)), "each stale order claimed exactly once"
    assert sum(1 for share in shares if share) > 1, "the sweepers really ran side by side"


async def test_the_claim_is_served_by_the_partial_index_of_orders_in_flight(db: Db) -> None:
    # Many settled orders and a few in flight: the shape of a real table.
    await db.execute(
        """
        INSERT INTO payments (payment_id, public_payment_id, buyer_id, order_id, amount_value, amount_currency,
                              status, client_id, trace_id, created_at, updated_at)
        SELECT i, 'payment-' || i, 'B', 'O-' || i, 100, 'EUR', 'SUCCESS', 'c', 't', now(), now()
          FROM generate_series(1, 20000) i;
        INSERT INTO payment_orders (payment_order_id, public_payment_order_id, payment_id, public_payment_id,
                                    seller_id, amount_value, amount_currency, status, retry_count, created_at,
                                    updated_at)
        SELECT i, 'paymentorder-' || i, i, 'payment-' || i, 'S', 100, 'EUR',
               CASE WHEN i % 1000 = 0 THEN 'PENDING_STATUS_CHECK_LATER' ELSE 'SUCCESSFUL_FINAL' END, 0,
               now() - interval '1 day', now() - interval '1 day' + i * interval '1 second'
          FROM generate_series(1, 20000) i;
        ANALYZE payment_orders;
        """
    )
    async with db.engine.connect() as conn:
        plan = "\n".join(
            row[0]
            for row in await conn.execute(
                text("EXPLAIN " + CLAIM_STALE_SQL), {"stale_after": STALE_AFTER, "limit": 100}
            )
        )

    assert "payment_orders_in_flight_idx" in plan, plan
    assert len(await db.claim(limit=100)) == 20


async def test_the_index_predicate_names_exactly_the_statuses_the_sweeper_skips(db: Db) -> None:
    (index,) = await fetch(db.url, "SELECT indexdef FROM pg_indexes WHERE indexname = 'payment_orders_in_flight_idx'")

    assert set(NOT_IN_FLIGHT) == {
        "SUCCESSFUL_FINAL",
        "FAILED_FINAL",
        "DECLINED_FINAL",
        "UNKNOWN_FINAL",
        "NEEDS_RECONCILIATION",
    }
    assert all(f"'{status}'" in index["indexdef"] for status in NOT_IN_FLIGHT), index["indexdef"]
