"""Defect 5: every time the result transaction writes is on the database's clock, the one that later judges it.

Before, the applier stamped `updated_at` and computed a status check's due time from its own clock, while the
check queue and the sweeper compared them with Postgres' `now()`: an applier running an hour behind scheduled
checks an hour in the past (asked at once, burning the schedule), one running ahead made them wait an hour.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from payment_application.apply_psp_result import ApplyPspResult, ResultPolicy
from payment_domain.events import psp_result_updated
from payment_domain.psp_result import ResultSource
from payment_domain.status import PaymentOrderStatus
from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.payment_order_store import PostgresResultStore
from payment_infrastructure.postgres.rows import order_from_row
from payment_infrastructure.postgres.settings import DatabaseSettings
from tests.fakes_consumers import COMMISSION
from tests.fakes_retry import FakeRetryQueue
from tests.fixtures.database import migrated_database
from tests.integration.api.helpers import fetch
from tests.integration.postgres.order_rows import StoredOrder, insert_orders, order_row


@pytest.fixture(scope="module")
async def own_database() -> AsyncIterator[str]:
    """A database of this module's own: its fixed order ids meet no other test's rows."""
    async with migrated_database() as url:
        yield url


FIRST_CHECK_SECONDS = 5
AN_HOUR = timedelta(hours=1)


@pytest.mark.parametrize("skew", [-AN_HOUR, AN_HOUR], ids=["applier-behind", "applier-ahead"])
async def test_a_status_check_is_due_on_the_databases_clock_whatever_the_results_clock(
    own_database: str, skew: timedelta
) -> None:
    order_id = 1 if skew < timedelta(0) else 2  # the module shares one database
    await insert_orders(own_database, [StoredOrder(order_id, datetime.now(UTC) - timedelta(minutes=1))])
    order = order_from_row(await order_row(own_database, order_id))
    # The answer was stamped by a process whose clock is an hour off.
    timed_out = psp_result_updated(
        order,
        attempt=0,
        psp_status=PaymentOrderStatus.TIMEOUT_EXCEEDED_1S_TRANSIENT,
        latency_ms=1_000,
        source=ResultSource.CHARGE,
        call_number=1,
        trace_id="trace-clock",
        parent_event_id="request-1",
        now=datetime.now(UTC) + skew,
    )
    engine = create_engine(DatabaseSettings(url=own_database, pool_size=2), application_name="clock-tests")
    try:
        apply = ApplyPspResult(
            store=PostgresResultStore(engine, statement_timeout_ms=2_000, lock_timeout_ms=250),
            retries=FakeRetryQueue(),
            policy=ResultPolicy(status_check_delays_seconds=(FIRST_CHECK_SECONDS, 30)),
            randint=random.Random(5).randint,
            consumer="clock-tests",
            commission=COMMISSION,
        )
        await apply(timed_out)
    finally:
        await engine.dispose()

    (check,) = await fetch(
        own_database,
        "SELECT c.scheduled_at - o.updated_at AS delay, o.updated_at - now() AS age, o.status "
        "FROM payment_order_status_checks c JOIN payment_orders o USING (payment_order_id) "
        "WHERE payment_order_id = $1",
        order_id,
    )
    assert check["status"] == "PENDING_STATUS_CHECK_LATER"
    assert check["delay"] == timedelta(seconds=FIRST_CHECK_SECONDS)
    assert abs(check["age"]) < timedelta(seconds=30)  # stamped by the database, not an hour away
